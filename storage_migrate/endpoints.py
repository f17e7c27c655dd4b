"""A storage alias ("local", "s3", any STORAGES key) as an endpoint that can stat, list, read and
delete objects by FileField name. Writing is transfer.py's job."""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, cast

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.files.storage.handler import InvalidStorageError

from .conf import Conf
from .errors import ConfigurationError
from .hashing import Digest, digest_stream, is_md5_hex, md5_from_etag, normalize_etag

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Listing a key range costs one request per 1000 keys; past this many keys per row wanted,
# one HEAD per row is cheaper.
LIST_KEYS_PER_ROW = 20
LIST_MIN_BUDGET = 1000
_SSE_C_PARAMS = ("SSECustomerAlgorithm", "SSECustomerKey", "SSECustomerKeyMD5")


@dataclass
class ObjectInfo:
    """What a storage says of one object. ``md5`` is set only where it is known: an ETag that is
    an MD5, the md5 metadata this tool writes after verifying a copy, or a hash of the bytes.
    ``etag_md5`` is the ETag's own proof alone (what a fresh write is verified by)."""

    size: int
    md5: str | None = None
    etag: str = ""
    content_type: str | None = None
    headed: bool = False
    etag_md5: str | None = None
    meta_md5: str | None = None
    encrypted: bool = False


Fingerprint = tuple[object, ...]


