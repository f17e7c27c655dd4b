"""One row, on a worker thread: skip it if the destination already holds its bytes, else copy
and verify it, or say why not. Only storages are touched here, never the database."""

from __future__ import annotations

import mimetypes
from collections import deque
from collections.abc import Callable
from typing import Any

from ..conf import Conf
from ..endpoints.base import Endpoint, Fingerprint, ObjectInfo
from ..endpoints.generic import StorageEndpoint
from ..endpoints.proof import etag_proves, holds, same_bytes
from ..endpoints.s3copy import copies_server_side
from ..endpoints.transfer import start_copy_file
from ..errors import RowError, SourceMissing, Unverifiable, VerificationFailed
from ..hashing import NAMES
from ..report.problems import (
    AT_DESTINATION,
    CHECKSUM_MISMATCH,
    CONFLICT,
    COPIED,
    ERROR,
    SIZE_MISMATCH,
    SKIPPED,
)
from ..rows import Planned, Row, RowResult, _Unknown, stored_digest, stored_others
from ..targets import unfit
from .cost import predict_copy
from .deletion import destination_proof


class RowCopier:
    """Decides and does one row's copy; the run's options, and nothing that changes."""

    def __init__(
        self,
        source: Endpoint,
        destination: Endpoint,
        conf: Conf,
        *,
        dry_run: bool,
        overwrite: bool,
        delete_source: bool,
        rewrite_checksums: bool,
    ) -> None:
        self.src, self.dst, self.conf = source, destination, conf
        self.dry_run, self.overwrite = dry_run, overwrite
        self.delete_source, self.rewrite_checksums = delete_source, rewrite_checksums
        # Fingerprint local sources around each copy (cheap); S3 sources only before deleting.
        self._fingerprint = delete_source or source.kind == "local"
        # Two S3 storages on one store: the copies stay inside it.
        self.server_side = copies_server_side(source, destination, conf)

    def process_many(
        self, items: list[tuple[Row, Planned]], in_flight: int | None = None
    ) -> list[RowResult]:
        """Several rows, in order, with up to ``in_flight`` of them started (sources read,
        writes sent) before the oldest is waited for: one thread keeps many transfers going."""
        limit = in_flight or len(items)
        results: list[RowResult] = []
        started: deque[Callable[[], RowResult]] = deque()
        for row, planned in items:
            if len(started) >= limit:
                results.append(started.popleft()())
            started.append(self.start(row, planned))
        results.extend(finish() for finish in started)
        return results

    def start(self, row: Row, planned: Planned) -> Callable[[], RowResult]:
        """Start one row's work; the returned callable waits for it and returns its result, and
        never raises (a row's failure never stops the run)."""
        try:
            dest = self.dst.stat(row.name) if isinstance(planned, _Unknown) else planned
            if dest is not None:
                result = self._existing(row, dest)
                return lambda: result
            waiting = self._start_copy(row, existed=False)
        except Exception as exc:
            failed = self._failed(row, exc)
            return lambda: failed

        def finish() -> RowResult:
            try:
                return waiting()
            except Exception as exc:
                return self._failed(row, exc)

        return finish

    @staticmethod
    def _failed(row: Row, exc: Exception) -> RowResult:
        if isinstance(exc, RowError):
            return RowResult(row, exc.kind, problems=[row.problem(exc.kind, str(exc))])
        detail = f"{exc.__class__.__name__}: {exc}"
        return RowResult(row, ERROR, problems=[row.problem(ERROR, detail)])

    def _existing(self, row: Row, dest: ObjectInfo) -> RowResult:
        """The destination already has an object under this name: skip it when it is proven to
        hold the source's bytes, else it is a conflict (or, with --overwrite, copy over it)."""
        size, checksum = row.meta.get("file_size"), stored_digest(row, "checksum")
        # The shortcut trusts the row's checksum (the database is trusted) where the object's
        # ETag proves its MD5; before deleting a source, the source is read too.
        if (
            not self.delete_source
            and checksum
            and size is not None
            and dest.size == size
            and (
                etag_proves(self.dst, row.name, dest, checksum)
                if self.dst.kind == "s3"  # a multipart object is proven from the source
                else holds(self.dst, row.name, dest, checksum)
            )
        ):
            self._finished(row)
            return self._result(row, SKIPPED, size=dest.size, md5=checksum, dest=dest)
        fingerprint = self.src.fingerprint(row.name) if self._fingerprint else None
        source = self.src.stat(row.name)
        if source is None:
            return self._source_gone(row, dest)
        if source.size == dest.size:
            # Taken before the bytes are read to prove them: a file replaced afterwards does not
            # match it when the source is about to be deleted.
            dest_status = self.dst.fingerprint(row.name) if self._deletes_here() else None
            others: dict[str, str] | None = None
            if stored_others(row):
                # The row keeps a SHA-1 or SHA-256: the source is read once for every digest,
                # so that a skip compares them as a copy would (and a file that contradicts
                # them is never taken for the row's, nor deleted).
                digest = self.src.hash(row.name, also=row.target.others)
                same = digest.size == dest.size and holds(self.dst, row.name, dest, digest.md5)
                proven, others = (digest.md5 if same else None), digest.others
            else:
                proven = same_bytes(
                    self.src, row.name, source, self.dst, row.name, dest, known_md5=checksum or None
                )
            if proven:
                self._unchanged(row, fingerprint)
                self._finished(row)
                result = self._result(
                    row, SKIPPED, size=source.size, md5=proven, dest=dest, others=others
                )
                result.fingerprint = fingerprint
                result.dest_proof = destination_proof(self.dst, dest, dest_status)
                return result
        if isinstance(self.dst, StorageEndpoint) and self.dst.is_leftover(
            row.name, dest, self.src, source
        ):
            # What a killed run left half written (see StorageEndpoint.is_leftover): nothing of
            # it is lost when it is replaced.
            if not self.dry_run:
                self.dst.storage.delete(row.name)
            return self._start_copy(row, existed=False, source=source)()
        if not self.overwrite:
            detail = (
                "destination holds a different object under this name (--overwrite replaces it)"
            )
            conflict = row.problem(CONFLICT, detail, expected=source.size, actual=dest.size)
            return RowResult(row, CONFLICT, problems=[conflict])
        return self._start_copy(row, existed=True, source=source)()

    def _finished(self, row: Row) -> None:
        """A skip proved the destination's file whole: a killed run's mark of its copy as in
        progress (taken after the write, before the mark was removed) goes."""
        dst = self.dst
        if isinstance(dst, StorageEndpoint) and not self.dry_run and dst.was_partial(row.name):
            dst.clear_partial(row.name)

    def _source_gone(self, row: Row, dest: ObjectInfo) -> RowResult:
        """No source, but an object at the destination: a row migrated by an earlier run whose
        source was deleted is `skipped` when the object is proven to hold what the row's stored
        checksum says, and `missing` when it is not. Without a checksum nothing can prove it
        (the md5 metadata is a hint anyone can write): the row is `at_destination` (a file
        uploaded after the switch, where the app now reads it; counted, not a problem) and
        nothing is taken from the object, or `missing` when its size is not the row's. A
        model with no checksum column at all, whose rows take nothing from the object anyway,
        is `skipped` when the object carries this tool's md5 metadata and matches it."""
        size, checksum = row.meta.get("file_size"), stored_digest(row, "checksum")
        if checksum:
            if (size is None or size == dest.size) and holds(self.dst, row.name, dest, checksum):
                return self._result(row, SKIPPED, size=dest.size, md5=checksum, dest=dest)
            raise SourceMissing(
                "source file does not exist (the object at the destination does not match the "
                "stored checksum)"
            )
        others = stored_others(row)
        if others:
            # No MD5, but a SHA-1 or SHA-256 (Wagtail's file_hash): the object is read, and is
            # the row's file only when it has every digest the row stores.
            digest = self.dst.hash(row.name, also=row.target.others)
            if (size is None or size == digest.size) and all(
                digest.of(a) == v for a, v in others.items()
            ):
                return self._result(
                    row, SKIPPED, size=digest.size, md5=digest.md5, dest=dest, others=digest.others
                )
            raise SourceMissing(
                "source file does not exist (the object at the destination does not match the "
                "stored " + ", ".join(NAMES[a] for a in others) + ")"
            )
        if "checksum" not in row.target.columns:
            # A model with no checksum column: nothing can ever be proven of its moved files,
            # and nothing of the object will be written to the row. A re-run after
            # --delete-source converges on this tool's md5 metadata matching the bytes (a hint).
            headed = self.dst.head(row.name, dest)
            hint = headed.meta_md5
            if hint and holds(self.dst, row.name, headed, hint):
                return RowResult(row, SKIPPED, dest=headed)
        if size is not None and size != dest.size:
            raise SourceMissing(
                "source file does not exist (the object at the destination is not the size the "
                "row records)"
            )
        # An upload made after the switch, written where the app now reads: not a problem of
        # the move. Nothing proves the object is the row's file, so nothing is taken from it.
        return RowResult(row, AT_DESTINATION, dest=dest)

    def _deletes_here(self) -> bool:
        """Will a skip's proof be what a delete rests on, at a destination without ETags?"""
        return self.delete_source and self.dst.kind != "s3"

    def _unchanged(self, row: Row, before: Fingerprint | None) -> None:
        if self._fingerprint and self.src.fingerprint(row.name) != before:
            raise VerificationFailed("source changed while it was read; run again")

    def _start_copy(
        self, row: Row, *, existed: bool, source: ObjectInfo | None = None
    ) -> Callable[[], RowResult]:
        if self.dry_run:
            source = source or self.src.stat(row.name)
            if source is None:
                raise SourceMissing("source file does not exist")
            stored = stored_digest(row, "checksum")
            if (
                self.src.kind == "s3"  # elsewhere, the bytes read are taken as the file's
                and not source.etag_md5
                and not stored
                and not stored_others(row)
                and not self.src.part_size(row.name, source)
            ):
                raise Unverifiable(
                    "a real run could not prove the download (its ETag is not an MD5, its part "
                    "layout is unknown, and the row has no stored checksum)"
                )
            # A dry run predicts checksum problems; a hint is enough for a prediction. A row
            # that stores a SHA-1 or SHA-256 has its source read to compare them (as the real
            # run does); an empty one is only filled, which needs no prediction.
            others = None
            md5 = source.meta_md5 if source.md5 is None else source.md5
            if stored_others(row):
                digest = self.src.hash(row.name, also=row.target.others)
                md5, others = digest.md5, digest.others
            md5 = md5 or self.src.prove_md5(row.name, source)
            predict_copy(self.src, self.dst, self.conf, source.size, self.server_side)
            # What the real run would have written: a row that shares the name finds it.
            written = ObjectInfo(size=source.size, md5=md5, etag=md5, etag_md5=md5, headed=True)
            result = self._result(
                row,
                COPIED,
                size=source.size,
                md5=md5,
                dest=written,
                copied_bytes=source.size,
                others=others,
            )
            result.server_side = self._inside(row)
            return lambda: result
        fingerprint = self.src.fingerprint(row.name) if self._fingerprint else None
        waiting = start_copy_file(
            self.src,
            self.dst,
            row.name,
            conf=self.conf,
            content_type=row.meta.get("content_type") or None,
            overwrite=existed and self.overwrite,
            existed=existed,
            source_info=source,
            stored_md5=stored_digest(row, "checksum") or None,
            also=row.target.others,
            stored_others=stored_others(row),
            server_side=self._inside(row),
        )

        def finish() -> RowResult:
            copied = waiting()
            if self._fingerprint and self.src.fingerprint(row.name) != fingerprint:
                # The copy holds the bytes read before the change; it is left where it is
                # (another run may already point a row at it), and the row is not committed.
                raise VerificationFailed(
                    "source changed while it was copied; the copy of the earlier bytes was left "
                    "at the destination (run again with --overwrite to replace it)"
                )
            result = self._result(
                row,
                COPIED,
                size=copied.digest.size,
                md5=copied.digest.md5,
                dest=copied.info,
                copied_bytes=copied.digest.size,
                others=copied.digest.others,
            )
            result.fingerprint = fingerprint
            result.server_side = copied.server_side
            if self.delete_source:
                result.dest_proof = destination_proof(self.dst, copied.info, copied.proof)
            return result

        return finish

    def _inside(self, row: Row) -> bool:
        """Is this row's copy made inside the store? Not where its model keeps a SHA-1 or
        SHA-256 (Wagtail's file_hash): those are hashed from the bytes as they are streamed,
        as the dry run that predicts them reads them."""
        return self.server_side and not row.target.others

    def _result(
        self,
        row: Row,
        outcome: str,
        *,
        size: int,
        md5: str | None,
        dest: ObjectInfo | None = None,
        copied_bytes: int = 0,
        others: dict[str, str] | None = None,
    ) -> RowResult:
        """The outcome, the problems the row's stored metadata shows, and the columns to update.
        ``md5`` and ``others`` (SHA-1, SHA-256) are the digests of the bytes, where known; each
        is compared with, and written to, only the column of its own algorithm."""
        result = RowResult(row, outcome, bytes=copied_bytes, dest=dest)
        meta, columns = row.meta, row.target.columns
        actual: dict[str, str | None] = {"md5": md5, **(others or {})}
        mismatched = []
        for role, algorithm in row.target.digests.items():
            stored, found = stored_digest(row, role), actual.get(algorithm)
            if not (stored and found and stored != found):
                continue
            mismatched.append(role)
            kept = f"{role} rewritten" if self.rewrite_checksums else f"stored {role} kept"
            if self.dry_run:
                kept = f"{role} would be rewritten" if self.rewrite_checksums else kept
            what = "checksum" if role == "checksum" else f"{NAMES[algorithm]} ({columns[role]})"
            result.problems.append(
                row.problem(
                    CHECKSUM_MISMATCH,
                    f"source bytes do not match the stored {what}; {kept}",
                    expected=stored,
                    actual=found,
                )
            )
        # Bytes that contradict a stored digest are not the row's file: its record (size and
        # digests) is kept as it is, unless --rewrite-checksums says the bytes are right.
        contradicted = bool(mismatched) and not self.rewrite_checksums
        stored_size = meta.get("file_size")
        if "file_size" in columns and stored_size is not None and stored_size != size:
            fixed = "kept" if contradicted else "corrected"
            if self.dry_run:
                fixed = "kept" if contradicted else "would be corrected"
            result.problems.append(
                row.problem(
                    SIZE_MISMATCH,
                    f"stored size disagrees with the file; size column {fixed}",
                    expected=stored_size,
                    actual=size,
                )
            )
        wanted: dict[str, Any] = {
            "bucket": self.dst.bucket,
            "object_key": self.dst.key(row.name),
        }
        if not (contradicted and stored_size is not None):
            wanted["file_size"] = size
        if not meta.get("content_type"):
            guessed = mimetypes.guess_type(row.name)[0]
            told = dest.content_type if dest else None
            wanted["content_type"] = guessed or told or "application/octet-stream"
        for role, algorithm in row.target.digests.items():
            have, found = stored_digest(row, role), actual.get(algorithm)
            rewrite = have != found and self.rewrite_checksums
            if found and (not have or rewrite) and not contradicted:
                wanted[role] = found
        updates = {
            role: value
            for role, value in wanted.items()
            if role in columns and meta.get(role) != value
        }
        for role, value in list(updates.items()):
            reason = unfit(row.target, role, value)
            if reason is None:
                continue
            del updates[role]
            if role != "content_type":  # a type from the bucket that does not fit is left out
                result.outcome = ERROR
                detail = f"{role} cannot be stored: {reason}; the row was not updated"
                result.problems.append(row.problem(ERROR, detail))
        result.updates = updates
        return result
