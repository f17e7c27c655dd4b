"""verify_files: for each row, is its file where the app reads it, with its size and checksum?

Large selections are checked by joining the rows, read in the byte order of their names, with
one streamed listing of the storage (one request per 1000 objects); small ones (a sample, a
few rows) with one HEAD per row. The MD5 comes from the ETag where it is one, else from the md5
metadata migrate_storage binds to the object's ETag, else from reading the object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import connection, transaction

from .conf import Conf, get_conf
from .endpoints import Endpoint, ObjectInfo, alias_of, endpoint_for, endpoint_for_storage
from .errors import ConfigurationError
from .hashing import digest_stream
from .joins import BYTE_ORDER, joined_rows
from .names import unsafe_reason
from .orphans import find_orphans
from .report import (
    CHECKSUM_MISMATCH,
    DEFAULT_FAIL_ON,
    ERROR,
    METADATA_MISMATCH,
    MISSING,
    OK,
    SIZE_MISMATCH,
    UNSAFE_NAME,
    UNVERIFIABLE,
    VERIFY_PROBLEMS,
    Problem,
    VerificationReport,
    now,
)
from .rows import UNKNOWN, Planned, Row, _Unknown, log, row_columns, rows_by_pk, with_files
from .targets import Target, resolve_targets

LEVELS = ("exists", "size", "checksum", "deep")
# Below this many rows in a selection, one HEAD per row is cheaper than listing the storage.
JOIN_MIN_ROWS = 1000
COMMIT_ROWS = 500


@dataclass
class CheckResult:
    """One row's outcome (ok or a problem kind), what it cost, and the columns to fix."""

    row: Row
    outcome: str
    problem: Problem | None = None
    downloaded: bool = False
    unchecked: bool = False
    updates: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0


ProgressCallback = Callable[[CheckResult], None]


