"""verify_files: for each row, is its file where the app reads it, with its size and checksum?

Large selections are checked by joining the rows, read in the byte order of their names, with
one streamed listing of the storage (one request per 1000 objects); small ones (a sample, a
few rows) with one HEAD per row. The MD5 comes from the ETag where it is one, else from the md5
metadata migrate_storage binds to the object's ETag, else from reading the object.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import connection

from .. import stopping
from ..conf import Conf, get_conf
from ..database import check_database
from ..endpoints.base import Endpoint, alias_of
from ..endpoints.factory import endpoint_for, endpoint_for_storage
from ..errors import ConfigurationError, DatabaseLost, UnsafeName
from ..log import log
from ..names import unsafe_reason
from ..report.problems import (
    DEFAULT_FAIL_ON,
    UNSAFE_NAME,
    VERIFY_PROBLEMS,
    now,
)
from ..report.verification import VerificationReport
from ..rows import (
    COMMIT_ROWS,
    UNKNOWN,
    Planned,
    Row,
    _Unknown,
    row_columns,
    rows_by_pk,
    stored_digest,
    stored_others,
    with_files,
)
from ..targets import Target, orphan_settings, resolve_targets
from . import LEVELS
from .check import Checker, CheckResult
from .fix import WRITE_ERRORS, Fixer
from .joins import BYTE_ORDER, joined_rows
from .orphans import find_orphans

# Below this many rows in a selection, one HEAD per row is cheaper than listing the storage.
JOIN_MIN_ROWS = 1000
CheckCallback = Callable[[CheckResult], None]


class Verification(Checker, Fixer):
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
        on_row: CheckCallback | None,
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
        threads = self.conf.WORKERS
        for _target, endpoint in plans:
            threads = min(threads, endpoint.max_threads or threads)
        pool = ThreadPoolExecutor(threads, thread_name_prefix="verify-files")
        futures: set[Future[CheckResult]] = set()
        try:
            for target, endpoint in plans:
                # Closed here, even by an interruption: its listing thread stops at once.
                with contextlib.closing(self._planned(target, endpoint)) as planned_rows:
                    for row, planned in planned_rows:
                        self._dispatch(pool, futures, endpoint, row, planned)
            while futures:
                self._collect(futures)
            self._commit()
            if self.want_orphans:
                with contextlib.closing(find_orphans(plans, self.conf)) as orphans:
                    for orphan in orphans:
                        stopping.check()
                        self.report.problems.append(orphan)
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
            for _target, endpoint in plans:
                endpoint.close()
            self.report.finished_at = now()
        return self.report

    def _dispatch(
        self,
        pool: ThreadPoolExecutor,
        futures: set[Future[CheckResult]],
        endpoint: Endpoint,
        row: Row,
        planned: Planned,
    ) -> None:
        """Check one row: here where the listing answered, else on a worker (``futures``, the
        checks running, at most 4 a worker)."""
        stopping.check()
        reason = self._unsafe(row, endpoint)
        if reason:
            problem = row.problem(UNSAFE_NAME, reason)
            self._finish(CheckResult(row, UNSAFE_NAME, problem))
            return
        if self._answered(row, planned):
            self._finish(self._check(endpoint, row, planned))  # no I/O to wait on
            return
        futures.add(pool.submit(self._check, endpoint, row, planned))
        while len(futures) >= self.conf.WORKERS * 4:
            self._collect(futures)

    def _collect(self, futures: set[Future[CheckResult]]) -> None:
        """Count the checks that are done and take them out of ``futures`` (each is counted
        once, even when an interruption comes between two). Waits at most STOP_POLL seconds,
        so that a request to stop is seen."""
        stopping.check()
        done, _running = wait(futures, timeout=stopping.STOP_POLL, return_when=FIRST_COMPLETED)
        for future in done:
            futures.discard(future)
            self._finish(future.result())

    def _count(self, target: Target) -> int:
        count = with_files(target).count()
        return min(count, self.sample) if self.sample is not None else count

    def _planned(
        self, target: Target, endpoint: Endpoint
    ) -> Generator[tuple[Row, Planned], None, None]:
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
        if planned is None or shallow:
            return True
        # A row whose only digests are SHA-1 or SHA-256 is read, on a worker.
        only_others = bool(stored_others(row)) and not stored_digest(row, "checksum")
        return bool(planned.etag_md5) and not only_others

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
    on_row: CheckCallback | None = None,
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
        orphan_settings(conf)  # a bad ORPHAN_FOLDERS is an error before anything runs
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
