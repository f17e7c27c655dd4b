"""Before a row is copied: what it needs (what the destination holds under its name: one
listing per batch, or, for a run that walks many rows, one listing of the destination's folder
looked up batch by batch), whether its name is safe, and the refusals of a run that could lose files
(two aliases that are one place, --delete-source where no delete can be proven safe). With
--shard, only the rows of this process's shard are walked, counted and reported."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.db.models import CharField, F, Q, QuerySet, Value
from django.db.models.functions import Concat

from ..conf import Conf
from ..endpoints.base import Endpoint
from ..endpoints.places import identity, loose_identity, overlap
from ..endpoints.s3 import S3Endpoint
from ..endpoints.s3index import ListedIndex, list_once
from ..endpoints.s3write import conditional_writes
from ..errors import ConfigurationError, UnsafeName
from ..names import key_reason, unsafe_reason
from ..report.migration import MigrationReport
from ..report.problems import UNSAFE_NAME
from ..rows import (
    UNKNOWN,
    Planned,
    Row,
    RowResult,
    rows_by_pk,
    with_files,
)
from ..shards import Shard
from ..targets import Target, upload_prefix
from .deletion import DeletionLedger

DEFAULT_PAIRS = {"s3": "local", "local": "s3"}
# A run walking at least this many rows lists the destination's folder once instead of batch by
# batch, unless the folder holds more than INDEX_OBJECTS_PER_ROW objects a row (plus the
# minimum): then the batches are listed as before.
INDEX_MIN_ROWS = 1000
INDEX_OBJECTS_PER_ROW = 4


@dataclass(frozen=True)
class PkRange:
    """Rows whose primary key is between ``low`` and ``high``, both included: one batch of a
    run split across processes (migrate_storage --enqueue)."""

    low: Any
    high: Any


class Planner:
    """Migration's planning: the rows, batch by batch, each with what the destination holds."""

    src: Endpoint
    dst: Endpoint
    targets: list[Target]
    conf: Conf
    limit: int | None
    shard: Shard | None
    ledger: DeletionLedger | None
    _empty_at_start: bool | None
    _row_count: int | None
    _indexes: dict[str, ListedIndex | None]

    _maybe_commit: Callable[[], None]  # Committer's

    only_pending: bool
    pk_range: PkRange | None
    report: MigrationReport

    def rows_of(self, target: Target) -> QuerySet[Any]:
        """The rows to walk: those with a file (within pk_range, if one is given); with
        --pending, only those whose metadata columns do not record them at the destination (a
        model without a bucket column is walked whole, and the report says so)."""
        rows = with_files(target)
        if self.pk_range is not None:
            rows = rows.filter(pk__gte=self.pk_range.low, pk__lte=self.pk_range.high)
        if not self.only_pending:
            return rows
        recorded = recorded_at(target, self.dst, self.src)
        if recorded is None:
            if str(target) not in self.report.walked_whole:
                self.report.walked_whole.append(str(target))
            return rows
        return rows.exclude(recorded)

    def count_rows(self) -> int:
        """The rows this run will walk (for a progress bar: a count is a scan of the table)."""
        if self._row_count is None:
            self._row_count = self._count_rows()
        return self._row_count

    def _count_rows(self) -> int:
        total = 0
        for target in self.targets:
            rows = self.rows_of(target)
            if self.shard is None:
                total += rows.count()
            else:
                # A row's shard is known only from its name, in Python: the rows are read as
                # the run reads them (primary-key batches, so memory stays bounded).
                batches = rows_by_pk(target, self.conf.BATCH_SIZE, rows)
                total += sum(len(self._ours(batch)) for batch in batches)
        return total if self.limit is None else min(total, self.limit)

    def _ours(self, batch: list[Row]) -> list[Row]:
        """The rows of the batch in this process's shard (all of them without --shard)."""
        shard = self.shard
        return batch if shard is None else [row for row in batch if shard.holds(row.name)]

    def _destination_was_empty(self) -> bool:
        """A destination that held nothing under the walked fields' folders when the run began
        needs no listing: every object in it since is this run's, or appeared under a
        conditional write (If-None-Match), which refuses to replace it. Stores without
        conditional writes are listed as usual."""
        if self._empty_at_start is None:
            prefixes = {upload_prefix(t) for t in self.targets}
            self._empty_at_start = self.dst.kind == "s3" and all(
                self.dst.is_empty(p or "") for p in prefixes
            )
        return self._empty_at_start and conditional_writes(self.dst)

    def _planned_rows(self) -> Iterator[tuple[Row, Planned | RowResult]]:
        """Each row with what the destination holds under its name (one listing per batch where
        the destination can list), or a RowResult already decided."""
        remaining = self.limit
        for target in self.targets:
            for batch in rows_by_pk(target, self.conf.BATCH_SIZE, self.rows_of(target)):
                batch = self._ours(batch)
                if not batch:  # all another shard's: nothing to list, only commits to keep up
                    self._maybe_commit()
                    continue
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
                    infos = self._destination_infos(target, safe)
                except Exception:
                    # A listing that fails is no reason to stop: each row asks for itself,
                    # and a failure then lands on that row.
                    infos = dict.fromkeys((r.name for r in safe), UNKNOWN)
                for row in safe:
                    yield row, infos[row.name]
                self._maybe_commit()
                if remaining is not None and remaining <= 0:
                    return

    def _destination_infos(self, target: Target, safe: list[Row]) -> dict[str, Planned]:
        """What the destination holds under each row's name: what the folder's one listing said
        (a name it did not hold is asked again where the store has no conditional writes, which
        alone keep an object that appeared since from being replaced); else nothing, where the
        destination was empty; else one listing of the batch's key range."""
        names = sorted({r.name for r in safe})
        index = self._index_of(target)
        if index is None:
            if self._destination_was_empty():
                return dict.fromkeys(names, None)
            return dict(self.dst.stat_many(names))
        # (An index of a folder that was empty tells what the emptiness check would.)
        infos: dict[str, Planned] = {}
        ask: list[str] = []
        conditional = conditional_writes(self.dst)
        found = index.lookup(names)
        for name in names:
            info = found.get(name, UNKNOWN)
            if info is UNKNOWN or (info is None and not conditional):
                ask.append(name)
            else:
                infos[name] = info
        if ask:
            infos.update(self.dst.stat_many(ask))
        return infos

    def _index_of(self, target: Target) -> ListedIndex | None:
        """The destination folder of the target's files listed once, where the run walks enough
        rows for that to be cheaper than a listing per batch (not for one batch of a run split
        across processes: each would list the whole folder)."""
        dst = self.dst
        if not isinstance(dst, S3Endpoint) or dst.assume_empty or self.pk_range is not None:
            return None
        prefix = dst.key_prefix + (upload_prefix(target) or "")
        if prefix not in self._indexes:
            rows = self.count_rows()
            if rows < INDEX_MIN_ROWS:
                self._indexes[prefix] = None
            else:
                cap = INDEX_MIN_ROWS + INDEX_OBJECTS_PER_ROW * rows
                self._indexes[prefix] = list_once(dst, prefix, cap)
        return self._indexes[prefix]

    def close_indexes(self) -> None:
        for index in self._indexes.values():
            if index is not None:
                index.close()
        self._indexes.clear()

    def _unsafe(self, row: Row) -> str | None:
        reason = self._unsafe_reason(row)
        if reason and self.ledger is not None:
            row.source_id = loose_identity(self.src, row.name)  # what it shares stays
        return reason

    def _unsafe_reason(self, row: Row) -> str | None:
        reason = unsafe_reason(row.name)
        if reason:
            return reason
        try:
            for endpoint in (self.src, self.dst):
                reason = key_reason(endpoint.key(row.name))
                if reason:
                    return reason
                endpoint.local_path(row.name)
            row.key = self.dst.key(row.name)
            if self.ledger is not None:
                row.source_id = identity(self.src, row.name)
        except UnsafeName as exc:
            return str(exc)
        except (SuspiciousOperation, ValueError) as exc:
            return f"name leaves the storage's root ({exc.__class__.__name__})"
        return None