class Verification:
    """One run. Use verify_files(); this class holds the run's state."""

    def __init__(
        self,
        targets: list[Target],
        conf: Conf,
        *,
        storage: str | None,
        level: str,
        strict: bool,
        orphans: bool,
        fix_metadata: bool,
        sample: int | None,
        fail_on: tuple[str, ...],
        on_row: ProgressCallback | None,
        on_start: Callable[[int], None] | None,
    ) -> None:
        self.targets, self.conf = targets, conf
        self.storage_alias, self.level, self.strict = storage, level, strict
        self.want_orphans, self.fix_metadata, self.sample = orphans, fix_metadata, sample
        self.on_row, self.on_start = on_row, on_start
        self.report = VerificationReport(
            storage=storage or "each field's storage", level=level, sample=sample, fail_on=fail_on
        )
        self._endpoints: dict[int, Endpoint] = {}
        self._pending: list[CheckResult] = []

    # --- where each field's files are -----------------------------------------------------

    def endpoint(self, target: Target) -> Endpoint:
        """The storage to look in: --storage, else the field's own (what the app reads now)."""
        if self.storage_alias:
            storage: Any = None
            key = 0
        else:
            storage = target.field.storage
            key = id(storage)
        if key not in self._endpoints:
            if self.storage_alias:
                endpoint = endpoint_for(self.storage_alias, self.conf)
            else:
                alias = alias_of(storage)
                if alias:
                    endpoint = endpoint_for(alias, self.conf)
                else:
                    endpoint = endpoint_for_storage(type(storage).__name__, storage, self.conf)
            endpoint.preflight(as_source=True)
            self._endpoints[key] = endpoint
        return self._endpoints[key]

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> VerificationReport:
        plans = [(target, self.endpoint(target)) for target in self.targets]
        if self.on_start is not None:
            self.on_start(sum(self._count(t) for t in self.targets))
        pool = ThreadPoolExecutor(self.conf.WORKERS, thread_name_prefix="verify-files")
        futures: set[Future[CheckResult]] = set()
        try:
            for target, endpoint in plans:
                for row, planned in self._planned(target, endpoint):
                    reason = self._unsafe(row, endpoint)
                    if reason:
                        problem = row.problem(UNSAFE_NAME, reason)
                        self._finish(CheckResult(row, UNSAFE_NAME, problem))
                        continue
                    if self._answered(row, planned):
                        self._finish(self._check(endpoint, row, planned))  # no I/O to wait on
                        continue
                    futures.add(pool.submit(self._check, endpoint, row, planned))
                    if len(futures) >= self.conf.WORKERS * 4:
                        done, futures = wait(futures, return_when=FIRST_COMPLETED)
                        for future in done:
                            self._finish(future.result())
            for future in futures:
                self._finish(future.result())
            self._commit()
            if self.want_orphans:
                self.report.problems.extend(find_orphans(plans))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.report.finished_at = now()
        return self.report

    def _count(self, target: Target) -> int:
        count = with_files(target).count()
        return min(count, self.sample) if self.sample is not None else count

    def _planned(self, target: Target, endpoint: Endpoint) -> Iterator[tuple[Row, Planned]]:
        """Each row, with what the storage holds under its name when one listing told (else
        UNKNOWN: the worker asks the storage for that row alone)."""
        log.debug("checking %s on %s (%s)", target, endpoint, endpoint.kind)
        if self.sample is not None:
            for row in self._sampled(target):
                yield row, UNKNOWN
            return
        collation = BYTE_ORDER.get(connection.vendor)
        if collation is None or self._count(target) < JOIN_MIN_ROWS:
            log.debug("%s: one request per row (small selection)", target)
            for batch in rows_by_pk(target, self.conf.BATCH_SIZE):
                for row in batch:
                    yield row, UNKNOWN
            return
        log.debug("%s: rows joined with one listing (collation %s)", target, collation)
        yield from joined_rows(target, endpoint, collation, self.conf.BATCH_SIZE)

    def _sampled(self, target: Target) -> list[Row]:
        sampled = with_files(target).order_by("?").values_list(*row_columns(target))
        return [Row.from_values(target, values) for values in sampled[: self.sample]]

    def _answered(self, row: Row, planned: Planned) -> bool:
        """The listing already says all this row's check needs (it is missing, or its ETag is
        its MD5), so the check is a comparison, done here rather than on a worker."""
        if isinstance(planned, _Unknown) or self.level == "deep":
            return False
        return planned is None or self.level in ("exists", "size") or bool(planned.etag_md5)

    def _unsafe(self, row: Row, endpoint: Endpoint) -> str | None:
        reason = unsafe_reason(row.name)
        if reason:
            return reason
        try:
            reason = unsafe_reason(row.name, endpoint.key(row.name))
            endpoint.local_path(row.name)
        except (SuspiciousOperation, ValueError) as exc:
            return f"name leaves the storage's root ({exc.__class__.__name__})"
        return reason

    # --- one row, in a worker -------------------------------------------------------------

    def _check(self, endpoint: Endpoint, row: Row, planned: Planned) -> CheckResult:
        try:
            info = endpoint.stat(row.name) if isinstance(planned, _Unknown) else planned
            return self._judge(endpoint, row, info)
        except Exception as exc:  # a row's failure never stops the run
            problem = row.problem(ERROR, f"{exc.__class__.__name__}: {exc}")
            return CheckResult(row, ERROR, problem)

    def _judge(self, endpoint: Endpoint, row: Row, info: ObjectInfo | None) -> CheckResult:
        """The first check that fails names the outcome: missing, size, checksum, metadata."""
        if info is None:
            return CheckResult(row, MISSING, row.problem(MISSING, "file does not exist"))
        result = CheckResult(row, OK)
        meta, columns = row.meta, row.target.columns
        stored_size = meta.get("file_size")
        stored_md5 = str(meta.get("checksum") or "").lower()
        actual_md5: str | None = None
        if self.level == "deep":
            stream, opened = endpoint.open_info(row.name)
            with stream:
                digest = digest_stream(stream)  # type: ignore[arg-type]
            result.downloaded = True
            info = opened or info
            info.size, actual_md5 = digest.size, digest.md5
        size_ok = self.level == "exists" or stored_size is None or stored_size == info.size
        if "file_size" in columns and stored_size != info.size:
            result.updates["file_size"] = info.size
        if not size_ok:
            detail = "stored size disagrees with the file"
            self._fail(result, SIZE_MISMATCH, detail, expected=stored_size, actual=info.size)
        wants_md5 = self.level in ("checksum", "deep") and (stored_md5 or self.fix_metadata)
        if result.outcome == OK and wants_md5 and actual_md5 is None:
            actual_md5, result.downloaded = self._md5(endpoint, row.name, info, stored_md5)
        if self.level in ("checksum", "deep"):
            if not stored_md5:
                result.unchecked = True
                if actual_md5 and "checksum" in columns:
                    result.updates["checksum"] = actual_md5  # filled only where empty
            elif result.outcome == OK and actual_md5 != stored_md5:
                detail = "file bytes do not match the stored checksum"
                self._fail(
                    result, CHECKSUM_MISMATCH, detail, expected=stored_md5, actual=actual_md5
                )
        self._check_metadata(endpoint, row, info, result)
        if result.outcome == OK and result.unchecked and self.strict:
            detail = "no stored checksum to compare the file with"
            self._fail(result, UNVERIFIABLE, detail)
        return result

    def _md5(
        self, endpoint: Endpoint, name: str, info: ObjectInfo, stored: str
    ) -> tuple[str, bool]:
        """The object's MD5 without reading it where the storage can prove it; else read it.
        A listing's ETag is taken at once only when it agrees with the stored checksum; else a
        HEAD says whether it is an MD5 at all (a bucket's default KMS encryption)."""
        if info.etag_md5 and (info.headed or info.etag_md5 == stored):
            return info.etag_md5, False
        headed = endpoint.head(name, info)
        if headed.md5:
            if headed is not info:
                info.content_type, info.headed = headed.content_type, True
            return headed.md5, False
        return endpoint.hash(name).md5, True

    def _check_metadata(
        self, endpoint: Endpoint, row: Row, info: ObjectInfo, result: CheckResult
    ) -> None:
        meta, columns = row.meta, row.target.columns
        wanted: dict[str, Any] = {"bucket": endpoint.bucket, "object_key": endpoint.key(row.name)}
        if info.headed and info.content_type:
            wanted["content_type"] = info.content_type
        wrong = []
        for role, value in wanted.items():
            if role not in columns or meta.get(role) == value:
                continue
            if role == "content_type" and not meta.get(role):
                result.updates[role] = value  # a blank type is filled, not a mismatch
                continue
            result.updates[role] = value
            wrong.append(f"{role} is {meta.get(role)!r}, the storage says {value!r}")
        if wrong and result.outcome == OK:
            self._fail(result, METADATA_MISMATCH, "; ".join(wrong))

    def _fail(self, result: CheckResult, kind: str, detail: str, **extra: Any) -> None:
        if self.fix_metadata and kind in (SIZE_MISMATCH, METADATA_MISMATCH):
            detail += "; corrected (--fix-metadata)"
        result.outcome = kind
        result.problem = result.row.problem(kind, detail, **extra)

    # --- back in the calling thread -------------------------------------------------------

    def _finish(self, result: CheckResult) -> None:
        detail = result.problem.detail if result.problem else ""
        log.debug(
            "%s %s pk=%s %r %s",
            result.outcome,
            result.row.target.label,
            result.row.pk,
            result.row.name,
            detail,
        )
        report = self.report
        report.rows += 1
        report.downloaded += int(result.downloaded)
        report.unchecked += int(result.unchecked)
        row = result.row
        if result.problem is not None:
            report.problems.append(result.problem)
        else:
            report.add_ok(row.target.label, row.target.field_name, row.pk, row.name)
        if self.fix_metadata and result.updates:
            self._pending.append(result)
            if len(self._pending) >= COMMIT_ROWS:
                self._commit()
        if self.on_row is not None:
            self.on_row(result)

    def _commit(self) -> None:
        """--fix-metadata: the columns the storage contradicts, in one short transaction, with
        QuerySet.update() (no model signals); never a stored checksum."""
        pending, self._pending = self._pending, []
        with transaction.atomic():
            for result in pending:
                row = result.row
                columns = row.target.columns
                same_row = row.target.model._base_manager.filter(
                    pk=row.pk, **{str(row.target.field.attname): row.name}
                )
                updates = {columns[r]: v for r, v in result.updates.items() if r != "checksum"}
                changed = same_row.update(**updates) if updates else 0
                if "checksum" in result.updates:  # filled only where it is still empty
                    changed |= same_row.filter(**{columns["checksum"]: ""}).update(
                        **{columns["checksum"]: result.updates["checksum"]}
                    )
                self.report.fixed += changed


