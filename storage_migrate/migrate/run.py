"""migrate_storage: for each row, plan -> skip what is done -> copy -> verify -> commit the row.

Workers touch only storages; the calling thread alone reads and writes the database. A row is
updated only after its object was verified, and a source file is deleted (when asked) only after
its row was committed.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from .. import stopping
from ..conf import Conf, get_conf
from ..database import check_database
from ..endpoints.base import Endpoint
from ..endpoints.factory import endpoint_for
from ..endpoints.s3index import ListedIndex
from ..endpoints.s3write import close_engines, conditional_writes, engine_notes, native_engine
from ..errors import ConfigurationError, DatabaseLost
from ..log import log
from ..meter import Meter
from ..report.migration import MigrationReport
from ..report.problems import AT_DESTINATION, COPIED, SKIPPED, Problem, now
from ..rows import (
    UNKNOWN,
    Planned,
    ProgressCallback,
    Row,
    RowResult,
    StartCallback,
)
from ..shards import Shard, as_shard
from ..targets import Target, resolve_targets
from .commit import Committer
from .deletion import DeletedCallback, DeletionLedger
from .plan import DEFAULT_PAIRS, PkRange, Planner, refuse_one_place, refuse_unsafe_deletes
from .rowcopy import RowCopier

# Worker threads when the native engine sends: each keeps WORKERS / NATIVE_THREADS in flight.
NATIVE_THREADS = 2
# A chunk holds this many rounds of a thread's transfers: the thread waits for its oldest
# transfer before starting a new one, and goes back to the calling thread once per chunk.
CHUNK_ROUNDS = 4


_FROZEN_AT_IMPORT = gc.get_freeze_count()


@contextlib.contextmanager
def quiet_collector() -> Iterator[None]:
    """The garbage collector, while a run lasts, leaves alone what existed before it (Django's and
    botocore's objects, gone through again at every full collection) and runs less often: it
    was 7 % of a run's CPU. The settings are restored afterwards."""
    thresholds = gc.get_threshold()
    # An application's own freeze (since this module was imported) is left as it is. The
    # count at import is not always 0: Python 3.12 starts with objects counted as frozen.
    ours = gc.get_freeze_count() <= _FROZEN_AT_IMPORT
    if ours:
        gc.freeze()
    gc.set_threshold(max(thresholds[0], 10_000), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if ours:
            gc.unfreeze()


class Migration(Planner, Committer):
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
        only_pending: bool = False,
        pk_range: PkRange | None = None,
        shard: Shard | None = None,
        on_row: ProgressCallback | None,
        on_start: StartCallback | None = None,
        on_deleted: DeletedCallback | None = None,
    ) -> None:
        self.src, self.dst, self.targets, self.conf = source, destination, targets, conf
        self.dry_run, self.limit = dry_run, limit
        self.overwrite, self.delete_source = overwrite, delete_source
        self.rewrite_checksums = rewrite_checksums
        self.on_row, self.on_start, self.on_deleted = on_row, on_start, on_deleted
        self.only_pending, self.pk_range, self.shard = only_pending, pk_range, shard
        self.report = MigrationReport(
            source=source.alias,
            destination=destination.alias,
            dry_run=dry_run,
            pending=only_pending,
            shard=None if shard is None else str(shard),
        )
        self._pending: list[RowResult] = []
        self._last_commit = time.monotonic()
        # Rows are processed one at a time per destination key: a second row with the same
        # file waits until the first is committed, then looks at the destination afresh.
        self._busy: set[str] = set()
        self._waiting: dict[str, deque[Row]] = {}
        self._waiting_count = 0
        self._empty_at_start: bool | None = None
        self._row_count: int | None = None
        self._indexes: dict[str, ListedIndex | None] = {}
        # With --delete-source: the rows whose sources may go once the run is over.
        self.ledger = DeletionLedger() if delete_source else None
        self._futures: dict[Future[list[RowResult]], int] = {}  # -> how many rows
        self._in_flight = 0
        # Rows handed to a worker together: with the native engine, one thread starts them all
        # (reads, hashes, sends) before it waits for the first answer.
        self._chunk: list[tuple[Row, Planned]] = []
        self._chunk_size = 1
        self._in_flight_per_thread: int | None = None
        self._pool: ThreadPoolExecutor | None = None  # made for the first row to copy
        self._window = conf.WORKERS * 4  # rows in flight or waiting, at most
        self.copier = RowCopier(
            source,
            destination,
            conf,
            dry_run=dry_run,
            overwrite=overwrite,
            delete_source=delete_source,
            rewrite_checksums=rewrite_checksums,
        )

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> MigrationReport:
        with quiet_collector():
            return self._run()

    def _start_pool(self) -> ThreadPoolExecutor:
        """The workers, and the destination's writer, made for the first row to copy: a run
        with nothing to copy (an empty table) starts neither, nor asks the store about them."""
        # The destination's questions (conditional writes) are asked here, in this thread,
        # before any copy.
        conditional_writes(self.dst)
        threads = self.conf.WORKERS
        if not self.dry_run and self.src.kind == "local" and native_engine(self.dst, self.conf):
            # Each thread keeps a chunk of transfers in flight; the GIL makes more threads
            # cost more than they give. (Only from local disk, whose reads are quick: a
            # download from another store would hold up the chunk's other rows.)
            threads = min(NATIVE_THREADS, self.conf.WORKERS)
            self._in_flight_per_thread = -(-self.conf.WORKERS // threads)
            self._chunk_size = self._in_flight_per_thread * CHUNK_ROUNDS
            # Room for a second chunk per thread, ready when the first is done.
            self._window = max(self._window, 2 * threads * self._chunk_size)
        for endpoint in (self.src, self.dst):
            threads = min(threads, endpoint.max_threads or threads)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="storage-migrate")
        return self._pool

    def _run(self) -> MigrationReport:
        if self.on_start is not None:
            self.on_start(self.count_rows())
        try:
            for row, planned in self._planned_rows():
                stopping.check()
                if isinstance(planned, RowResult):
                    self._finish(planned)
                else:
                    self._submit(row, planned)
                # Rows waiting for a shared file count too: memory stays bounded even when
                # thousands of rows point at one file (a default avatar).
                while self._in_flight + len(self._chunk) + self._waiting_count >= self._window:
                    self._drain(FIRST_COMPLETED)
                    if not self._futures:
                        self._commit()
            while self._futures or self._chunk or self._pending or self._waiting:
                self._drain(FIRST_COMPLETED)
                self._commit()
            if self.ledger is not None:
                # Only now: every row that shares a source has had its outcome.
                report = self.report
                report.deleted, report.bytes_deleted = self.ledger.delete_sources(
                    self.src,
                    self.dst,
                    self.targets,
                    report.problems.append,
                    self.on_deleted,
                    dry_run=self.dry_run,
                )
        except BaseException as exc:
            # Interrupted (Ctrl-C, SIGTERM) or failed: queued rows are dropped; the rows whose
            # copies are already verified are committed, so that the next run does not redo
            # them, and the report of what happened so far goes with the interruption.
            if isinstance(exc, KeyboardInterrupt | DatabaseLost):
                self.report.interrupted = True
                exc.report = self.report  # type: ignore[union-attr]
            if self.ledger is not None and self.ledger.deleted:  # stopped while deleting
                self.report.deleted = self.ledger.deleted
                self.report.bytes_deleted = self.ledger.bytes_deleted
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            for future in list(self._futures):
                if future.done() and not future.cancelled() and future.exception() is None:
                    del self._futures[future]
                    for result in future.result():
                        self._finish(result)
            self._chunk.clear()
            self._waiting.clear()
            self._waiting_count = 0
            self._commit(resubmit=False)
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self.report.notes.extend(engine_notes(self.dst))
            meter = self.dst.meter or self.src.meter
            if meter is not None:  # the run's so far (every pass of --until-stable)
                self.report.cost = meter.cost()
            self.close_indexes()
            close_engines(self.src, self.dst)
            self.src.close()
            self.dst.close()
            if self.ledger is not None:
                self.ledger.close()
            self.report.finished_at = now()
        return self.report

    def _submit(self, row: Row, planned: Planned) -> None:
        if self._pool is None:
            self._start_pool()
        if row.key in self._busy:
            self._waiting.setdefault(row.key, deque()).append(row)
            self._waiting_count += 1
            return
        self._busy.add(row.key)
        self._chunk.append((row, planned))
        # A file too large for memory closes its chunk: it is hashed from disk before it is
        # sent, and the next chunk goes to another thread meanwhile.
        size = row.meta.get("file_size")
        large = isinstance(size, int) and size > self.conf.IN_MEMORY_LIMIT
        if len(self._chunk) >= self._chunk_size or large:
            self._flush()

    def _flush(self) -> None:
        """Hand the rows gathered so far to a worker."""
        if self._chunk:
            assert self._pool is not None
            chunk, self._chunk = self._chunk, []
            future = self._pool.submit(self.copier.process_many, chunk, self._in_flight_per_thread)
            self._futures[future] = len(chunk)
            self._in_flight += len(chunk)

    def _drain(self, return_when: str) -> None:
        stopping.check()  # at least once per commit wait (1 s), whatever the workers do
        self._flush()
        if not self._futures:
            return
        done, _ = wait(self._futures, return_when=return_when, timeout=self._commit_wait())
        for future in done:
            # Only once it is finished, so nothing is lost.
            self._in_flight -= self._futures.pop(future)
            for result in future.result():
                self._finish(result)
        self._maybe_commit()

    # --- back in the calling thread -------------------------------------------------------

    def _finish(self, result: RowResult) -> None:
        row = result.row
        log.debug(
            "%s %s pk=%s %r: %s",
            result.outcome,
            row.target.label,
            row.pk,
            row.name,
            "; ".join(p.detail for p in result.problems) or f"{result.bytes} bytes",
        )
        report = self.report
        report.rows += 1
        whole = self.only_pending and str(row.target) in report.walked_whole
        if result.outcome == COPIED:
            report.copied += 1
            report.bytes_copied += result.bytes
            report.copied_server_side += result.server_side
            report.copied_whole += whole
        elif result.outcome == SKIPPED:
            report.skipped += 1
            report.skipped_whole += whole
        elif result.outcome == AT_DESTINATION:
            report.at_destination += 1
        self._add_problems(result, result.problems)
        if result.problems and result.outcome in (COPIED, SKIPPED) and not whole:
            report.carried.extend(result.problems)  # committed: a later pending pass skips it
        if result.outcome in (COPIED, SKIPPED) and not self.dry_run:
            self._pending.append(result)
        else:
            if self.dry_run and self.ledger is not None and result.row.source_id is not None:
                if result.clean:  # what a real run would delete, once it is over
                    self.ledger.add(result, result.row.source_id, None)
                else:
                    self.ledger.taint(result.row.source_id)
            self._release(result)
            self._notify(result)

    def _add_problems(self, result: RowResult, problems: list[Problem]) -> None:
        self.report.problems.extend(problems)
        if problems and self.ledger is not None and result.row.source_id is not None:
            self.ledger.taint(result.row.source_id)  # its source stays, for every row

    def _notify(self, result: RowResult) -> None:
        if self.on_row is not None:
            self.on_row(result)

    def _release(self, result: RowResult, *, resubmit: bool = True) -> None:
        """The row's key is free: the next row waiting for it looks at the destination afresh."""
        key = result.row.key
        waiting = self._waiting.get(key)
        if waiting and resubmit:
            # In a dry run nothing was written: the next row finds what would have been.
            would_be = result.dest if self.dry_run and result.outcome in (COPIED, SKIPPED) else None
            self._chunk.append((waiting.popleft(), would_be or UNKNOWN))  # the key stays busy
            self._waiting_count -= 1
            if not waiting:
                del self._waiting[key]
        else:
            self._busy.discard(key)


@dataclass
class Prepared:
    """A run's settings, endpoints and targets, checked: what migrate_storage() and
    enqueue_migration() start from."""

    conf: Conf
    src: Endpoint
    dst: Endpoint
    targets: list[Target]
    shard: Shard | None = None


def prepare(
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
    create_bucket: bool = False,
    pending: bool = False,
    until_stable: bool = False,
    max_passes: int = 10,
    pause: float = 5.0,
    max_rate: float | None = None,
    max_requests: float | None = None,
    shard: Shard | tuple[int, int] | None = None,
) -> Prepared:
    """Check the settings, the options, the database and both storages (the preflight) before
    anything is written. Raises ConfigurationError."""
    pending = pending or until_stable
    try:
        if until_stable and max_passes < 1:
            raise ConfigurationError("max_passes must be 1 or more")
        if until_stable and pause < 0:
            raise ConfigurationError("pause must be 0 or more seconds")
        if until_stable and limit is not None:
            raise ConfigurationError(
                "--until-stable repeats passes until one copies nothing: drop --limit (or run "
                "--pending --limit N passes by hand)."
            )
        our_shard = as_shard(shard)
        conf = get_conf(WORKERS=workers, BATCH_SIZE=batch_size)
        if limit is not None and limit < 0:
            raise ConfigurationError("limit must be 0 or more")
        for option, value in (("max_rate", max_rate), ("max_requests", max_requests)):
            if value is not None and not (0 < value < float("inf")):
                raise ConfigurationError(f"{option} must be above 0, not {value}")
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
        # The ceilings are the whole migration's: each of N shards keeps to its share.
        share = our_shard.count if our_shard is not None else 1
        src.meter = dst.meter = Meter(
            max_rate=max_rate / share if max_rate else None,
            max_requests=max_requests / share if max_requests else None,
        )
        destructive = (delete_source or overwrite) and not dry_run
        refuse_one_place(src, dst, probe=False, destructive=destructive)
        if delete_source:  # a dry run predicts the refusal too
            refuse_unsafe_deletes(src, dst, limit, pending, our_shard)
        targets = resolve_targets(models, conf)
    except ImproperlyConfigured as exc:
        raise ConfigurationError(str(exc)) from exc
    check_database(targets)
    src.preflight(as_source=True)
    dst.preflight(as_source=False, create_bucket=create_bucket, dry_run=dry_run)
    if not dry_run:
        refuse_one_place(src, dst, probe=True, destructive=destructive)
    return Prepared(conf, src, dst, targets, our_shard)


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
    pending: bool = False,
    until_stable: bool = False,
    max_passes: int = 10,
    pause: float = 5.0,
    pk_range: PkRange | None = None,
    max_rate: float | None = None,
    max_requests: float | None = None,
    shard: Shard | tuple[int, int] | None = None,
    on_row: ProgressCallback | None = None,
    on_start: StartCallback | None = None,
    on_deleted: DeletedCallback | None = None,
) -> MigrationReport:
    """Copy every row's file from ``source`` to ``to`` under the same name, verify each copy, then
    update the row's metadata. With ``pending``, only the rows whose metadata columns do not
    already record them at the destination (the catch-up after the switch); with
    ``until_stable`` (which implies ``pending``), pending passes ``pause`` seconds apart until
    one copies nothing, at most ``max_passes`` of them; with ``pk_range``, only the rows whose
    primary key is in it (one batch of a run split across Celery workers); with
    ``shard=(K, N)``, only the rows whose file is in shard K of N (storage_migrate.shards): N
    processes share one migration. ``max_rate`` (MB a second) and ``max_requests`` (a second)
    are ceilings for the whole migration, beside a live site: with shards, each takes its
    share. Raises ConfigurationError before anything is written."""
    pending = pending or until_stable
    if pk_range is not None and delete_source:
        raise ConfigurationError(
            "--delete-source walks whole tables (a row outside the primary-key range may share "
            "a file with one within it): copy without it, then run purge_source."
        )
    run = prepare(
        to=to,
        source=source,
        models=models,
        dry_run=dry_run,
        workers=workers,
        batch_size=batch_size,
        limit=limit,
        overwrite=overwrite,
        delete_source=delete_source,
        create_bucket=create_bucket,
        pending=pending,
        until_stable=until_stable,
        max_passes=max_passes,
        pause=pause,
        max_rate=max_rate,
        max_requests=max_requests,
        shard=shard,
    )

    def one_pass() -> MigrationReport:
        migration = Migration(
            run.src,
            run.dst,
            run.targets,
            run.conf,
            dry_run=dry_run,
            limit=limit,
            overwrite=overwrite,
            delete_source=delete_source,
            rewrite_checksums=rewrite_checksums,
            only_pending=pending,
            pk_range=pk_range,
            shard=run.shard,
            on_row=on_row,
            on_start=on_start,
            on_deleted=on_deleted,
        )
        return migration.run()

    if not until_stable or dry_run:  # a dry run changes nothing: one pass predicts them all
        return one_pass()
    return _until_stable(one_pass, max_passes, pause)