def refuse_one_place(src: Endpoint, dst: Endpoint, *, probe: bool, destructive: bool) -> None:
    """One place is always refused; one inside the other, and a place that cannot be told
    apart, only where the run may delete or replace something."""
    same = overlap(src, dst, probe=probe, nested=destructive, certain=destructive)
    if same:
        raise ConfigurationError(
            f"{same}: a migration between them would move files onto themselves "
            "(choose a destination elsewhere)."
        )


def refuse_unsafe_deletes(
    src: Endpoint,
    dst: Endpoint,
    limit: int | None,
    pending: bool = False,
    shard: Shard | None = None,
    *,
    what: str = "--delete-source",
    instead: str = "copy without --delete-source",
) -> None:
    """--delete-source (and purge_source) only where a delete can be proven safe."""
    for endpoint in (src, dst):
        if endpoint.kind not in ("local", "s3"):
            raise ConfigurationError(
                f"{what} works between local disk and S3 storages only: storage "
                f"{endpoint.alias!r} ({type(endpoint.storage).__name__}) cannot be proven to "
                f"keep its files elsewhere ({instead})."
            )
    if limit is not None:
        raise ConfigurationError(
            "--delete-source walks whole tables (a row beyond --limit may share a file with "
            "one within it): drop --limit, or copy without --delete-source."
        )
    if pending:
        raise ConfigurationError(
            "--delete-source walks whole tables (a row --pending leaves out may share a file "
            "with one it walks): drop --pending, or copy without --delete-source."
        )
    if shard is not None:
        raise ConfigurationError(
            "--delete-source walks whole tables (a file's other names, a hard link or a "
            "symlink, may be in another shard): drop --delete-source, and run purge_source "
            "once every shard is done."
        )


def recorded_at(target: Target, dst: Endpoint, src: Endpoint | None = None) -> Q | None:
    """The rows whose metadata columns say that their file is at the destination: its bucket
    (empty for local disk) and, where the model has the column, the object key the destination
    keeps the name under. None when the model has no bucket column (an object key alone cannot
    tell local disk from a bucket without a prefix), and when either storage is neither local
    disk nor S3 (its rows record an empty bucket and the name, as local disk's do)."""
    columns = target.columns
    if "bucket" not in columns:
        return None
    if any(e is not None and e.kind not in ("local", "s3") for e in (dst, src)):
        return None
    recorded = Q(**{columns["bucket"]: dst.bucket})
    if "object_key" in columns:
        name = F(str(target.field.attname))
        prefix = str(getattr(dst, "key_prefix", "") or "")
        key = Concat(Value(prefix), name, output_field=CharField()) if prefix else name
        recorded &= Q(**{columns["object_key"]: key})
    return recorded
