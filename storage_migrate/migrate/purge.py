"""purge_source: days after a migration, delete (or quarantine) the source files whose copies are
proven at the destination now.

A source file goes only when every row that refers to it (in the walked tables, and in any other
FileField whose storage keeps its files there) records it at the destination in its bucket and
object key columns; the destination holds an object under its name, at least ``min_age`` old,
that is proven at this moment to hold the source's bytes by what no third party can forge (an
ETag the store computed, a part layout, or reading both: never the md5 metadata); the source's
bytes are the ones the rows' stored checksum records; and neither changed between that proof and
the delete (``deletion.delete_source``, the one place a source is deleted). A model without a
bucket column cannot record where its file is: its files stay.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation

from .. import stopping
from ..conf import get_conf
from ..database import check_database
from ..endpoints import proof
from ..endpoints.base import Endpoint, Fingerprint, ObjectInfo
from ..endpoints.factory import endpoint_for
from ..endpoints.places import identity, loose_identity
from ..errors import ConfigurationError, UnsafeName
from ..names import key_reason, unsafe_reason, utf8
from ..report.problems import CHECKSUM_MISMATCH, ERROR, MISSING, UNSAFE_NAME, Problem, now
from ..report.purge import NOT_PROVEN, NOT_RECORDED, PurgeReport
from ..rows import (
    ProgressCallback,
    Row,
    RowResult,
    StartCallback,
    row_columns,
    rows_by_pk,
    stored_digest,
    with_files,
)
from ..targets import Target, resolve_targets
from .deletion import (
    _GONE,
    DeletedCallback,
    DeletionLedger,
    _other_fields,
    delete_source,
    destination_proof,
)
from .plan import refuse_one_place, refuse_unsafe_deletes

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """'7d', '12h', '30m', '45s', '2w' or a number of seconds -> seconds."""
    match = _DURATION.match(text.lower())
    if not match:
        raise ValueError(f"not a duration: {text!r} (examples: 7d, 12h, 30m, 0)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def stat_with_time(endpoint: Endpoint, name: str) -> tuple[ObjectInfo | None, float | None]:
    """What the endpoint holds under the name and when it was last written (POSIX seconds), in
    one request to S3; (None, None) when it holds nothing."""
    info = endpoint.stat(name)
    if info is None or endpoint.kind == "s3":
        return info, None if info is None else info.modified
    try:
        st = os.stat(endpoint.local_path(name) or "")
    except (OSError, ValueError, UnsafeName):
        return info, None
    # The later of the two: a copy restored with its old mtime (cp -p, rsync -a, touch) was
    # still written when its ctime says, which cannot be set back.
    return info, max(st.st_mtime, st.st_ctime)


class Purge:
    """One run. Use purge_source()."""

    def __init__(
        self,
        src: Endpoint,
        dst: Endpoint,
        targets: list[Target],
        *,
        batch_size: int,
        workers: int,
        dry_run: bool,
        min_age: float,
        quarantine: str | None,
        on_deleted: DeletedCallback | None,
        on_row: ProgressCallback | None = None,
        on_start: StartCallback | None = None,
    ) -> None:
        self.src, self.dst, self.targets = src, dst, targets
        self.on_row, self.on_start = on_row, on_start
        self._by_label = {(t.label, t.field_name): t for t in targets}
        self.batch_size, self.dry_run, self.min_age = batch_size, dry_run, min_age
        self.workers, self.quarantine = workers, quarantine
        self.on_deleted = on_deleted
        self.ledger = DeletionLedger()
        self.report = PurgeReport(
            source=src.alias,
            destination=dst.alias,
            dry_run=dry_run,
            min_age=min_age,
            quarantine=quarantine,
        )
        self._others: list[tuple[Target, Endpoint]] = []
        # What a file that goes is called, in the line per file of -v 2.
        done = "quarantine" if quarantine else "delete"
        self._verb = f"would {done}" if dry_run else f"{done}d"

    def run(self) -> PurgeReport:
        try:
            for target in self.targets:
                for batch in rows_by_pk(target, self.batch_size):
                    for row in batch:
                        stopping.check()
                        self._walk(row)
            self._purge()
        except KeyboardInterrupt as exc:
            self.report.interrupted = True
            exc.report = self.report  # type: ignore[attr-defined]
            raise
        finally:
            self.ledger.close()
            self.report.finished_at = now()
        return self.report

    # --- the rows ---------------------------------------------------------------------------

    def _walk(self, row: Row) -> None:
        """A row: a candidate for the purge of its file, or a reason to keep it."""
        self.report.rows += 1
        try:
            reason = unsafe_reason(row.name) or key_reason(self.src.key(row.name))
            if not reason:
                self.src.local_path(row.name)
            ident = identity(self.src, row.name)
        except (UnsafeName, SuspiciousOperation, ValueError) as exc:
            reason = str(exc)
        if reason:
            self.report.problems.append(row.problem(UNSAFE_NAME, f"{reason}; its file stays"))
            loose = loose_identity(self.src, row.name)
            if loose is not None:
                self.ledger.taint(loose)
            return
        detail = self._unrecorded(row.target, row.name, row.meta)
        if detail is not None:
            self.report.problems.append(row.problem(NOT_RECORDED, detail))
            self.ledger.taint(ident)
            return
        self.ledger.add_row(row, ident, stored_digest(row, "checksum") or None)

    def _unrecorded(self, target: Target, name: str, meta: dict[str, Any]) -> str | None:
        """Why the row does not record its file at the destination, or None."""
        columns = target.columns
        if "bucket" not in columns:
            return (
                f"{target.label} has no bucket column: nothing records that its file is at "
                f"{self.dst.alias!r}, so it stays (map one in STORAGE_MIGRATE['METADATA_FIELDS'])"
            )
        if (meta.get("bucket") or "") != self.dst.bucket or (
            "object_key" in columns and meta.get("object_key") != self.dst.key(name)
        ):
            return (
                f"the row does not record its file at {self.dst.alias!r} (not migrated yet: run "
                f"migrate_storage --to {self.dst.alias} --pending); the file stays"
            )
        return None

    # --- the files --------------------------------------------------------------------------

    def _purge(self) -> None:
        """Every file whose rows all qualify: ``batch_size`` files at a time, proven now on the
        workers, the rows that refer to them read again, then deleted (or moved)."""
        ledger = self.ledger
        self._others = _other_fields(self.src, self.targets)
        ledger._block_shared(self.src, self.targets, self._others)
        if self.on_start is not None:
            self.on_start(ledger.count_candidates())
        with ThreadPoolExecutor(self.workers, thread_name_prefix="storage-purge") as pool:
            chunk: list[_Group] = []
            for rows in ledger.candidate_groups():
                stopping.check()  # between two chunks: the rest stay, for the next run
                chunk.append(_Group(rows))
                if len(chunk) >= self.batch_size:
                    self._chunk(pool, chunk)
                    chunk = []
            if chunk:
                self._chunk(pool, chunk)

    def _chunk(self, pool: ThreadPoolExecutor, groups: list[_Group]) -> None:
        try:
            proven = [g for g in groups if g.consistent()]
            self._run_all(pool, proven, self._prove)
            self._reread(proven)
            self._run_all(pool, [g for g in proven if g.kept is None], self._remove)
        except BaseException:
            # Stopped: what was found and done so far is reported; the rest is for a re-run.
            for group in groups:
                if group.kept is not None or group.removed or group.gone:
                    self._record(group)
            raise
        for group in groups:
            self._record(group)

    def _run_all(
        self, pool: ThreadPoolExecutor, groups: list[_Group], step: Callable[[_Group], None]
    ) -> None:
        """``step`` for each group on the workers; stopped (Ctrl-C, SIGTERM), the groups not
        started are dropped, those started finish, and what was done is reported."""
        pending = {pool.submit(step, group): group for group in groups}
        try:
            while pending:
                stopping.check()
                done, _ = wait(pending, timeout=stopping.STOP_POLL, return_when=FIRST_COMPLETED)
                for future in done:
                    group = pending.pop(future)
                    if future.exception() is not None:
                        group.keep(ERROR, f"{future.exception()}; the file stays")
        except BaseException:
            for future in pending:
                future.cancel()
            wait(pending)  # those started finish: a file's names go together
            raise

    def _prove(self, group: _Group) -> None:
        """On a worker: each name of the file proven at the destination, now."""
        for name, checksum in group.checksums.items():
            outcome = self._prove_one(name, checksum)
            if isinstance(outcome, tuple):
                group.keep(*outcome, culprit=name)
                return
            group.proofs[name] = outcome

    def _prove_one(self, name: str, checksum: str | None) -> tuple[str, str] | _Proof | None:
        """The proof of one name, None when it is gone, or why the file stays."""
        src, dst = self.src, self.dst
        fingerprint = src.fingerprint(name)  # before the proof reads the bytes
        source = src.stat(name)
        if fingerprint is None or source is None:
            return None  # gone already: nothing to delete under this name
        dest, written = stat_with_time(dst, name)
        if dest is None:
            return MISSING, f"no object under this name at {dst.alias!r}; the file stays"
        if self.min_age > 0 and (written is None or time.time() - written < self.min_age):
            return _YOUNG, ""
        dest_status = dst.fingerprint(name) if dst.kind != "s3" else None
        # Never the row's checksum as a shortcut: it is what the bytes are checked against.
        proven = proof.same_bytes(src, name, source, dst, name, dest)
        if proven is None:
            return (
                NOT_PROVEN,
                f"the object at {dst.alias!r} is not proven to hold the source's bytes; the "
                "file stays",
            )
        if checksum and proven != checksum:
            return (
                CHECKSUM_MISMATCH,
                "the source's bytes are not the ones the row's checksum records (changed "
                "since it was copied?); the file stays",
            )
        return _Proof(fingerprint, destination_proof(dst, dest, dest_status), source.size)

    def _reread(self, groups: list[_Group]) -> None:
        """In the calling thread, right before the deletes: the rows that refer to these files
        by name, read again. A row created or changed since the walk keeps its file."""
        live = {name: g for g in groups if g.kept is None for name in g.checksums}
        names = sorted(live)
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            for target in self.targets:
                attname = str(target.field.attname)
                rows = with_files(target).filter(**{f"{attname}__in": chunk})
                for values in rows.values_list(*row_columns(target)).iterator():
                    row = Row.from_values(target, values)
                    detail = self._unrecorded(target, row.name, row.meta)
                    group = live.get(row.name)
                    if detail is not None and group is not None and group.kept is None:
                        group.keep(NOT_RECORDED, f"changed during the purge: {detail}")
            for target, _ in self._others:
                attname = str(target.field.attname)
                rows = target.model._base_manager.filter(**{f"{attname}__in": chunk})
                for name in rows.values_list(attname, flat=True).distinct():
                    group = live.get(str(name))
                    if group is not None and group.kept is None:
                        group.keep(
                            NOT_RECORDED,
                            f"a row of {target} refers to this file, and records nothing; the "
                            "file stays",
                        )

    def _remove(self, group: _Group) -> None:
        """On a worker: every name of the file deleted (or moved), links first."""
        names = sorted(group.proofs, key=lambda n: not self._is_link(n))
        counted = False
        for name in names:
            got = group.proofs[name]
            if got is None:
                group.gone.add(name)
                if self.quarantine is not None and not self.dry_run:
                    self.src.finish_quarantine(name, self.quarantine)
                continue
            fingerprint = got.fingerprint
            if group.removed and self.src.kind == "local":
                # Unlinking a hard link of the file changed its ctime: the rest is the proof's.
                current = self.src.fingerprint(name)
                if current is not None and tuple(current[:3]) == tuple(fingerprint[:3]):
                    fingerprint = current
            refusal, size = delete_source(
                self.src,
                self.dst,
                name,
                fingerprint,
                got.proof,
                dry_run=self.dry_run,
                quarantine=self.quarantine,
            )
            if refusal == _GONE:
                group.gone.add(name)
            elif refusal is not None:
                group.keep(ERROR, refusal.replace("(run again)", "(run purge_source again)"), name)
                return
            else:
                link = self._is_link(name)
                group.removed[name] = 0 if link or counted else size
                counted = counted or not link

    def _is_link(self, name: str) -> bool:
        if self.src.kind != "local":
            return False
        try:
            return os.path.islink(self.src.local_path(name) or "")
        except (OSError, UnsafeName, ValueError):
            return False

    def _record(self, group: _Group) -> None:
        """In the calling thread: each name's outcome into the report (once)."""
        if group.recorded:
            return
        group.recorded = True
        report = self.report
        for label, field, pk, name in group.wheres():
            report.files += 1
            where = Problem("", label, field, pk, name, "")
            kind: str | None
            if name in group.removed:
                kind, size = None, group.removed[name]
                report.purged += 1
                report.bytes_purged += size
                if self.on_deleted is not None:
                    self.on_deleted(where, size)
            elif name in group.gone or (group.kept is None and group.proofs.get(name) is None):
                kind, size = _GONE, 0
                report.gone += 1
            else:
                kind, size = group.kept or ERROR, 0
                if kind == _YOUNG:
                    report.too_young += 1
                else:
                    detail = group.detail_for(name)
                    report.problems.append(Problem(kind, label, field, pk, name, detail))
            if self.on_row is not None:
                row = Row(self._by_label[(label, field)], pk, name, {})
                self.on_row(RowResult(row, self._verb if kind is None else kind, bytes=size))


