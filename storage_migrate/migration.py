"""migrate_storage: for each row, plan -> skip what is done -> copy -> verify -> commit the row.

Workers touch only storages; the calling thread alone reads and writes the database. A row is
updated only after its object was verified, and a source file is deleted (when asked) only after
its row was committed.
"""

from __future__ import annotations

import mimetypes
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import transaction

from .conf import Conf, get_conf
from .endpoints import Endpoint, Fingerprint, ObjectInfo, endpoint_for
from .errors import ConfigurationError, RowError, SourceMissing, VerificationFailed
from .names import unsafe_reason
from .report import (
    CHECKSUM_MISMATCH,
    CONFLICT,
    COPIED,
    ERROR,
    SIZE_MISMATCH,
    SKIPPED,
    UNSAFE_NAME,
    MigrationReport,
    Problem,
    now,
)
from .targets import Target, resolve_targets
from .transfer import close_engines, copy_file

# Verified rows are committed in one transaction per this many rows, or sooner (COMMIT_SECONDS).
COMMIT_ROWS = 500
COMMIT_SECONDS = 1.0
DEFAULT_PAIRS = {"s3": "local", "local": "s3"}


@dataclass
class Row:
    """One row's file and its metadata columns, as read from the database."""

    target: Target
    pk: Any
    name: str
    meta: dict[str, Any]
    key: str = ""

    def problem(self, kind: str, detail: str, **extra: Any) -> Problem:
        target = self.target
        return Problem(kind, target.label, target.field_name, self.pk, self.name, detail, **extra)


@dataclass
class RowResult:
    """What happened to one row. ``outcome`` is copied, skipped, or a problem kind."""

    row: Row
    outcome: str
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)
    # The source as it was when it was read (checked again before it is deleted).
    fingerprint: Fingerprint | None = None

    @property
    def clean(self) -> bool:
        return self.outcome in (COPIED, SKIPPED) and not self.problems


class _Unknown:
    """The destination could not be listed for this row: the worker asks it directly."""


UNKNOWN = _Unknown()
Planned = ObjectInfo | None | _Unknown

ProgressCallback = Callable[[RowResult], None]
StartCallback = Callable[[int], None]


def _rows(target: Target, batch_size: int) -> Iterator[list[Row]]:
    """The target's rows with a file, in primary-key batches (pk > last, never OFFSET)."""
    model, attname = target.model, str(target.field.attname)
    columns = target.columns
    queryset = (
        model._base_manager.exclude(**{attname: ""})
        .exclude(**{f"{attname}__isnull": True})
        .order_by("pk")
        .values_list("pk", attname, *columns.values())
    )
    last = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        batch = list(page[:batch_size])
        if not batch:
            return
        last = batch[-1][0]
        yield [
            Row(target, values[0], str(values[1]), dict(zip(columns, values[2:], strict=True)))
            for values in batch
        ]


