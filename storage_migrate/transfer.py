"""Copy one file: read the source while hashing, write the destination, verify what it holds.

The S3 write path sits behind one small engine class (``Boto3Engine``), so that the hot path can
move to a native engine without touching the rest. Multipart uploads go through boto3's transfer
manager; no S3 request is built by hand.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import IO, Any, cast

from .conf import Conf
from .endpoints import Endpoint, LocalEndpoint, ObjectInfo, S3Endpoint
from .errors import Conflict, SourceMissing, VerificationFailed
from .hashing import (
    CHUNK,
    Digest,
    digest_bytes,
    digest_stream,
    new_md5,
    normalize_etag,
)


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


def load_source(endpoint: Endpoint, name: str, size_hint: int | None, conf: Conf) -> Source:
    """Read and hash a source file; small files stay in memory, large ones are re-read from disk
    (a local source) or spooled to a temporary file (any other source)."""
    path = endpoint.local_path(name)
    if path is not None:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size <= conf.IN_MEMORY_LIMIT:
                    data = f.read(conf.IN_MEMORY_LIMIT + 1)
                    if len(data) != size:
                        raise VerificationFailed(
                            f"source changed while it was read: {size} bytes, {len(data)} read"
                        )
                    return Source(digest=digest_bytes(data), data=data)
                digest = digest_stream(f, part_size_for(size, conf))
                if digest.size != size:
                    raise VerificationFailed(
                        f"source changed while it was read: {size} bytes, {digest.size} read"
                    )
                return Source(digest=digest, path=path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise SourceMissing("source file does not exist") from None
    try:
        stream, info = endpoint.open_info(name)
    except FileNotFoundError:
        raise SourceMissing("source file does not exist") from None
    size_hint = info.size if info is not None else size_hint
    with stream:
        if size_hint is not None and size_hint <= conf.IN_MEMORY_LIMIT:
            data = stream.read(conf.IN_MEMORY_LIMIT + 1)
            source = Source(digest=digest_bytes(data), data=data)
        else:
            source = _spool(stream, size_hint, conf)
    try:
        _check_source(source.digest, info)
    except VerificationFailed:
        source.close()
        raise
    return source


def _spool(stream: IO[bytes], size_hint: int | None, conf: Conf) -> Source:
    part_size = part_size_for(size_hint or 0, conf)
    fd, path = tempfile.mkstemp(prefix="storage-migrate-", suffix=".spool")
    try:
        with os.fdopen(fd, "wb") as out:
            tee = _Tee(stream, out)
            digest = digest_stream(tee, part_size)  # type: ignore[arg-type]
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


class _ContentType:
    """What django-storages' write parameters look at on the content being saved."""

    def __init__(self, content_type: str | None) -> None:
        self.content_type = content_type


def _add_content_md5(params: dict[str, Any], **_: Any) -> None:
    """botocore hook: a Content-MD5 for each multipart part, so the server rejects corrupt parts."""
    headers = params["headers"]
    if "Content-MD5" in headers:
        return
    body = params.get("body")
    if body is None:
        return
    if isinstance(body, bytes | bytearray):
        md5 = new_md5()
        md5.update(body)
    else:
        start = body.tell()
        md5 = new_md5()
        for chunk in iter(lambda: body.read(CHUNK), b""):
            md5.update(chunk)
        body.seek(start)
    headers["Content-MD5"] = base64.b64encode(md5.digest()).decode("ascii")