class _Proof:
    """What a name's proof found: the source as read, what must still hold at the
    destination, and the size."""

    def __init__(self, fingerprint: Fingerprint, proof: list[Any] | None, size: int) -> None:
        self.fingerprint, self.proof, self.size = fingerprint, proof, size


class _Group:
    """One stored file and the names its rows give it (a symlink, a hard link, another
    spelling): proven, kept and deleted together."""

    def __init__(self, rows: list[tuple[str, str, Any, str, Any]]) -> None:
        self.rows = rows
        self.checksums: dict[str, str | None] = {}
        for _, _, _, name, checksum in rows:
            if name not in self.checksums or checksum:
                self.checksums[name] = checksum
        self.proofs: dict[str, _Proof | None] = {}
        self.removed: dict[str, int] = {}
        self.gone: set[str] = set()
        self.kept: str | None = None
        self._detail = ""
        self._culprit: str | None = None
        self.recorded = False

    def consistent(self) -> bool:
        """Rows that record different checksums for one file keep it."""
        if len({c for c in self.checksums.values() if c}) > 1:
            self.keep(
                CHECKSUM_MISMATCH,
                "rows that share this file record different checksums; the file stays",
            )
            return False
        return True

    def keep(self, kind: str, detail: str, culprit: str | None = None) -> None:
        if self.kept is None:
            self.kept, self._detail, self._culprit = kind, detail, culprit

    def wheres(self) -> Iterator[tuple[str, str, Any, str]]:
        """One row per name (the first by primary key)."""
        seen: set[str] = set()
        for label, field, pk, name, _ in self.rows:
            if name not in seen:
                seen.add(name)
                yield label, field, pk, name

    def detail_for(self, name: str) -> str:
        if self._culprit is None or self._culprit == name:
            return self._detail
        return f"it is one file with {self._culprit!r}, which stays: {self._detail}"