class Migration:
    """One run. Use migrate_storage(); this class holds the run's state."""

    def __init__(
        self,
        source: Endpoint,
        destination: Endpoint,
        targets: list[Target],
        conf: Conf,
        *,
        dry_run: bool,
        limit: int | None,
        overwrite: bool,
        delete_source: bool,
        rewrite_checksums: bool,
        on_row: ProgressCallback | None,
        on_start: StartCallback | None = None,
    ) -> None:
        self.src, self.dst, self.targets, self.conf = source, destination, targets, conf
        self.dry_run, self.limit = dry_run, limit
        self.overwrite, self.delete_source = overwrite, delete_source
        self.rewrite_checksums = rewrite_checksums
        self.on_row, self.on_start = on_row, on_start
        self.report = MigrationReport(source.alias, destination.alias, dry_run=dry_run)
        self._pending: list[RowResult] = []
        self._last_commit = time.monotonic()
        # Rows are processed one at a time per destination key: a second row with the same
        # file waits until the first is committed, then looks at the destination afresh.
        self._busy: set[str] = set()
        self._waiting: dict[str, deque[Row]] = {}
        self._tainted: set[str] = set()  # keys with a problem this run: their source stays
        self._futures: set[Future[RowResult]] = set()
        self._pool: ThreadPoolExecutor | None = None
        # Fingerprint local sources around each copy (cheap); S3 sources only before deleting.
        self._fingerprint = delete_source or source.kind == "local"

    def count_rows(self) -> int:
        total = 0
        for target in self.targets:
            attname = str(target.field.attname)
            total += (
                target.model._base_manager.exclude(**{attname: ""})
                .exclude(**{f"{attname}__isnull": True})
                .count()
            )
        return total if self.limit is None else min(total, self.limit)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> MigrationReport:
        if self.on_start is not None:
            self.on_start(self.count_rows())
        window = self.conf.WORKERS * 4
        self._pool = ThreadPoolExecutor(self.conf.WORKERS, thread_name_prefix="storage-migrate")
        try:
            for row, planned in self._planned_rows():
                if isinstance(planned, RowResult):
                    self._finish(planned)
                else:
                    self._submit(row, planned)
                while len(self._futures) >= window:
                    self._drain(FIRST_COMPLETED)
            while self._futures or self._pending or self._waiting:
                self._drain(FIRST_COMPLETED)
                self._commit()
        except BaseException:
            # Interrupted (Ctrl-C) or failed: queued rows are dropped; the rows whose copies are
            # already verified are committed, so that the next run does not redo them.
            self._pool.shutdown(wait=False, cancel_futures=True)
            for future in list(self._futures):
                if future.done() and not future.cancelled() and future.exception() is None:
                    self._futures.discard(future)
                    self._finish(future.result())
            self._waiting.clear()
            self._commit(resubmit=False)
            raise
        finally:
            self._pool.shutdown(wait=True)
            close_engines(self.src, self.dst)
            self.report.finished_at = now()
        return self.report

    def _submit(self, row: Row, planned: Planned) -> None:
        if row.key in self._busy:
            self._waiting.setdefault(row.key, deque()).append(row)
            return
        self._busy.add(row.key)
        assert self._pool is not None
        self._futures.add(self._pool.submit(self._process, row, planned))

    def _drain(self, return_when: str) -> None:
        if not self._futures:
            return
        done, _ = wait(self._futures, return_when=return_when, timeout=COMMIT_SECONDS)
        for future in done:
            self._futures.discard(future)  # only once it is finished, so nothing is lost
            self._finish(future.result())
        self._maybe_commit()

    def _planned_rows(self) -> Iterator[tuple[Row, Planned | RowResult]]:
        """Each row with what the destination holds under its name (one listing per batch where
        the destination can list), or a RowResult already decided."""
        remaining = self.limit
        for target in self.targets:
            for batch in _rows(target, self.conf.BATCH_SIZE):
                if remaining is not None:
                    batch = batch[:remaining]
                    remaining -= len(batch)
                safe: list[Row] = []
                for row in batch:
                    reason = self._unsafe(row)
                    if reason:
                        problem = row.problem(UNSAFE_NAME, reason)
                        yield row, RowResult(row, UNSAFE_NAME, problems=[problem])
                    else:
                        safe.append(row)
                infos: dict[str, Planned]
                try:
                    infos = dict(self.dst.stat_many(sorted({r.name for r in safe})))
                except Exception:
                    # A listing that fails is no reason to stop: each row asks for itself,
                    # and a failure then lands on that row.
                    infos = dict.fromkeys((r.name for r in safe), UNKNOWN)
                for row in safe:
                    yield row, infos[row.name]
                self._maybe_commit()
                if remaining is not None and remaining <= 0:
                    return

    def _unsafe(self, row: Row) -> str | None:
        reason = unsafe_reason(row.name)
        if reason:
            return reason
        try:
            for endpoint in (self.src, self.dst):
                reason = unsafe_reason(row.name, endpoint.key(row.name))
                if reason:
                    return reason
                endpoint.local_path(row.name)
            row.key = self.dst.key(row.name)
        except (SuspiciousOperation, ValueError) as exc:
            return f"name leaves the storage's root ({exc.__class__.__name__})"
        return None

    # --- one row, in a worker -------------------------------------------------------------

    def _process(self, row: Row, planned: Planned) -> RowResult:
        try:
            dest = self.dst.stat(row.name) if isinstance(planned, _Unknown) else planned
            if dest is not None:
                return self._existing(row, dest)
            return self._copy(row, existed=False)
        except RowError as exc:
            return RowResult(row, exc.kind, problems=[row.problem(exc.kind, str(exc))])
        except Exception as exc:  # a row's failure never stops the run
            detail = f"{exc.__class__.__name__}: {exc}"
            return RowResult(row, ERROR, problems=[row.problem(ERROR, detail)])

    def _same(self, endpoint: Endpoint, name: str, info: ObjectInfo, md5: str) -> bool:
        """Does the object hold bytes with this MD5? A listing's ETag can mislead (a bucket's
        default KMS encryption), so a mismatch is asked again with a HEAD before it counts."""
        if endpoint.prove_md5(name, info) == md5:
            return True
        headed = endpoint.head(name, info)
        return headed is not info and endpoint.prove_md5(name, headed) == md5

    def _existing(self, row: Row, dest: ObjectInfo) -> RowResult:
        """The destination already has an object under this name: skip it, or it is a conflict
        (or, with --overwrite, copy over it)."""
        size, checksum = row.meta.get("file_size"), (row.meta.get("checksum") or "").lower()
        # The shortcut trusts the row's checksum; before deleting a source, read the source too.
        if (
            not self.delete_source
            and checksum
            and size is not None
            and dest.size == size
            and self._same(self.dst, row.name, dest, checksum)
        ):
            return self._result(row, SKIPPED, size=dest.size, md5=checksum, dest=dest)
        fingerprint = self.src.fingerprint(row.name) if self._fingerprint else None
        source = self.src.stat(row.name)
        if source is None:
            return self._source_gone(row, dest)
        if source.size == dest.size:
            source_md5 = self.src.prove_md5(row.name, source)
            if self._same(self.dst, row.name, dest, source_md5):
                self._unchanged(row, fingerprint)
                result = self._result(row, SKIPPED, size=source.size, md5=source_md5, dest=dest)
                result.fingerprint = fingerprint
                return result
        if not self.overwrite:
            detail = (
                "destination holds a different object under this name (--overwrite replaces it)"
            )
            conflict = row.problem(CONFLICT, detail, expected=source.size, actual=dest.size)
            return RowResult(row, CONFLICT, problems=[conflict])
        return self._copy(row, existed=True, source=source)

    def _source_gone(self, row: Row, dest: ObjectInfo) -> RowResult:
        """No source, but an object at the destination: a row migrated by an earlier run whose
        source was deleted is `skipped` when the object holds what the row (or, without a stored
        checksum, this tool's own verified md5 metadata) says it should."""
        size, checksum = row.meta.get("file_size"), (row.meta.get("checksum") or "").lower()
        if checksum:
            if (size is None or size == dest.size) and self._same(
                self.dst, row.name, dest, checksum
            ):
                return self._result(row, SKIPPED, size=dest.size, md5=checksum, dest=dest)
        else:
            headed = self.dst.head(row.name, dest)
            if headed.meta_md5 and self._same(self.dst, row.name, headed, headed.meta_md5):
                return self._result(
                    row, SKIPPED, size=headed.size, md5=headed.meta_md5, dest=headed
                )
        raise SourceMissing("source file does not exist (an object is at the destination)")

    def _unchanged(self, row: Row, before: Fingerprint | None) -> None:
        if self._fingerprint and self.src.fingerprint(row.name) != before:
            raise VerificationFailed("source changed while it was read; run again")

    def _copy(self, row: Row, *, existed: bool, source: ObjectInfo | None = None) -> RowResult:
        if self.dry_run:
            source = source or self.src.stat(row.name)
            if source is None:
                raise SourceMissing("source file does not exist")
            md5 = self.src.prove_md5(row.name, source)  # a dry run predicts checksum problems
            return self._result(row, COPIED, size=source.size, md5=md5, copied_bytes=source.size)
        fingerprint = self.src.fingerprint(row.name) if self._fingerprint else None
        copied = copy_file(
            self.src,
            self.dst,
            row.name,
            conf=self.conf,
            content_type=row.meta.get("content_type") or None,
            overwrite=existed and self.overwrite,
            existed=existed,
            source_info=source,
        )
        try:
            self._unchanged(row, fingerprint)
        except VerificationFailed:
            if not existed:
                self.dst.delete(row.name)  # a copy of bytes the source no longer holds
            raise
        result = self._result(
            row,
            COPIED,
            size=copied.digest.size,
            md5=copied.digest.md5,
            dest=copied.info,
            copied_bytes=copied.digest.size,
        )
        result.fingerprint = fingerprint
        return result

    def _result(
        self,
        row: Row,
        outcome: str,
        *,
        size: int,
        md5: str | None,
        dest: ObjectInfo | None = None,
        copied_bytes: int = 0,
    ) -> RowResult:
        """The outcome, the problems the row's stored metadata shows, and the columns to update."""
        result = RowResult(row, outcome, bytes=copied_bytes)
        meta, columns = row.meta, row.target.columns
        stored_md5 = (meta.get("checksum") or "").lower()
        if md5 and stored_md5 and stored_md5 != md5:
            kept = "checksum rewritten" if self.rewrite_checksums else "stored checksum kept"
            result.problems.append(
                row.problem(
                    CHECKSUM_MISMATCH,
                    f"source bytes do not match the stored checksum; {kept}",
                    expected=stored_md5,
                    actual=md5,
                )
            )
        stored_size = meta.get("file_size")
        if "file_size" in columns and stored_size is not None and stored_size != size:
            result.problems.append(
                row.problem(
                    SIZE_MISMATCH,
                    "stored size disagrees with the file; size column corrected",
                    expected=stored_size,
                    actual=size,
                )
            )
        wanted: dict[str, Any] = {
            "bucket": self.dst.bucket,
            "object_key": self.dst.key(row.name),
            "file_size": size,
        }
        if not meta.get("content_type"):
            guessed = mimetypes.guess_type(row.name)[0]
            stored = dest.content_type if dest else None
            wanted["content_type"] = guessed or stored or "application/octet-stream"
        if md5 and (not stored_md5 or (stored_md5 != md5 and self.rewrite_checksums)):
            wanted["checksum"] = md5
        result.updates = {
            role: value
            for role, value in wanted.items()
            if role in columns and meta.get(role) != value
        }
        return result

    # --- back in the calling thread -------------------------------------------------------

    def _finish(self, result: RowResult) -> None:
        report = self.report
        report.rows += 1
        if result.outcome == COPIED:
            report.copied += 1
            report.bytes_copied += result.bytes
        elif result.outcome == SKIPPED:
            report.skipped += 1
        self._add_problems(result, result.problems)
        if result.outcome in (COPIED, SKIPPED) and not self.dry_run:
            self._pending.append(result)
        else:
            self._release(result)
            self._notify(result)

    def _add_problems(self, result: RowResult, problems: list[Problem]) -> None:
        self.report.problems.extend(problems)
        if problems:
            self._tainted.add(result.row.key)

    def _notify(self, result: RowResult) -> None:
        if self.on_row is not None:
            self.on_row(result)

    def _release(self, result: RowResult, *, resubmit: bool = True) -> None:
        """The row's key is free: the next row waiting for it looks at the destination afresh."""
        key = result.row.key
        waiting = self._waiting.get(key)
        if waiting and resubmit:
            assert self._pool is not None
            self._futures.add(self._pool.submit(self._process, waiting.popleft(), UNKNOWN))
            if not waiting:
                del self._waiting[key]
        else:
            self._busy.discard(key)

    def _maybe_commit(self) -> None:
        if len(self._pending) >= COMMIT_ROWS or (
            self._pending and time.monotonic() - self._last_commit >= COMMIT_SECONDS
        ):
            self._commit()

    def _commit(self, *, resubmit: bool = True) -> None:
        """Write the verified rows' metadata in one short transaction, without model signals
        (QuerySet.update), then delete their sources if asked."""
        pending, self._pending = self._pending, []
        self._last_commit = time.monotonic()
        if not pending:
            return
        vanished: list[RowResult] = []
        with transaction.atomic():
            for result in pending:
                row = result.row
                still_there = row.target.model._base_manager.filter(
                    pk=row.pk, **{str(row.target.field.attname): row.name}
                )
                if result.updates:
                    columns = row.target.columns
                    count = still_there.update(
                        **{columns[role]: value for role, value in result.updates.items()}
                    )
                elif self.delete_source:
                    count = 1 if still_there.exists() else 0
                else:
                    continue
                if count == 0:
                    vanished.append(result)
        for result in vanished:
            self._vanished(result)
        for result in pending:
            key = result.row.key
            if (
                self.delete_source
                and result.clean
                and key not in self._tainted
                and key not in self._waiting
            ):
                self._delete_source(result)
            self._release(result, resubmit=resubmit)
            self._notify(result)

    def _vanished(self, result: RowResult) -> None:
        """The row was deleted, or its file changed, while it was being copied: it is left as
        it is, and counted as an error rather than a copy."""
        report = self.report
        if result.outcome == COPIED:
            report.copied -= 1
            report.bytes_copied -= result.bytes
        elif result.outcome == SKIPPED:
            report.skipped -= 1
        result.outcome = ERROR
        detail = "row was deleted or its file changed during the migration; left as it is"
        problem = result.row.problem(ERROR, detail)
        result.problems.append(problem)
        self._add_problems(result, [problem])

    def _delete_source(self, result: RowResult) -> None:
        name = result.row.name
        try:
            current = self.src.fingerprint(name)
            if current is None:
                return  # already gone (an earlier run, or a row sharing the file)
            if current != result.fingerprint:
                problem = result.row.problem(
                    ERROR, "source changed after it was copied; it was not deleted (run again)"
                )
                result.problems.append(problem)
                self._add_problems(result, [problem])
                return
            self.src.delete(name)
        except Exception as exc:
            detail = f"copied and committed, but the source could not be deleted: {exc}"
            problem = result.row.problem(ERROR, detail)
            result.problems.append(problem)
            self._add_problems(result, [problem])