class Boto3Engine:
    """Writes objects to one S3 endpoint with boto3: put_object for files below the multipart
    threshold (Content-MD5, the returned ETag proves the bytes), the transfer manager above it.
    Without overwrite, writes are conditional (If-None-Match: *), so an object that appeared
    after the listing is never replaced; stores that do not know the header get plain writes."""

    def __init__(self, endpoint: S3Endpoint, conf: Conf) -> None:
        self.endpoint = endpoint
        self.conf = conf
        self.client = endpoint.client
        self.client.meta.events.register("before-call.s3.UploadPart", _add_content_md5)
        self.client.meta.events.register(
            "before-parameter-build.s3.CompleteMultipartUpload", self._no_clobber_multipart
        )
        self._manager: Any = None
        self._lock = threading.Lock()
        self.conditional_writes = True
        self._no_clobber_keys: set[str] = set()

    def _no_clobber_multipart(self, params: dict[str, Any], **_: Any) -> None:
        if self.conditional_writes and params.get("Key") in self._no_clobber_keys:
            params.setdefault("IfNoneMatch", "*")

    def manager(self) -> Any:
        with self._lock:
            if self._manager is None:
                from boto3.s3.transfer import TransferConfig
                from s3transfer.manager import TransferManager

                config = TransferConfig(
                    multipart_threshold=self.conf.MULTIPART_THRESHOLD,
                    multipart_chunksize=self.conf.MULTIPART_CHUNKSIZE,
                    max_concurrency=max(4, min(self.conf.WORKERS, 16)),
                )
                self._manager = TransferManager(self.client, config)
            return self._manager

    def close(self) -> None:
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None

    def write_params(self, key: str, content_type: str | None) -> dict[str, Any]:
        """The parameters django-storages would write this object with: its object parameters,
        Content-Type (and Content-Encoding for .gz), default ACL."""
        params: dict[str, Any] = self.endpoint.s3storage._get_write_parameters(
            key, _ContentType(content_type)
        )
        return params

    def put(
        self, key: str, source: Source, params: dict[str, Any], *, overwrite: bool
    ) -> str | None:
        """Write the object; return the ETag the write returned, if it returned one. Raises
        Conflict when, without overwrite, the key was taken in the meantime."""
        from botocore.exceptions import ClientError

        metadata = {**params.get("Metadata", {}), "md5": source.digest.md5}
        if source.digest.size >= self.conf.MULTIPART_THRESHOLD and source.digest.part_md5s:
            # The ETag the parts will give: it binds the md5 metadata to these very bytes.
            metadata["etag"] = str(source.digest.multipart_etag())
        params = {**params, "Metadata": metadata}
        try:
            return self._put(key, source, params, overwrite=overwrite)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise Conflict("an object appeared under this name during the copy") from None
            if code == "NotImplemented" and not overwrite and self.conditional_writes:
                self.conditional_writes = False  # this store has no conditional writes
                return self._put(key, source, params, overwrite=overwrite)
            raise

    def _put(
        self, key: str, source: Source, params: dict[str, Any], *, overwrite: bool
    ) -> str | None:
        conditional = not overwrite and self.conditional_writes
        if source.digest.size < self.conf.MULTIPART_THRESHOLD:
            extra: dict[str, Any] = {**params, **({"IfNoneMatch": "*"} if conditional else {})}
            with source.open() as body:
                response = self.client.put_object(
                    Bucket=self.endpoint.bucket,
                    Key=key,
                    Body=body,
                    ContentMD5=source.digest.content_md5,
                    **extra,
                )
            return normalize_etag(response.get("ETag"))
        if source.path is None:  # pragma: no cover - large sources are always files
            raise VerificationFailed("large source is not in a file")
        if conditional:
            self._no_clobber_keys.add(key)
        try:
            upload = self.manager().upload(
                source.path, self.endpoint.bucket, key, extra_args=params
            )
            upload.result()
        finally:
            self._no_clobber_keys.discard(key)
        return None


_ENGINE_LOCK = threading.Lock()


def _engine(endpoint: S3Endpoint, conf: Conf) -> Boto3Engine:
    with _ENGINE_LOCK:
        engine = getattr(endpoint, "_engine", None)
        if engine is None:
            engine = endpoint._engine = Boto3Engine(endpoint, conf)  # type: ignore[attr-defined]
        return engine


def close_engines(*endpoints: Endpoint) -> None:
    for endpoint in endpoints:
        engine = getattr(endpoint, "_engine", None)
        if engine is not None:
            engine.close()