_YOUNG = "too_young"


def purge_source(
    *,
    source: str,
    verified_against: str,
    models: list[str] | tuple[str, ...] | None = None,
    dry_run: bool = False,
    min_age: float = 0.0,
    quarantine: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    on_deleted: DeletedCallback | None = None,
    on_row: ProgressCallback | None = None,
    on_start: StartCallback | None = None,
) -> PurgeReport:
    """Delete from ``source`` (or move under ``quarantine``) each file whose rows all record it
    at ``verified_against``, where a copy at least ``min_age`` seconds old is proven to hold its
    bytes now. Raises ConfigurationError before anything is deleted."""
    try:
        conf = get_conf(BATCH_SIZE=batch_size, WORKERS=workers)
        if source == verified_against:
            raise ConfigurationError(f"--from and --verified-against are one alias ({source!r})")
        if not math.isfinite(min_age) or min_age < 0:
            raise ConfigurationError(f"min_age must be 0 or more seconds, not {min_age}")
        if quarantine is not None:
            parts = quarantine.strip("/").split("/")
            if not quarantine.strip("/") or any(part in ("", ".", "..") for part in parts):
                raise ConfigurationError(
                    f"--quarantine {quarantine!r}: a folder or prefix inside the storage is "
                    "needed (not its root, no '.' or '..' and no empty part)"
                )
            bad = unsafe_reason(f"{quarantine.strip('/')}/x") or next(
                (f"a part of {len(utf8(p))} bytes" for p in parts if len(utf8(p)) > 200), None
            )
            if bad:
                raise ConfigurationError(f"--quarantine {quarantine!r}: {bad}")
        src = endpoint_for(source, conf)
        dst = endpoint_for(verified_against, conf)
        refuse_one_place(src, dst, probe=False, destructive=True)
        refuse_unsafe_deletes(src, dst, None, what="purge_source", instead="delete by hand")
        targets = resolve_targets(models, conf)
    except ImproperlyConfigured as exc:
        raise ConfigurationError(str(exc)) from exc
    if quarantine is not None:
        _refuse_walked_quarantine(quarantine, targets, src)
    check_database(targets)
    src.preflight(as_source=True)
    dst.preflight(as_source=True)
    refuse_one_place(src, dst, probe=True, destructive=True)
    purge = Purge(
        src,
        dst,
        targets,
        batch_size=conf.BATCH_SIZE,
        workers=conf.WORKERS,
        dry_run=dry_run,
        min_age=min_age,
        quarantine=quarantine,
        on_deleted=on_deleted,
        on_row=on_row,
        on_start=on_start,
    )
    return purge.run()


def _refuse_walked_quarantine(quarantine: str, targets: list[Target], src: Endpoint) -> None:
    """A quarantine inside an upload folder (of a walked field, or of any other that keeps its
    files where the source does) would hold files that a later run takes for that field's."""
    from ..targets import upload_prefix

    folder = quarantine.strip("/") + "/"
    for target in [*targets, *(t for t, _ in _other_fields(src, targets))]:
        prefix = upload_prefix(target)
        if prefix and (folder.startswith(prefix) or prefix.startswith(folder)):
            raise ConfigurationError(
                f"--quarantine {quarantine!r} overlaps the upload folder of {target} "
                f"({prefix!r}): choose a folder elsewhere"
            )