def _until_stable(
    one_pass: Callable[[], MigrationReport], max_passes: int, pause: float
) -> MigrationReport:
    """Pending passes, ``pause`` seconds apart, until one copies nothing (the end of a rolling
    deploy: old processes may still be writing to the source) or ``max_passes`` were run. The
    report is the last pass's, with what the earlier ones copied and skipped added: each row
    is counted once, and the problems are those that are still there."""
    earlier: list[MigrationReport] = []
    while True:
        try:
            last = one_pass()
        except (KeyboardInterrupt, DatabaseLost) as exc:
            partial = getattr(exc, "report", None)
            if isinstance(partial, MigrationReport):
                _absorb(partial, earlier, stable=None)
            raise
        if last.copied == 0 or len(earlier) + 1 >= max_passes:
            # One pass alone that copied something shows nothing either way.
            stable = True if last.copied == 0 else (False if earlier else None)
            _absorb(last, earlier, stable=stable)
            return last
        earlier.append(last)
        log.info("pass %d copied %d files; another in %.1f s", len(earlier), last.copied, pause)
        try:
            stopping.sleep(pause)
        except KeyboardInterrupt as exc:  # between two passes: the report of those done
            done = earlier.pop()
            _absorb(done, earlier, stable=None)
            done.interrupted = True
            exc.report = done  # type: ignore[attr-defined]
            raise


def _absorb(last: MigrationReport, earlier: list[MigrationReport], *, stable: bool | None) -> None:
    """Add the earlier passes' copies and skips to the last pass's report (rows copied or
    skipped are recorded at the destination, so a later pending pass does not walk them)."""
    last.passes = [p.pass_totals() for p in [*earlier, last]]
    last.stable = stable
    for report in earlier:
        # Rows of models walked whole are all in the last pass (those an earlier pass copied
        # are skipped there): only the others are added.
        last.rows += report.copied + report.skipped - report.copied_whole - report.skipped_whole
        last.copied += report.copied
        last.copied_server_side += report.copied_server_side
        last.skipped += report.skipped - report.skipped_whole - report.copied_whole
        last.bytes_copied += report.bytes_copied
        last.problems.extend(report.carried)  # rows committed with a problem, not walked again
        report.carried.close()
        report.close()
    notes = [n for report in [*earlier, last] for n in report.notes]
    last.notes = list(dict.fromkeys(notes))
    if earlier:
        last.started_at = earlier[0].started_at