def verify_s3(endpoint: S3Endpoint, name: str, digest: Digest, etag: str | None) -> ObjectInfo:
    """Prove the object holds these bytes: the write's ETag, else a HEAD (size, and an ETag that is
    the MD5 or the multipart ETag of our parts), else download and hash. Never our own metadata."""
    if etag and endpoint.etag_is_md5 and etag == digest.md5:
        return ObjectInfo(size=digest.size, md5=digest.md5, etag=etag)
    info = endpoint.stat(name)
    if info is None:
        raise VerificationFailed("object not found right after it was written")
    if info.size != digest.size:
        raise VerificationFailed(f"destination holds {info.size} bytes, {digest.size} were sent")
    multipart_proof = (
        endpoint.etag_is_md5 and not info.encrypted and info.etag == digest.multipart_etag()
    )
    if info.etag_md5 == digest.md5 or multipart_proof:
        info.md5 = digest.md5
        return info
    actual = endpoint.hash(name)
    if actual.md5 != digest.md5:
        raise VerificationFailed(f"destination MD5 {actual.md5} differs from source {digest.md5}")
    info.md5 = digest.md5
    return info


def write_s3(
    endpoint: S3Endpoint,
    name: str,
    source: Source,
    content_type: str | None,
    conf: Conf,
    *,
    existed: bool,
) -> ObjectInfo:
    engine = _engine(endpoint, conf)
    key = endpoint.key(name)
    etag = engine.put(key, source, engine.write_params(key, content_type), overwrite=existed)
    try:
        return verify_s3(endpoint, name, source.digest, etag)
    except VerificationFailed:
        if not existed:
            endpoint.delete(name)  # our own unverified write: never leave it for a row to find
        raise


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
    expected_md5: str | None = None,
) -> Digest:
    """Write to a temporary name in the destination folder, verify, then move it into place:
    never a half-written file under the final name, never a clobbered one without overwrite."""
    path = endpoint.local_path(name)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".storage-migrate-", suffix=".partial")
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
        digest = Digest(size=size, md5=md5.hexdigest())
        if expected_md5 and digest.md5 != expected_md5:
            raise VerificationFailed(f"read MD5 {digest.md5}, but the source says {expected_md5}")
        if os.path.getsize(tmp) != size:
            raise VerificationFailed("written file has the wrong size")
        os.chmod(tmp, _file_mode(endpoint.storage))
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_no_clobber(tmp, path)
        return digest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _move_no_clobber(tmp: str, path: str) -> None:
    """Move a file into place unless the name is taken: a hard link is atomic and fails on a
    taken name; where the filesystem has no hard links, check, then rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise Conflict("destination file appeared during the copy") from None
    except OSError:
        if os.path.lexists(path):
            raise Conflict("destination file appeared during the copy") from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)


class _HashingReader:
    """Hashes what is read through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.md5 = new_md5()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size if size is not None and size >= 0 else CHUNK)
        self.md5.update(chunk)
        self.size += len(chunk)
        return chunk

    def digest(self) -> Digest:
        return Digest(size=self.size, md5=self.md5.hexdigest())


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


def copy_file(
    src: Endpoint,
    dst: Endpoint,
    name: str,
    *,
    conf: Conf,
    content_type: str | None,
    overwrite: bool,
    existed: bool,
    source_info: ObjectInfo | None = None,
) -> Copied:
    """Copy one file under the same name and verify it; raise a RowError on failure."""
    if isinstance(dst, S3Endpoint):
        source = load_source(src, name, source_info.size if source_info else None, conf)
        try:
            _check_source(source.digest, source_info)
            info = write_s3(dst, name, source, content_type, conf, existed=existed)
            return Copied(source.digest, info)
        finally:
            source.close()
    try:
        stream, opened = src.open_info(name)
    except FileNotFoundError:
        raise SourceMissing("source file does not exist") from None
    source_info = opened or source_info
    with stream:
        if isinstance(dst, LocalEndpoint):
            expected = source_info.md5 if source_info else None
            digest = write_local(dst, name, stream, overwrite=overwrite, expected_md5=expected)
        else:
            digest = write_generic(dst, name, stream, overwrite=overwrite)
    _check_source(digest, source_info)
    return Copied(digest, ObjectInfo(size=digest.size, md5=digest.md5))


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
