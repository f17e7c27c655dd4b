"""Writing to local disk: to a temporary name in the folder checked, fsync'd, then moved into
place without replacing a file that appeared meanwhile (unless --overwrite), and verified."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import IO, Any

from ..errors import Conflict, VerificationFailed
from ..hashing import CHUNK, Digest, new_md5
from .local import LocalEndpoint


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
