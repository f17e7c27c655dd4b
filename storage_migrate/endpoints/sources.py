"""A source file's bytes, read once while hashing: in memory when small, else in a file that can
be read again (the source itself on local disk, or a temporary spool)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from typing import IO

from ..conf import Conf
from ..errors import RowError, SourceMissing, VerificationFailed
from ..hashing import Digest, digest_bytes, digest_stream
from .base import Endpoint, ObjectInfo
from .local import LocalEndpoint
from .proof import prove_download


@dataclass
class Source:
    """A source file's bytes, hashed, ready to send: in memory, or in a file that can be re-read."""

    digest: Digest
    data: bytes | None = None
    path: str | None = None
    temporary: bool = False

    def open(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return open(self.path, "rb")

    def close(self) -> None:
        if self.temporary and self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def part_size_for(size: int, conf: Conf) -> int | None:
    """The part size boto3's transfer manager will use for a file of this size, or None when the
    file goes in one PUT."""
    if size < conf.MULTIPART_THRESHOLD:
        return None
    from s3transfer.utils import ChunksizeAdjuster

    return int(ChunksizeAdjuster().adjust_chunksize(conf.MULTIPART_CHUNKSIZE, size))


def load_source(
    endpoint: Endpoint,
    name: str,
    size_hint: int | None,
    conf: Conf,
    stored_md5: str | None = None,
    also: tuple[str, ...] = (),
    stored_others: dict[str, str] | None = None,
) -> Source:
    """Read and hash a source file (in MD5, and in the algorithms ``also`` names); small files
    stay in memory, large ones are re-read from disk (a local source) or spooled to a temporary
    file (any other source). A download is proven to be the object's bytes
    (proof.prove_download) before it is used."""
    path = endpoint.local_path(name)
    if path is not None:
        assert isinstance(endpoint, LocalEndpoint)
        try:
            # Checked once opened (inside the root, a regular file): a folder swapped for a
            # symlink since the planner's look, or a FIFO, is refused, never read or waited on.
            fd = endpoint.open_checked(name, path)
        except (FileNotFoundError, NotADirectoryError):
            raise SourceMissing("source file does not exist") from None
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= conf.IN_MEMORY_LIMIT:
                data = f.read(conf.IN_MEMORY_LIMIT + 1)
                if len(data) != size:
                    raise VerificationFailed(
                        f"source changed while it was read: {size} bytes, {len(data)} read"
                    )
                return Source(digest=digest_bytes(data, also=also), data=data)
            digest = digest_stream(f, part_size_for(size, conf), also=also)
            if digest.size != size:
                raise VerificationFailed(
                    f"source changed while it was read: {size} bytes, {digest.size} read"
                )
            # Sent later from its path (boto3 opens it again): the path of this very file.
            source = Source(digest=digest)
            source.path = endpoint.pinned_path(f.fileno(), path, source)
            return source
    try:
        stream, info = endpoint.open_info(name)
    except FileNotFoundError:
        raise SourceMissing("source file does not exist") from None
    size_hint = info.size if info is not None else size_hint
    with stream:
        layout = source_layout(endpoint, name, info)
        if size_hint is not None and size_hint <= conf.IN_MEMORY_LIMIT:
            data = stream.read(conf.IN_MEMORY_LIMIT + 1)
            source = Source(digest=digest_bytes(data, layout, also), data=data)
        else:
            source = _spool(stream, size_hint, conf, layout, also)
    try:
        digest = source.digest
        prove_download(info, digest, digest.layout_etag, stored_md5, stored_others)
    except RowError:
        source.close()
        raise
    return source


def source_layout(endpoint: Endpoint, name: str, info: ObjectInfo | None) -> int | None:
    """The part size to hash a download with, when only its multipart ETag can prove it."""
    if info is None or info.etag_md5:
        return None
    return endpoint.part_size(name, info)


def _spool(
    stream: IO[bytes], size_hint: int | None, conf: Conf, layout: int | None, also: tuple[str, ...]
) -> Source:
    part_size = part_size_for(size_hint or 0, conf)
    fd, path = tempfile.mkstemp(prefix="storage-migrate-", suffix=".spool")
    try:
        with os.fdopen(fd, "wb") as out:
            tee = _Tee(stream, out)
            digest = digest_stream(tee, part_size, layout, also)  # type: ignore[arg-type]
    except BaseException:
        os.unlink(path)
        raise
    return Source(digest=digest, path=path, temporary=True)


class _Tee:
    """Reads from one stream and writes what it read to another."""

    def __init__(self, stream: IO[bytes], out: IO[bytes]) -> None:
        self.stream, self.out = stream, out

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.out.write(chunk)
        return chunk


def _check_source(digest: Digest, source_info: ObjectInfo | None) -> None:
    """The bytes read must be the bytes the source said it held (a file changing under us)."""
    if source_info is None:
        return
    if source_info.size != digest.size:
        raise VerificationFailed(
            f"source changed while it was read: {source_info.size} bytes listed, {digest.size} read"
        )
    if source_info.md5 and source_info.md5 != digest.md5:
        raise VerificationFailed(
            f"source changed while it was read: MD5 {source_info.md5} listed, {digest.md5} read"
        )
