"""Copy one file under the same name: read the source while hashing, write the destination
(S3 through s3write.py; local disk to a temporary name moved into place; any other storage
through its API, genericwrite.py), and verify what the destination holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, cast

from ..conf import Conf
from ..errors import RowError, SourceMissing, VerificationFailed
from ..hashing import Digest
from .base import Endpoint, ObjectInfo
from .generic import StorageEndpoint
from .genericwrite import HashingReader, write_generic
from .local import LocalEndpoint
from .localwrite import write_local
from .proof import prove_download
from .s3 import S3Endpoint
from .s3copy import StreamInstead, copy_server_side
from .s3write import start_write_s3
from .sources import _check_source, load_source, source_layout


@dataclass
class Copied:
    """A verified copy: the source's digest and what the destination now holds."""

    digest: Digest
    info: ObjectInfo
    adopted: bool = False  # found already written (see start_write_s3): never ours to delete
    # What must still be at the destination when the source is deleted (local disk: the status
    # of the file written; S3: see migrate/deletion.py, destination_proof).
    proof: tuple[object, ...] | None = None
    server_side: bool = False  # copied inside the store: no byte went through this process


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
    also: tuple[str, ...] = (),
    stored_others: dict[str, str] | None = None,
    server_side: bool = False,
) -> Callable[[], Copied]:
    """Start copying one file: to S3, the source is read and hashed and the write started now;
    the returned callable waits for the write, verifies it and returns the copy (or raises a
    RowError). To any other storage, and inside the store (``server_side``: see
    copies_server_side), the whole copy happens in the callable."""
    if server_side:
        assert isinstance(src, S3Endpoint) and isinstance(dst, S3Endpoint)

        def inside() -> Copied:
            try:
                digest, info, adopted = copy_server_side(
                    src,
                    dst,
                    name,
                    conf,
                    content_type=content_type,
                    overwrite=overwrite,
                    stored_md5=stored_md5,
                )
            except StreamInstead:
                return start_copy_file(
                    src,
                    dst,
                    name,
                    conf=conf,
                    content_type=content_type,
                    overwrite=overwrite,
                    existed=existed,
                    source_info=source_info,
                    stored_md5=stored_md5,
                    also=also,
                    stored_others=stored_others,
                )()
            return Copied(digest, info, adopted, server_side=True)

        return inside
    if not isinstance(dst, S3Endpoint):
        return lambda: _copy_to_storage(
            src,
            dst,
            name,
            overwrite=overwrite,
            source_info=source_info,
            stored=(stored_md5, stored_others),
            also=also,
        )
    size_hint = source_info.size if source_info else None
    source = load_source(src, name, size_hint, conf, stored_md5, also, stored_others)
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
    stored: tuple[str | None, dict[str, str] | None],
    also: tuple[str, ...],
) -> Copied:
    try:
        stream, opened = src.open_info(name)
    except FileNotFoundError:
        raise SourceMissing("source file does not exist") from None
    source_info = opened or source_info
    with stream:
        # A download is proven to be the object's bytes before anything takes it for a copy.
        reader = HashingReader(stream, source_layout(src, name, opened), also)

        def check(written: Digest) -> None:
            read = reader.digest()
            if (read.size, read.md5) != (written.size, written.md5):
                raise VerificationFailed("the bytes written are not the bytes read")
            prove_download(opened, read, read.layout_etag, *stored)

        if isinstance(dst, LocalEndpoint):
            digest = write_local(
                dst, name, cast(IO[bytes], reader), overwrite=overwrite, check=check
            )
        else:
            assert isinstance(dst, StorageEndpoint)
            size = source_info.size if source_info else None
            stream_in = cast(IO[bytes], reader)
            digest = write_generic(dst, name, stream_in, overwrite=overwrite, size=size)
            try:
                check(digest)
            except RowError:
                dst.storage.delete(name)  # our own write, of bytes nothing proves
                raise
    _check_source(digest, source_info)
    digest.others = reader.digest().others  # of the bytes read, which are the bytes written
    return Copied(digest, ObjectInfo(size=digest.size, md5=digest.md5), proof=digest.fingerprint)
