"""Copy one file under the same name: read the source while hashing, write the destination
(S3 through the engine; local disk to a temporary name moved into place; any other storage
through its API), and verify what the destination holds."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, cast

from .conf import Conf
from .endpoints import Endpoint, LocalEndpoint, ObjectInfo
from .engine import start_write_s3
from .errors import Conflict, RowError, SourceMissing, VerificationFailed
from .hashing import CHUNK, Digest, _etag_of, _Parts, new_md5
from .proof import prove_download
from .s3 import S3Endpoint
from .sources import _check_source, load_source, source_layout


def _file_mode(storage: Any) -> int:
    mode = getattr(storage, "file_permissions_mode", None)
    if mode is not None:
        return int(mode)
    return 0o666 & ~_UMASK


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_local(
    endpoint: LocalEndpoint,
    name: str,
    stream: IO[bytes],
    *,
    overwrite: bool,
    check: Callable[[Digest], None] | None = None,
) -> Digest:
    """Write to a temporary name in the destination folder, verify (``check`` raises when the
    bytes written are not proven), then move it into place: never a half-written or unproven
    file under the final name, never a clobbered one without overwrite."""
    # Everything happens through a descriptor of the destination folder, checked once opened
    # (inside the root): a folder swapped for a symlink meanwhile changes nothing.
    dfd, base = endpoint.open_folder_checked(name, create=True)
    try:
        for _attempt in range(100):  # mkstemp's way, in that folder
            tmp = f".storage-migrate-{os.urandom(6).hex()}.partial"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dfd)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 random names taken
            raise FileExistsError("no free temporary name in the destination folder")
        try:
            md5 = new_md5()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    md5.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
                status = os.fstat(out.fileno())
                written, inode = status.st_size, status.st_ino
                os.fchmod(out.fileno(), _file_mode(endpoint.storage))
            digest = Digest(size=size, md5=md5.hexdigest())
            if check is not None:
                check(digest)
            if written != size:
                raise VerificationFailed("written file has the wrong size")
            if overwrite:
                os.replace(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
            else:
                _move_no_clobber(tmp, base, dfd)
            # What must still be there when the source is deleted: the status of this very
            # file (its inode), taken now, not when the row is committed.
            placed = os.stat(base, dir_fd=dfd, follow_symlinks=False)
            if placed.st_ino != inode:
                raise VerificationFailed("the file was replaced right after it was written")
            digest.fingerprint = (
                placed.st_size,
                placed.st_mtime_ns,
                placed.st_ino,
                placed.st_ctime_ns,
            )
            return digest
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
    finally:
        os.close(dfd)


def _move_no_clobber(tmp: str, name: str, dfd: int) -> None:
    """Move a file into place in the folder ``dfd`` unless the name is taken: a hard link is
    atomic and fails on a taken name; where the filesystem has no hard links, check, then
    rename."""
    try:
        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except FileExistsError:
        raise Conflict("destination file appeared during the copy") from None
    except OSError:
        try:
            os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            return
        raise Conflict("destination file appeared during the copy") from None
    os.unlink(tmp, dir_fd=dfd)


class _HashingReader:
    """Hashes what is read through it (also in another object's part layout, if given)."""

    def __init__(self, stream: IO[bytes], layout: int | None = None) -> None:
        self.stream = stream
        self.md5 = new_md5()
        self.size = 0
        self.parts = _Parts(layout) if layout else None

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size if size is not None and size >= 0 else CHUNK)
        self.md5.update(chunk)
        self.size += len(chunk)
        if self.parts is not None:
            self.parts.feed(chunk)
        return chunk

    def digest(self) -> Digest:
        layout = _etag_of(self.parts.done()) if self.parts is not None else None
        return Digest(size=self.size, md5=self.md5.hexdigest(), layout_etag=layout)


def write_generic(endpoint: Endpoint, name: str, stream: IO[bytes], *, overwrite: bool) -> Digest:
    """Any other Django storage: save through its API, refuse a renamed result, hash it back."""
    from django.core.files import File

    if endpoint.storage.exists(name):
        if not overwrite:
            raise Conflict("destination exists")
        endpoint.storage.delete(name)
    reader = _HashingReader(stream)
    saved = endpoint.storage.save(name, File(cast(IO[bytes], reader), name=os.path.basename(name)))
    if saved != name:
        endpoint.storage.delete(saved)
        raise Conflict(f"the storage saved the file as {saved!r}, not under its name")
    for _chunk in iter(lambda: reader.read(CHUNK), b""):  # what the storage left unread
        pass
    sent, stored = reader.digest(), endpoint.hash(name)
    if (stored.size, stored.md5) != (sent.size, sent.md5):
        endpoint.storage.delete(name)
        raise VerificationFailed(f"destination MD5 {stored.md5} differs from source {sent.md5}")
    return sent


@dataclass
class Copied:
    """A verified copy: the source's digest and what the destination now holds."""

    digest: Digest
    info: ObjectInfo
    adopted: bool = False  # found already written (see start_write_s3): never ours to delete
    # What must still be at the destination when the source is deleted (local disk: the status
    # of the file written; S3: see deletion.destination_proof).
    proof: tuple[object, ...] | None = None


def start_copy_file(
    src: Endpoint,
    dst: Endpoint,
    name: str,
    *,
    conf: Conf,
    content_type: str | None,
    overwrite: bool,
    existed: bool,
    source_info: ObjectInfo | None = None,
    stored_md5: str | None = None,
) -> Callable[[], Copied]:
    """Start copying one file: to S3, the source is read and hashed and the write started now;
    the returned callable waits for the write, verifies it and returns the copy (or raises a
    RowError). To any other storage, the whole copy happens in the callable."""
    if not isinstance(dst, S3Endpoint):
        return lambda: _copy_to_storage(
            src, dst, name, overwrite=overwrite, source_info=source_info, stored_md5=stored_md5
        )
    source = load_source(src, name, source_info.size if source_info else None, conf, stored_md5)
    try:
        _check_source(source.digest, source_info)
        waiting = start_write_s3(dst, name, source, content_type, conf, existed=existed)
    except BaseException:
        source.close()
        raise

    def finish() -> Copied:
        try:
            info, adopted = waiting()
            return Copied(source.digest, info, adopted)
        finally:
            source.close()

    return finish


def _copy_to_storage(
    src: Endpoint,
    dst: Endpoint,
    name: str,
    *,
    overwrite: bool,
    source_info: ObjectInfo | None,
    stored_md5: str | None,
) -> Copied:
    try:
        stream, opened = src.open_info(name)
    except FileNotFoundError:
        raise SourceMissing("source file does not exist") from None
    source_info = opened or source_info
    with stream:
        # A download is proven to be the object's bytes before anything takes it for a copy.
        reader = _HashingReader(stream, source_layout(src, name, opened))

        def check(written: Digest) -> None:
            read = reader.digest()
            if (read.size, read.md5) != (written.size, written.md5):
                raise VerificationFailed("the bytes written are not the bytes read")
            prove_download(opened, read, read.layout_etag, stored_md5)

        if isinstance(dst, LocalEndpoint):
            digest = write_local(
                dst, name, cast(IO[bytes], reader), overwrite=overwrite, check=check
            )
        else:
            digest = write_generic(dst, name, cast(IO[bytes], reader), overwrite=overwrite)
            try:
                check(digest)
            except RowError:
                dst.storage.delete(name)  # our own write, of bytes nothing proves
                raise
    _check_source(digest, source_info)
    return Copied(digest, ObjectInfo(size=digest.size, md5=digest.md5), proof=digest.fingerprint)
