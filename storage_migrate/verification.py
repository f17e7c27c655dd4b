"""verify_files: for each row, is its file where the app reads it, with its size and checksum?

Large selections are checked by joining the rows, read in the byte order of their names, with
one streamed listing of the storage (one request per 1000 objects); small ones (a sample, a
few rows) with one HEAD per row. The MD5 comes from the ETag where it is one, else from the md5
metadata migrate_storage binds to the object's ETag, else from reading the object.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import Error, connection, transaction
from django.db.models import QuerySet

from .conf import Conf, get_conf
from .database import check_database
from .endpoints import Endpoint, ObjectInfo, alias_of, endpoint_for, endpoint_for_storage
from .errors import ConfigurationError, DatabaseLost, RowError, UnsafeName
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
from .targets import Target, resolve_targets, unfit

LEVELS = ("exists", "size", "checksum", "deep")
# Below this many rows in a selection, one HEAD per row is cheaper than listing the storage.
JOIN_MIN_ROWS = 1000
COMMIT_ROWS = 500
# What writing one row's columns can raise: the database's refusals (DataError, IntegrityError,
# any DatabaseError; InterfaceError for a lost connection), and a driver's or a field's refusal
# of a value (ValueError, OverflowError).
WRITE_ERRORS = (Error, ValueError, OverflowError)


@dataclass
class CheckResult:
    """One row's outcome (ok or a problem kind), what it cost (``bytes``: read to hash it),
    and the columns to fix."""

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
        except (KeyboardInterrupt, DatabaseLost) as exc:
            # Ctrl-C, SIGTERM or a database that stayed away: the rows checked so far are the
            # partial report, which goes with the interruption (the command prints and writes
            # it). Checks still running are dropped, not waited for.
            pool.shutdown(wait=False, cancel_futures=True)
            lost = isinstance(exc, DatabaseLost)
            ready = [f for f in futures if f.done() and not f.cancelled() and not f.exception()]
            with contextlib.suppress(*WRITE_ERRORS):
                for result in (future.result() for future in ready):
                    if not (lost and result.updates and self.fix_metadata):
                        self._finish(result)
                if not lost:
                    self._commit()  # the --fix-metadata columns of the rows checked so far
            self._pending.clear()  # not written (the database is gone): not counted
            self.report.interrupted = True
            exc.report = self.report  # type: ignore[union-attr]
            raise
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
        # --fix-metadata may have to prove, at any level, that the object is the row's file.
        shallow = self.level in ("exists", "size") and not self.fix_metadata
        return planned is None or shallow or bool(planned.etag_md5)

    def _unsafe(self, row: Row, endpoint: Endpoint) -> str | None:
        reason = unsafe_reason(row.name)
        if reason:
            return reason
        try:
            reason = unsafe_reason(row.name, endpoint.key(row.name))
            endpoint.local_path(row.name)
        except UnsafeName as exc:
            return str(exc)
        except (SuspiciousOperation, ValueError) as exc:
            return f"name leaves the storage's root ({exc.__class__.__name__})"
        return reason

    # --- one row, in a worker -------------------------------------------------------------

    def _check(self, endpoint: Endpoint, row: Row, planned: Planned) -> CheckResult:
        try:
            info = endpoint.stat(row.name) if isinstance(planned, _Unknown) else planned
            return self._judge(endpoint, row, info)
        except RowError as exc:  # a name found unsafe only when opened (a FIFO, a folder)
            return CheckResult(row, exc.kind, row.problem(exc.kind, str(exc)))
        except Exception as exc:  # a row's failure never stops the run
            problem = row.problem(ERROR, f"{exc.__class__.__name__}: {exc}")
            return CheckResult(row, ERROR, problem)

    def _judge(self, endpoint: Endpoint, row: Row, info: ObjectInfo | None) -> CheckResult:
        """The first check that fails names the outcome: missing, size, checksum, metadata.
        Every value judged (and written) is from one response: where the object is read or
        HEADed after a listing, that later response's alone."""
        if info is None:
            return CheckResult(row, MISSING, row.problem(MISSING, "file does not exist"))
        result = CheckResult(row, OK)
        meta = row.meta
        stored_size = meta.get("file_size")
        stored_md5 = str(meta.get("checksum") or "").lower()
        actual_md5: str | None = None
        if self.level == "deep":
            info, actual_md5 = self._read(endpoint, row.name, info)
            result.downloaded = True
        elif self._needs_md5(endpoint, row, info, stored_md5):
            info, actual_md5, result.downloaded = self._md5(endpoint, row.name, info, stored_md5)
        if result.downloaded:
            result.bytes = info.size  # a read's info has the size of the bytes it hashed
        size_ok = self.level == "exists" or stored_size is None or stored_size == info.size
        if not size_ok:
            detail = "stored size disagrees with the file"
            self._fail(result, SIZE_MISMATCH, detail, expected=stored_size, actual=info.size)
        if self.level in ("checksum", "deep"):
            if not stored_md5:
                result.unchecked = True
            elif result.outcome == OK and actual_md5 != stored_md5:
                detail = "file bytes do not match the stored checksum"
                self._fail(
                    result, CHECKSUM_MISMATCH, detail, expected=stored_md5, actual=actual_md5
                )
        observed = self._observed(endpoint, row, info, actual_md5)
        wrong: list[str] = [
            role
            for role in ("bucket", "object_key", "content_type")
            if role in observed
            and meta.get(role) != observed[role]
            and (role != "content_type" or meta.get(role))  # a blank type is filled, not wrong
        ]
        if wrong and result.outcome == OK:
            detail = "; ".join(
                f"{role} is {meta.get(role)!r}, the storage says {observed[role]!r}"
                for role in wrong
            )
            self._fail(result, METADATA_MISMATCH, detail)
        if self.fix_metadata:
            self._plan_updates(result, observed, wrong, stored_md5, actual_md5)
        if result.outcome == OK and result.unchecked and self.strict:
            detail = "no stored checksum to compare the file with"
            self._fail(result, UNVERIFIABLE, detail)
        return result

    def _needs_md5(self, endpoint: Endpoint, row: Row, info: ObjectInfo, stored_md5: str) -> bool:
        """At level checksum, a file whose size is right is compared (or its checksum filled).
        --fix-metadata writes to a row with a stored checksum only what the object's MD5
        proves to be the row's file, so it learns that MD5 wherever it would write."""
        stored_size = row.meta.get("file_size")
        size_ok = stored_size is None or stored_size == info.size
        if self.level == "checksum" and (stored_md5 or self.fix_metadata) and size_ok:
            return True
        if not (self.fix_metadata and stored_md5):
            return False
        observed = self._observed(endpoint, row, info, None)
        return any(row.meta.get(role) != value for role, value in observed.items())

    def _md5(
        self, endpoint: Endpoint, name: str, info: ObjectInfo, stored: str
    ) -> tuple[ObjectInfo, str, bool]:
        """The object's MD5 without reading it where the storage can prove it; else read it.
        A listing's ETag is taken at once only when it agrees with the stored checksum; else a
        HEAD says whether it is an MD5 at all (a bucket's default KMS encryption). Returns the
        response the MD5 is from (the HEAD's or the read's, once there was one: the object may
        have been replaced since the listing), the MD5, and whether the object was read."""
        if info.etag_md5 and (info.headed or info.etag_md5 == stored):
            return info, info.etag_md5, False
        headed = endpoint.head(name, info)
        if headed.md5:
            return headed, headed.md5, False
        if headed.meta_md5 and stored and self.level == "checksum" and not self.fix_metadata:
            # A hint (our md5 metadata, beside the ETag it was written with), which saves a
            # download at this level; never what --fix-metadata writes by (--level deep reads).
            return headed, headed.meta_md5, False
        read, md5 = self._read(endpoint, name, headed)
        return read, md5, True

    def _read(self, endpoint: Endpoint, name: str, info: ObjectInfo) -> tuple[ObjectInfo, str]:
        """Read and hash the object: what the read's own response says of it (its size the
        bytes counted), and their MD5."""
        stream, opened = endpoint.open_info(name)
        with stream:
            digest = digest_stream(stream)  # type: ignore[arg-type]
        return replace(opened or info, size=digest.size, md5=digest.md5), digest.md5

    def _observed(
        self, endpoint: Endpoint, row: Row, info: ObjectInfo, md5: str | None
    ) -> dict[str, Any]:
        """What the storage says of the file under the row's name, by role, for the columns
        the row has: all from one response (``info``)."""
        observed: dict[str, Any] = {
            "file_size": info.size,
            "bucket": endpoint.bucket,
            "object_key": endpoint.key(row.name),
        }
        if info.headed and info.content_type:
            observed["content_type"] = info.content_type
        if md5:
            observed["checksum"] = md5
        return {role: v for role, v in observed.items() if role in row.target.columns}

    def _plan_updates(
        self,
        result: CheckResult,
        observed: dict[str, Any],
        wrong: list[str],
        stored_md5: str,
        actual_md5: str | None,
    ) -> None:
        """--fix-metadata: the object is the row's file when its MD5 is the row's stored
        checksum; then every column it contradicts is corrected. Otherwise only blank columns
        are filled, and only when the object contradicts nothing the row knows (another
        writer's object under the row's key must not rewrite the row). A stored checksum is
        never overwritten; a value its column cannot hold is not written."""
        row = result.row
        meta = row.meta
        proven = bool(stored_md5) and actual_md5 == stored_md5
        differs = {
            role: value
            for role, value in observed.items()
            if role != "checksum" and meta.get(role) != value
        }
        contradicted = [role for role in differs if meta.get(role) not in (None, "")]
        if stored_md5 and actual_md5 and actual_md5 != stored_md5:
            contradicted.append("checksum")
        if not proven and contradicted:
            why = (
                "its MD5 is not the stored checksum"
                if stored_md5
                else "the row has no checksum to prove it is"
            )
            self._say(result, f"not corrected: the object may not be the row's file ({why})")
            return
        if not stored_md5 and "checksum" in observed:
            differs["checksum"] = observed["checksum"]  # filled only where it is still empty
        refused: list[str] = []
        for role, value in differs.items():
            reason = unfit(row.target, role, value)
            if reason is None:
                result.updates[role] = value
            elif role in contradicted or role in wrong:  # meant as a correction: say why not
                refused.append(f"{role} not corrected: {reason}")
            else:
                log.debug("pk=%s: %s not filled: %s", row.pk, role, reason)
        subject = ["file_size"] if result.outcome == SIZE_MISMATCH else wrong
        corrected = [role for role in subject if role in result.updates]
        if refused:
            done = [f"{', '.join(corrected)} corrected (--fix-metadata)"] if corrected else []
            self._say(result, "; ".join(done + refused))
        elif corrected:
            self._say(result, "corrected (--fix-metadata)")

    def _say(self, result: CheckResult, note: str) -> None:
        """Add what --fix-metadata did to a size or metadata mismatch's detail."""
        if result.problem is not None and result.outcome in (SIZE_MISMATCH, METADATA_MISMATCH):
            result.problem.detail += f"; {note}"

    def _fail(self, result: CheckResult, kind: str, detail: str, **extra: Any) -> None:
        result.outcome = kind
        result.problem = result.row.problem(kind, detail, **extra)

    # --- back in the calling thread -------------------------------------------------------

    def _finish(self, result: CheckResult) -> None:
        """A checked row: counted now, or, when it has columns to fix, once they are committed
        (writing them may fail, and then that failure is the row's outcome)."""
        if self.fix_metadata and result.updates:
            self._pending.append(result)
            if len(self._pending) >= COMMIT_ROWS:
                self._commit()
            return
        self._record(result)

    def _record(self, result: CheckResult) -> None:
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
        report.bytes_read += result.bytes
        report.unchecked += int(result.unchecked)
        row = result.row
        if result.problem is not None:
            report.problems.append(result.problem)
        else:
            report.add_ok(row.target.label, row.target.field_name, row.pk, row.name)
        if self.on_row is not None:
            self.on_row(result)

    def _commit(self) -> None:
        """--fix-metadata: the pending rows' columns in one short transaction, with
        QuerySet.update() (no model signals); never a stored checksum. When the database
        refuses the batch, each row is written in its own savepoint, and a row it refuses is
        that row's error: the others are written."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            with transaction.atomic():
                changed = [self._write(result) for result in pending]
        except WRITE_ERRORS as exc:
            log.debug("the batch's metadata was refused (%s): row by row", exc)
            changed = []
            for result in pending:
                try:
                    with transaction.atomic():
                        changed.append(self._write(result))
                except WRITE_ERRORS as row_exc:
                    self._refused(result, row_exc)
                    changed.append(0)
        for result, count in zip(pending, changed, strict=True):
            self.report.fixed += count
            self._record(result)

    def _statements(self, result: CheckResult) -> list[tuple[QuerySet[Any], dict[str, Any]]]:
        """The updates that fix one row: its contradicted or blank columns, and, apart, an empty
        checksum (filled only where it is still empty)."""
        row = result.row
        columns = row.target.columns
        same_row = row.target.model._base_manager.filter(
            pk=row.pk, **{str(row.target.field.attname): row.name}
        )
        updates = {columns[r]: v for r, v in result.updates.items() if r != "checksum"}
        statements = [(same_row, updates)] if updates else []
        if "checksum" in result.updates:
            checksum = columns["checksum"]
            filled = {checksum: result.updates["checksum"]}
            statements.append((same_row.filter(**{checksum: ""}), filled))
        return statements

    def _write(self, result: CheckResult) -> int:
        changed = 0
        for queryset, values in self._statements(result):
            changed |= queryset.update(**values)
        return changed

    def _refused(self, result: CheckResult, exc: BaseException) -> None:
        """The database refused the row's columns: nothing of it was written, and that is its
        outcome (what the check found is kept in the detail)."""
        columns = [
            (queryset, column, value)
            for queryset, values in self._statements(result)
            for column, value in values.items()
        ]
        failing = []
        for queryset, column, value in columns:  # each alone, undone: which one is refused?
            try:
                with transaction.atomic():
                    queryset.update(**{column: value})
                    transaction.set_rollback(True)
            except WRITE_ERRORS:
                failing.append(column)
        named = len(failing) < len(columns) or len(columns) == 1
        what = ", ".join(failing) if failing and named else "the row's metadata columns"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"--fix-metadata could not write {what}: {exc.__class__.__name__}: {message}"
        found = result.problem
        if found is not None:
            detail += f" (the check found {found.kind})"
        extra = {"expected": found.expected, "actual": found.actual} if found else {}
        result.outcome = ERROR
        result.problem = result.row.problem(ERROR, detail, **extra)


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
        raise ConfigurationError(str(exc)) from exc
    check_database(targets)  # before the storages' preflights, which Verification.run makes
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