class Endpoint:
    """Base: any Django storage, through the storage API only."""

    kind = "storage"
    bucket = ""

    def __init__(self, alias: str, storage: Storage, conf: Conf) -> None:
        self.alias = alias
        self.storage = storage
        self.conf = conf

    def __str__(self) -> str:
        return self.alias

    def key(self, name: str) -> str:
        """Where the storage keeps a name (the S3 key, or the path relative to MEDIA_ROOT)."""
        return name

    def canonical(self, name: str) -> str:
        """The name as the storage lists it (``a//b`` and ``a/./b`` are listed as ``a/b``)."""
        return name

    assume_empty = False

    def preflight(
        self, *, as_source: bool, create_bucket: bool = False, dry_run: bool = False
    ) -> None:
        """Raise ConfigurationError if the endpoint cannot be used at all."""

    def stat(self, name: str) -> ObjectInfo | None:
        if not self.storage.exists(name):
            return None
        return ObjectInfo(size=self.storage.size(name))

    def stat_many(self, names: Iterable[str]) -> dict[str, ObjectInfo | None]:
        return {name: self.stat(name) for name in names}

    def hash(self, name: str) -> Digest:
        """Read and hash the object's bytes."""
        with self.open(name) as stream:
            return digest_stream(stream)  # type: ignore[arg-type]

    def head(self, name: str, info: ObjectInfo) -> ObjectInfo:
        """The object with everything the storage can say of it (S3: a HEAD after a listing)."""
        return info

    def prove_md5(self, name: str, info: ObjectInfo) -> str:
        """The object's MD5, from what is known or else by reading it."""
        if info.md5 is None:
            info.md5 = self.hash(name).md5
        return info.md5

    def open(self, name: str) -> IO[bytes]:
        try:
            return self.storage.open(name, "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise FileNotFoundError(str(exc)) from exc

    def open_info(self, name: str) -> tuple[IO[bytes], ObjectInfo | None]:
        """A stream of the object's bytes, and what the storage said of them when it opened it."""
        return self.open(name), None

    def fingerprint(self, name: str) -> Fingerprint | None:
        """What changes when the object changes (checked before a source is deleted)."""
        info = self.stat(name)
        return None if info is None else (info.size,)

    def local_path(self, name: str) -> str | None:
        return None

    def delete(self, name: str) -> None:
        self.storage.delete(name)

    def iter_objects(self, prefix: str = "") -> Iterator[tuple[str, ObjectInfo]]:
        """Every object whose name starts with ``prefix``, in UTF-8 byte order of the names
        (the order S3 lists in), as a stream."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        yield from self._walk(folder, prefix)

    def _walk(self, folder: str, prefix: str) -> Iterator[tuple[str, ObjectInfo]]:
        try:
            dirs, files = self.storage.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        entries = [(d + "/", True) for d in dirs] + [(f, False) for f in files]
        for entry, is_dir in sorted(entries, key=lambda e: _utf8(e[0])):
            name = f"{folder}/{entry}" if folder else entry
            if is_dir:
                if name.startswith(prefix) or prefix.startswith(name):
                    yield from self._walk(name.rstrip("/"), prefix)
            elif name.startswith(prefix):
                yield name, ObjectInfo(size=self.storage.size(name))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class LocalEndpoint(Endpoint):
    """A FileSystemStorage: files under its location (MEDIA_ROOT)."""

    kind = "local"
    storage: FileSystemStorage

    def local_path(self, name: str) -> str:
        return self.storage.path(name)

    def canonical(self, name: str) -> str:
        relative = os.path.relpath(self.local_path(name), self.storage.location)
        return relative.replace(os.sep, "/")

    def preflight(
        self, *, as_source: bool, create_bucket: bool = False, dry_run: bool = False
    ) -> None:
        root = self.storage.location
        if as_source and not os.path.isdir(root):
            raise ConfigurationError(
                f"Storage {self.alias!r} reads from {root}, which is not a directory "
                "(check MEDIA_ROOT or the storage's location)."
            )

    def stat(self, name: str) -> ObjectInfo | None:
        try:
            st = os.stat(self.local_path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(self.local_path(name)):
            return None
        return ObjectInfo(size=st.st_size)

    def open(self, name: str) -> IO[bytes]:
        return open(self.local_path(name), "rb")

    def _walk(self, folder: str, prefix: str) -> Iterator[tuple[str, ObjectInfo]]:
        try:
            scanned = list(os.scandir(os.path.join(self.storage.location, folder)))
        except (FileNotFoundError, NotADirectoryError):
            return
        entries = []
        for entry in scanned:
            if entry.is_dir(follow_symlinks=False):
                entries.append((entry.name + "/", entry))
            elif entry.is_file(follow_symlinks=False):
                entries.append((entry.name, entry))
        for label, entry in sorted(entries, key=lambda e: _utf8(e[0])):
            name = f"{folder}/{label}" if folder else label
            if label.endswith("/"):
                if name.startswith(prefix) or prefix.startswith(name):
                    yield from self._walk(name.rstrip("/"), prefix)
            elif name.startswith(prefix):
                yield name, ObjectInfo(size=entry.stat(follow_symlinks=False).st_size)

    def fingerprint(self, name: str) -> Fingerprint | None:
        try:
            st = os.stat(self.local_path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.local_path(name))


class S3Endpoint(Endpoint):
    """A django-storages S3Storage, through one boto3 client configured as the storage is."""

    kind = "s3"

    def __init__(self, alias: str, storage: Storage, conf: Conf) -> None:
        super().__init__(alias, storage, conf)
        self.s3storage: Any = cast(Any, storage)
        self.bucket = str(self.s3storage.bucket_name or "")
        if not self.bucket:
            raise ConfigurationError(
                f"Storage {alias!r} has no bucket name (set AWS_STORAGE_BUCKET_NAME "
                "or the storage's bucket_name option)."
            )
        params = self.s3storage.get_object_parameters("")
        # With KMS or customer-key encryption an ETag is not the MD5 of the bytes.
        self.etag_is_md5 = not (
            str(params.get("ServerSideEncryption", "")).startswith("aws:kms")
            or "SSECustomerAlgorithm" in params
        )
        self.read_params = {k: params[k] for k in _SSE_C_PARAMS if k in params}

    def _client(self, **config: Any) -> S3Client:
        from botocore.config import Config

        st = self.s3storage
        session = st._create_session()
        options: dict[str, Any] = {
            "retries": {"max_attempts": self.conf.MAX_ATTEMPTS, "mode": "standard"},
            "max_pool_connections": max(10, self.conf.WORKERS * 2),
            "connect_timeout": self.conf.CONNECT_TIMEOUT,
            "read_timeout": self.conf.READ_TIMEOUT,
            "request_checksum_calculation": self.conf.REQUEST_CHECKSUM_CALCULATION,
            "response_checksum_validation": self.conf.RESPONSE_CHECKSUM_VALIDATION,
        }
        merged = st.client_config.merge(Config(**{**options, **config}))
        return session.client(  # type: ignore[no-any-return]
            "s3",
            region_name=st.region_name,
            use_ssl=st.use_ssl,
            endpoint_url=st.endpoint_url,
            verify=st.verify,
            config=merged,
        )

    @cached_property
    def client(self) -> S3Client:
        """One client for every thread (boto3 clients are thread-safe)."""
        return self._client()

    def key(self, name: str) -> str:
        from storages.utils import clean_name

        return str(self.s3storage._normalize_name(clean_name(name)))

    def preflight(
        self, *, as_source: bool, create_bucket: bool = False, dry_run: bool = False
    ) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        quick = self._client(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5)
        where = self.s3storage.endpoint_url or "AWS S3"
        try:
            quick.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchBucket") or status == 404:
                if create_bucket and not as_source:
                    if dry_run:
                        self.assume_empty = True  # a real run would create it empty
                    else:
                        self._create_bucket(quick)
                    return
                hint = "" if as_source else " or pass --create-bucket"
                raise ConfigurationError(
                    f"Bucket {self.bucket!r} of storage {self.alias!r} does not exist at "
                    f"{where}: create it{hint}."
                ) from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigurationError(
                    f"S3 refused the credentials of storage {self.alias!r} for bucket "
                    f"{self.bucket!r} at {where} ({code or status}): check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY."
                ) from None
            raise ConfigurationError(
                f"Bucket {self.bucket!r} of storage {self.alias!r} at {where}: {code or status}."
            ) from None
        except BotoCoreError as exc:
            raise ConfigurationError(
                f"Cannot reach S3 for storage {self.alias!r} at {where}: {exc}"
            ) from None

    def _create_bucket(self, client: S3Client) -> None:
        region = self.s3storage.region_name
        if region and region != "us-east-1":
            client.create_bucket(
                Bucket=self.bucket,
                CreateBucketConfiguration={"LocationConstraint": region},
            )
        else:
            client.create_bucket(Bucket=self.bucket)

    def info_from_head(self, head: Any) -> ObjectInfo:
        """From a HEAD or GET response: also tells KMS-encrypted objects (a bucket's default
        encryption included) by their headers, whose ETags are not MD5s."""
        etag = normalize_etag(head.get("ETag"))
        encrypted = str(head.get("ServerSideEncryption", "")).startswith("aws:kms") or bool(
            head.get("SSECustomerAlgorithm")
        )
        etag_md5 = md5_from_etag(etag, self.etag_is_md5 and not encrypted)
        metadata = head.get("Metadata") or {}
        meta = str(metadata.get("md5", "")).lower()
        # Our md5 metadata speaks for these bytes only while the ETag is still the one the
        # upload was made with (a multipart ETag, recorded beside it); under KMS no ETag can
        # say anything, and the metadata is all there is short of reading the object.
        bound = encrypted or normalize_etag(metadata.get("etag")) == etag or etag_md5 is not None
        meta_md5 = meta if is_md5_hex(meta) and bound else None
        return ObjectInfo(
            size=int(head["ContentLength"]),
            md5=etag_md5 or meta_md5,
            etag=etag,
            content_type=head.get("ContentType"),
            headed=True,
            etag_md5=etag_md5,
            meta_md5=meta_md5,
            encrypted=encrypted,
        )

    def head(self, name: str, info: ObjectInfo) -> ObjectInfo:
        """The same object, HEADed (headers and metadata that a listing does not give)."""
        if info.headed:
            return info
        return self.stat(name) or info

    def stat(self, name: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(
                Bucket=self.bucket, Key=self.key(name), **self.read_params
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise
        return self.info_from_head(head)

    def prove_md5(self, name: str, info: ObjectInfo) -> str:
        if info.md5 is None and not info.headed:
            headed = self.stat(name)
            if headed is not None:
                info.md5, info.headed, info.meta_md5 = headed.md5, True, headed.meta_md5
        return super().prove_md5(name, info)

    def fingerprint(self, name: str) -> Fingerprint | None:
        info = self.stat(name)
        return None if info is None else (info.size, info.etag)

    def list_range(self, prefix: str, first: str, last: str, budget: int) -> Iterator[Any]:
        """Objects under ``prefix`` with keys from ``first`` to ``last`` (S3 lists keys in UTF-8
        byte order), at most ``budget`` of them."""
        paginator = self.client.get_paginator("list_objects_v2")
        # StartAfter is exclusive: a proper prefix of `first` sorts just before it.
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix, StartAfter=first[:-1])
        seen = 0
        last_bytes = last.encode("utf-8", "surrogatepass")
        for page in pages:
            for entry in page.get("Contents", ()):
                if entry["Key"].encode("utf-8", "surrogatepass") > last_bytes:
                    return
                yield entry
                seen += 1
                if seen >= budget:
                    return

    def stat_many(self, names: Iterable[str]) -> dict[str, ObjectInfo | None]:
        """One listing per folder of the batch instead of one HEAD per name, where that is
        cheaper; a HEAD for what the listing budget did not reach."""
        if self.assume_empty:
            return dict.fromkeys(names)
        by_key: dict[str, list[str]] = defaultdict(list)
        for name in names:
            by_key[self.key(name)].append(name)  # several names can make one key
        groups: dict[str, list[str]] = defaultdict(list)
        for key in by_key:
            groups[posixpath.dirname(key)].append(key)
        found: dict[str, ObjectInfo | None] = {}
        for folder, keys in groups.items():
            if len(keys) < 3:
                continue  # a HEAD or two is cheaper than a listing
            keys.sort(key=lambda k: k.encode("utf-8", "surrogatepass"))
            prefix = f"{folder}/" if folder else ""
            wanted = set(keys)
            budget = LIST_MIN_BUDGET + LIST_KEYS_PER_ROW * len(keys)
            listed, last_listed = 0, b""
            for entry in self.list_range(prefix, keys[0], keys[-1], budget):
                key = entry["Key"]
                listed, last_listed = listed + 1, key.encode("utf-8", "surrogatepass")
                if key in wanted:
                    etag = normalize_etag(entry.get("ETag"))
                    md5 = md5_from_etag(etag, self.etag_is_md5)
                    found[key] = ObjectInfo(
                        size=int(entry["Size"]), md5=md5, etag=etag, etag_md5=md5
                    )
            # A listing cut short by its budget proves absence only up to its last key.
            covered_to = (
                last_listed if listed >= budget else keys[-1].encode("utf-8", "surrogatepass")
            )
            for key in keys:
                if key not in found and key.encode("utf-8", "surrogatepass") <= covered_to:
                    found[key] = None
        result: dict[str, ObjectInfo | None] = {}
        for key, same_key in by_key.items():
            info = found[key] if key in found else self.stat(same_key[0])
            for name in same_key:
                result[name] = info
        return result

    def open(self, name: str) -> IO[bytes]:
        return self.open_info(name)[0]

    def canonical(self, name: str) -> str:
        return self.key(name)[len(self.key_prefix) :]

    @property
    def key_prefix(self) -> str:
        location = str(self.s3storage.location or "").strip("/")
        return f"{location}/" if location else ""

    def iter_objects(self, prefix: str = "") -> Iterator[tuple[str, ObjectInfo]]:
        """One ListObjectsV2 stream (1000 keys a request); names without the location prefix."""
        start = self.key_prefix
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start + prefix):
            for entry in page.get("Contents", ()):
                etag = normalize_etag(entry.get("ETag"))
                md5 = md5_from_etag(etag, self.etag_is_md5)
                info = ObjectInfo(size=int(entry["Size"]), md5=md5, etag=etag, etag_md5=md5)
                yield entry["Key"][len(start) :], info

    def open_info(self, name: str) -> tuple[IO[bytes], ObjectInfo | None]:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.key(name), **self.read_params
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self.key(name)}") from None
            raise
        return response["Body"], self.info_from_head(response)  # type: ignore[return-value]

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))


def endpoint_for(alias: str, conf: Conf) -> Endpoint:
    """The endpoint of a STORAGES alias, by the kind of its storage."""
    try:
        storage = storages[alias]
    except InvalidStorageError:
        known = ", ".join(sorted(getattr(settings, "STORAGES", {}) or {}))
        raise ConfigurationError(
            f"Storage alias {alias!r} is not in STORAGES (known: {known})"
        ) from None
    return endpoint_for_storage(alias, storage, conf)


def alias_of(storage: Storage) -> str | None:
    """The STORAGES alias whose instance a field's storage is (default_storage is 'default')."""
    from django.core.files.storage import default_storage

    if storage is default_storage:
        return "default"
    for alias in getattr(settings, "STORAGES", {}) or {}:
        try:
            if storages[alias] is storage:
                return str(alias)
        except InvalidStorageError:  # pragma: no cover - a broken alias is not this one
            continue
    return None


def endpoint_for_storage(alias: str, storage: Storage, conf: Conf) -> Endpoint:
    """An endpoint for a storage instance (a field's own storage, or an alias's)."""
    if isinstance(storage, FileSystemStorage):
        return LocalEndpoint(alias, storage, conf)
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # pragma: no cover - django-storages is a dependency
        S3Storage = ()
    if isinstance(storage, S3Storage):
        return S3Endpoint(alias, storage, conf)
    return Endpoint(alias, storage, conf)