def verify_files(
    *,
    storage: str | None = None,
    models: list[str] | tuple[str, ...] | None = None,
    level: str = "checksum",
    strict: bool = False,
    orphans: bool = False,
    fix_metadata: bool = False,
    sample: int | None = None,
    fail_on: list[str] | tuple[str, ...] | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    on_row: ProgressCallback | None = None,
    on_start: Callable[[int], None] | None = None,
) -> VerificationReport:
    """Check that every row's file exists where the app reads it, with the row's size and
    checksum; optionally list orphans and fix metadata columns. Raises ConfigurationError
    before anything is read when the run cannot start."""
    if level not in LEVELS:
        raise ConfigurationError(f"Unknown level {level!r} (known: {', '.join(LEVELS)})")
    if sample is not None and sample < 1:
        raise ConfigurationError("sample must be 1 or more")
    kinds = tuple(fail_on) if fail_on is not None else DEFAULT_FAIL_ON
    unknown = sorted(set(kinds) - set(VERIFY_PROBLEMS))
    if unknown:
        raise ConfigurationError(
            f"Unknown problem kind(s) {', '.join(unknown)} (known: {', '.join(VERIFY_PROBLEMS)})"
        )
    try:
        conf = get_conf(WORKERS=workers, BATCH_SIZE=batch_size)
        targets = resolve_targets(models, conf)
        if storage is not None:
            endpoint_for(storage, conf)  # an unknown alias is an error before anything runs
    except ImproperlyConfigured as exc:
        raise ConfigurationError(str(exc)) from None
    verification = Verification(
        targets,
        conf,
        storage=storage,
        level=level,
        strict=strict,
        orphans=orphans,
        fix_metadata=fix_metadata,
        sample=sample,
        fail_on=kinds,
        on_row=on_row,
        on_start=on_start,
    )
    return verification.run()