def migrate_storage(
    *,
    to: str,
    source: str | None = None,
    models: list[str] | tuple[str, ...] | None = None,
    dry_run: bool = False,
    workers: int | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    delete_source: bool = False,
    rewrite_checksums: bool = False,
    create_bucket: bool = False,
    on_row: ProgressCallback | None = None,
    on_start: StartCallback | None = None,
) -> MigrationReport:
    """Copy every row's file from ``source`` to ``to`` under the same name, verify each copy, then
    update the row's metadata. Raises ConfigurationError before anything is written."""
    try:
        conf = get_conf(WORKERS=workers, BATCH_SIZE=batch_size)
        if limit is not None and limit < 0:
            raise ConfigurationError("limit must be 0 or more")
        dst = endpoint_for(to, conf)
        if source is None:
            source = DEFAULT_PAIRS.get(to)
            if source is None:
                raise ConfigurationError(
                    f"--from is needed when --to is {to!r} (it defaults only for 's3' and 'local')"
                )
        if source == to:
            raise ConfigurationError(f"Source and destination are the same storage ({to!r})")
        src = endpoint_for(source, conf)
        targets = resolve_targets(models, conf)
    except ImproperlyConfigured as exc:
        raise ConfigurationError(str(exc)) from None
    src.preflight(as_source=True)
    dst.preflight(as_source=False, create_bucket=create_bucket, dry_run=dry_run)
    migration = Migration(
        src,
        dst,
        targets,
        conf,
        dry_run=dry_run,
        limit=limit,
        overwrite=overwrite,
        delete_source=delete_source and not dry_run,
        rewrite_checksums=rewrite_checksums,
        on_row=on_row,
        on_start=on_start,
    )
    return migration.run()
