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

import os
import re
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation

from .. import stopping
from ..conf import get_conf
from ..database import check_database
from ..endpoints import proof
from ..endpoints.base import Endpoint, ObjectInfo
from ..endpoints.factory import endpoint_for
from ..endpoints.places import identity, loose_identity
from ..errors import ConfigurationError, UnsafeName
from ..names import key_reason, unsafe_reason
from ..report.problems import CHECKSUM_MISMATCH, ERROR, MISSING, UNSAFE_NAME, Problem, now
from ..report.purge import NOT_PROVEN, NOT_RECORDED, PurgeReport
from ..rows import ProgressCallback, Row, RowResult, StartCallback, rows_by_pk
from ..targets import Target, resolve_targets
from .deletion import _GONE, DeletedCallback, DeletionLedger, delete_source, destination_proof
from .plan import refuse_one_place, refuse_unsafe_deletes

# A file's outcome: its problem kind (None: it went; _GONE, _YOUNG: counted), detail, size.
_Outcome = tuple[str | None, str, int]
# Which row a file's outcome is reported on: model label, field, pk, name.
_Where = tuple[str, str, Any, str]
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
    if endpoint.kind == "s3":
        from botocore.exceptions import ClientError

        from ..endpoints.s3 import S3Endpoint

        assert isinstance(endpoint, S3Endpoint)
        try:
            head = endpoint.client.head_object(
                Bucket=endpoint.bucket, Key=endpoint.key(name), **endpoint.read_params
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None, None
            raise
        stamp: datetime = head["LastModified"]
        return endpoint.info_from_head(head), stamp.timestamp()
    info = endpoint.stat(name)
    if info is None:
        return None, None
    try:
        return info, os.stat(endpoint.local_path(name) or "").st_mtime
    except (OSError, ValueError, UnsafeName):
        return info, None


def quarantine_into(src: Endpoint, prefix: str) -> Callable[[str], None]:
    """What removes a source under --quarantine: it is moved to ``prefix/name`` in the same
    storage (never over anything there), and removed from its place only once it is there."""
    prefix = prefix.strip("/")

    def move(name: str) -> None:
        target = f"{prefix}/{name}"
        if src.kind == "local":
            old, new = str(src.local_path(name)), str(src.local_path(target))
            os.makedirs(os.path.dirname(new), exist_ok=True)
            os.link(old, new)  # fails if the quarantine already holds the name
            os.unlink(old)
            return
        from ..endpoints.s3 import S3Endpoint

        assert isinstance(src, S3Endpoint)
        client = src.client
        source_key, key = src.key(name), src.key(target)
        if src.stat(target) is not None:
            raise FileExistsError(f"the quarantine already holds {key!r}")
        head = client.head_object(Bucket=src.bucket, Key=source_key)
        client.copy(  # the transfer manager: a server-side copy, multipart when large
            {"Bucket": src.bucket, "Key": source_key},
            src.bucket,
            key,
            ExtraArgs={"CopySourceIfMatch": head["ETag"], "MetadataDirective": "COPY"},
        )
        moved = src.stat(target)
        if moved is None or moved.size != int(head["ContentLength"]):
            raise OSError(f"the copy into the quarantine ({key!r}) is not the source's size")
        src.delete(name)

    return move


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
        self.workers = workers
        self.remove = quarantine_into(src, quarantine) if quarantine else None
        self.on_deleted = on_deleted
        self.ledger = DeletionLedger()
        self.report = PurgeReport(
            source=src.alias,
            destination=dst.alias,
            dry_run=dry_run,
            min_age=min_age,
            quarantine=quarantine,
        )
        self._checksums: dict[str, str] = {}
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
        except (KeyboardInterrupt, Exception) as exc:
            if isinstance(exc, KeyboardInterrupt):
                self.report.interrupted = True
                exc.report = self.report  # type: ignore[attr-defined]
            raise
        finally:
            self.ledger.close()
            self.report.finished_at = now()
        return self.report

    def _problem(self, row: Row, kind: str, detail: str) -> None:
        self.report.problems.append(row.problem(kind, detail))

    def _walk(self, row: Row) -> None:
        """A row: a candidate for the purge of its file, or a reason to keep it."""
        report = self.report
        report.rows += 1
        try:
            reason = unsafe_reason(row.name) or key_reason(self.src.key(row.name))
            if not reason:
                self.src.local_path(row.name)
            ident = identity(self.src, row.name)
        except (UnsafeName, SuspiciousOperation, ValueError) as exc:
            reason = str(exc)
        if reason:
            self._problem(row, UNSAFE_NAME, f"{reason}; its file stays")
            loose = loose_identity(self.src, row.name)
            if loose is not None:
                self.ledger.taint(loose)
            return
        columns = row.target.columns
        detail = None
        if "bucket" not in columns:
            detail = (
                f"{row.target.label} has no bucket column: nothing records that its file is at "
                f"{self.dst.alias!r}, so it stays (map one in STORAGE_MIGRATE['METADATA_FIELDS'])"
            )
        elif (row.meta.get("bucket") or "") != self.dst.bucket or (
            "object_key" in columns and row.meta.get("object_key") != self.dst.key(row.name)
        ):
            detail = (
                f"the row does not record its file at {self.dst.alias!r} (not migrated yet: run "
                f"migrate_storage --to {self.dst.alias} --pending); the file stays"
            )
        checksum = (row.meta.get("checksum") or "").lower()
        known = self._checksums.setdefault(row.name, checksum) if checksum else ""
        if detail is None and known and known != checksum:
            detail = "rows that share this file record different checksums; the file stays"
        if detail is not None:
            self._problem(row, NOT_RECORDED, detail)
            self.ledger.taint(ident)
            return
        self.ledger.add_row(row, ident, checksum or None)

    def _purge(self) -> None:
        """Every file whose rows all qualify, proven now, then deleted (or moved): ``workers``
        files at a time, each on its own (the rows that share a file were grouped before)."""
        ledger = self.ledger
        ledger._block_shared(self.src, self.targets)
        if self.on_start is not None:
            self.on_start(ledger.count_candidates())
        window = self.workers * 4
        pending: dict[Future[_Outcome], _Where] = {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="storage-purge") as pool:
            try:
                for label, field, pk, name, checksum in ledger.candidates():
                    stopping.check()  # between two files: the rest stay, for the next run
                    pending[pool.submit(self._one_safely, name, checksum)] = (
                        label,
                        field,
                        pk,
                        name,
                    )
                    while len(pending) >= window:
                        self._collect(pending)
                while pending:
                    self._collect(pending)
            except BaseException:
                # Stopped: files not started stay; those being deleted finish, and are counted.
                for future in pending:
                    future.cancel()
                pool.shutdown(wait=True)
                for future, where in pending.items():
                    if not future.cancelled():
                        self._record(where, future.result())
                raise

    def _collect(self, pending: dict[Future[_Outcome], _Where]) -> None:
        stopping.check()
        done, _ = wait(pending, timeout=stopping.STOP_POLL, return_when=FIRST_COMPLETED)
        for future in done:
            self._record(pending.pop(future), future.result())

    def _record(self, where: _Where, outcome: _Outcome) -> None:
        """In the calling thread: a file's outcome into the report."""
        label, field, pk, name = where
        kind, detail, size = outcome
        report = self.report
        report.files += 1
        if kind is None:
            report.purged += 1
            report.bytes_purged += size
            if self.on_deleted is not None:
                self.on_deleted(Problem("deleted", label, field, pk, name, ""), size)
        elif kind == _GONE:
            report.gone += 1
        elif kind == _YOUNG:
            report.too_young += 1
        else:
            report.problems.append(Problem(kind, label, field, pk, name, detail))
        if self.on_row is not None:
            row = Row(self._by_label[(label, field)], pk, name, {})
            self.on_row(RowResult(row, self._verb if kind is None else str(kind), bytes=size))

    def _one_safely(self, name: str, checksum: str | None) -> _Outcome:
        """On a worker: one file; an error is the file's, and it stays."""
        try:
            return self._one(name, checksum)
        except Exception as exc:
            return ERROR, f"{exc.__class__.__name__}: {exc}; the file stays", 0

    def _one(self, name: str, checksum: str | None) -> _Outcome:
        src, dst = self.src, self.dst
        fingerprint = src.fingerprint(name)  # before the proof reads the bytes
        source = src.stat(name)
        if fingerprint is None or source is None:
            return _GONE, "", 0
        dest, written = stat_with_time(dst, name)
        if dest is None:
            return MISSING, f"no object under this name at {dst.alias!r}; the file stays", 0
        if self.min_age > 0 and (written is None or time.time() - written < self.min_age):
            return _YOUNG, "", 0
        dest_status = dst.fingerprint(name) if dst.kind != "s3" else None
        proven = proof.same_bytes(src, name, source, dst, name, dest, known_md5=checksum)
        if proven is None:
            return (
                NOT_PROVEN,
                f"the object at {dst.alias!r} is not proven to hold the source's bytes; the "
                "file stays",
                0,
            )
        if checksum and proven != checksum:
            return (
                CHECKSUM_MISMATCH,
                "the source's bytes are not the ones the row's checksum records (changed "
                "since it was copied?); the file stays",
                0,
            )
        refusal, size = delete_source(
            src,
            dst,
            name,
            fingerprint,
            destination_proof(dst, dest, dest_status),
            dry_run=self.dry_run,
            remove=self.remove,
        )
        if refusal is None:
            return None, "", size
        if refusal == _GONE:
            return _GONE, "", 0
        return ERROR, refusal.replace("(run again)", "(run purge_source again)"), 0


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
        if min_age < 0:
            raise ConfigurationError("min_age must be 0 or more seconds")
        if quarantine is not None:
            parts = quarantine.strip("/").split("/")
            if not quarantine.strip("/") or any(part in ("", ".", "..") for part in parts):
                raise ConfigurationError(
                    f"--quarantine {quarantine!r}: a folder or prefix inside the storage is "
                    "needed (not its root, no '.' or '..' and no empty part)"
                )
        src = endpoint_for(source, conf)
        dst = endpoint_for(verified_against, conf)
        refuse_one_place(src, dst, probe=False, destructive=True)
        refuse_unsafe_deletes(src, dst, None, what="purge_source", instead="delete by hand")
        targets = resolve_targets(models, conf)
    except ImproperlyConfigured as exc:
        raise ConfigurationError(str(exc)) from exc
    if quarantine is not None:
        _refuse_walked_quarantine(quarantine, targets)
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


def _refuse_walked_quarantine(quarantine: str, targets: list[Target]) -> None:
    """A quarantine inside a walked field's upload folder would hold files the next run walks."""
    from ..targets import upload_prefix

    folder = quarantine.strip("/") + "/"
    for target in targets:
        prefix = upload_prefix(target)
        if prefix and (folder.startswith(prefix) or prefix.startswith(folder)):
            raise ConfigurationError(
                f"--quarantine {quarantine!r} overlaps the upload folder of {target} "
                f"({prefix!r}): choose a folder elsewhere"
            )
