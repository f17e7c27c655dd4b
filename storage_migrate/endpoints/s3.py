"""An S3Storage (django-storages) as an endpoint: one boto3 client configured as the storage is,
listings instead of HEADs where a batch allows, and what an ETag can prove."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, cast

from django.core.files.storage import Storage

from ..conf import Conf
from ..errors import ConfigurationError
from ..hashing import is_md5_hex, md5_from_etag, multipart_parts, normalize_etag
from ..meter import botocore_hooks
from ..names import common_folder, utf8
from .base import Endpoint, Fingerprint, NameMemo, ObjectInfo
from .places import strip_userinfo
from .s3parse import install as install_listing_parser
from .s3setup import (
    QUICK_ATTEMPTS,
    QUICK_TIMEOUT,
    check_endpoint_url,
    preflight_s3,
    probe_conditional_writes,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


# Listing a key range costs one request per 1000 keys; past this many keys per row wanted,
# one HEAD per row is cheaper.
LIST_KEYS_PER_ROW = 20
LIST_MIN_BUDGET = 1000
SSE_C_PARAMS = ("SSECustomerAlgorithm", "SSECustomerKey", "SSECustomerKeyMD5")


def _parse_timestamp(value: Any) -> Any:
    """An S3 timestamp ("2026-11-21T09:35:16.782Z") as an aware datetime; any other form the way
    botocore parses it."""
    from botocore.utils import parse_timestamp

    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return parse_timestamp(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
        check_endpoint_url(alias, self.s3storage.endpoint_url)
        params = self.s3storage.get_object_parameters("")
        # With KMS or customer-key encryption an ETag is not the MD5 of the bytes.
        self.etag_is_md5 = not (
            str(params.get("ServerSideEncryption", "")).startswith("aws:kms")
            or "SSECustomerAlgorithm" in params
        )
        self.read_params = {k: params[k] for k in SSE_C_PARAMS if k in params}
        self._probe_lock = threading.Lock()

    def _client(self, **config: Any) -> S3Client:
        from botocore.config import Config

        st = self.s3storage
        session = self.session
        options: dict[str, Any] = {
            "retries": {"max_attempts": self.conf.MAX_ATTEMPTS, "mode": "standard"},
            "max_pool_connections": max(10, self.conf.WORKERS * 2),
            "connect_timeout": self.conf.CONNECT_TIMEOUT,
            "read_timeout": self.conf.READ_TIMEOUT,
            "request_checksum_calculation": self.conf.REQUEST_CHECKSUM_CALCULATION,
            "response_checksum_validation": self.conf.RESPONSE_CHECKSUM_VALIDATION,
            # Every write carries a Content-MD5, which is signed: the body needs no SHA-256 of
            # its own (botocore skips it only over https; over http it was a second pass over
            # every byte). A storage that sets payload_signing_enabled keeps its choice.
            "s3": {"payload_signing_enabled": False, **(st.client_config.s3 or {})},
        }
        merged = st.client_config.merge(Config(**{**options, **config}))
        client = session.client(
            "s3",
            region_name=st.region_name,
            use_ssl=st.use_ssl,
            endpoint_url=strip_userinfo(st.endpoint_url),
            verify=st.verify,
            config=merged,
        )
        botocore_hooks(client.meta.events, lambda: self.meter)
        return client  # type: ignore[no-any-return]

    @cached_property
    def session(self) -> Any:
        """The boto3 session the storage makes (its keys, profile or the default chain). Its
        clients parse ISO 8601 timestamps with the standard library: botocore's general parser
        (dateutil) was 70 % of the time spent parsing a listing; listing entries are read
        directly (s3parse.py)."""
        session = self.s3storage._create_session()
        botocore_session = getattr(session, "_session", None)
        if botocore_session is not None:
            factory = botocore_session.get_component("response_parser_factory")
            factory.set_parser_defaults(timestamp_parser=_parse_timestamp)
            install_listing_parser(botocore_session)
        return session

    @cached_property
    def credentials(self) -> Any:
        """botocore's credentials for this storage (refreshable ones refresh), or None."""
        return self.session.get_credentials()

    @cached_property
    def quick_client(self) -> S3Client:
        """A client that gives up soon (the preflight), and whose requests can be caught
        before they are sent (the native engine's address probe) without touching ``client``.
        Its bound holds whatever the copy's CONNECT_TIMEOUT, READ_TIMEOUT and MAX_ATTEMPTS."""
        return self._client(
            # botocore's "max_attempts" counts retries; "total_max_attempts" counts requests.
            retries={"total_max_attempts": QUICK_ATTEMPTS, "mode": "standard"},
            connect_timeout=min(self.conf.CONNECT_TIMEOUT, QUICK_TIMEOUT),
            read_timeout=min(self.conf.READ_TIMEOUT, QUICK_TIMEOUT),
        )

    @cached_property
    def client(self) -> S3Client:
        """One client for every thread (boto3 clients are thread-safe)."""
        return self._client()

    def key(self, name: str) -> str:
        return self._key(name)

    @cached_property
    def _key(self) -> NameMemo:
        from storages.utils import clean_name

        return NameMemo(lambda name: str(self.s3storage._normalize_name(clean_name(name))))

    # What the store answered (None: not asked, or it would not say); _probe_wanted: the
    # preflight of a destination wants it asked, which is done the first time it matters.
    _conditional_writes: bool | None = None
    _probe_wanted = False

    @property
    def conditional_writes(self) -> bool | None:
        """Does the store honour If-None-Match on writes? Asked (a scratch key written twice)
        the first time a run needs to know, before its first write: a run that writes nothing,
        over an empty table, does not write the probe either."""
        with self._probe_lock:
            if self._probe_wanted:
                self._probe_wanted = False
                self._conditional_writes = probe_conditional_writes(self, self.quick_client)
            return self._conditional_writes

    @conditional_writes.setter
    def conditional_writes(self, value: bool | None) -> None:
        with self._probe_lock:
            self._probe_wanted = False
            self._conditional_writes = value

    def probe_conditional_writes_later(self) -> None:
        """Ask the store about conditional writes when it first matters (conditional_writes)."""
        with self._probe_lock:
            self._probe_wanted = True

    def preflight(
        self, *, as_source: bool, create_bucket: bool = False, dry_run: bool = False
    ) -> None:
        preflight_s3(self, as_source=as_source, create_bucket=create_bucket, dry_run=dry_run)

    def probe_params(self, key: str) -> dict[str, Any]:
        """What a scratch object is written with: as the storage writes (a bucket policy may
        require its encryption headers or ACL)."""
        wanted = ("ServerSideEncryption", "SSEKMSKeyId", "ACL", *SSE_C_PARAMS)
        return {k: v for k, v in self.s3storage.get_object_parameters(key).items() if k in wanted}

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
        # Our md5 metadata is a hint, never a proof: anyone who can write to the bucket can
        # write metadata, and a multipart ETag can be computed before the upload. It is taken
        # as a hint only while the ETag recorded beside it is still the object's (which a
        # replacement that kept the metadata does not fake by accident).
        bound = etag_md5 is not None or (
            not encrypted and normalize_etag(metadata.get("etag")) == etag
        )
        meta_md5 = meta if is_md5_hex(meta) and bound else None
        stamp = head.get("LastModified")
        return ObjectInfo(
            size=int(head["ContentLength"]),
            md5=etag_md5,
            etag=etag,
            content_type=head.get("ContentType"),
            headed=True,
            etag_md5=etag_md5,
            meta_md5=meta_md5,
            encrypted=encrypted,
            modified=stamp.timestamp() if isinstance(stamp, datetime) else None,
        )

    def _listed(self, entry: Any) -> ObjectInfo:
        """A ListObjectsV2 entry: size, and the ETag's MD5 where the settings let it be one."""
        return self.listed_info(int(entry["Size"]), entry.get("ETag"))

    def listed_info(self, size: int, etag: str | None) -> ObjectInfo:
        """An object as a listing gives it (its size and raw ETag)."""
        normal = normalize_etag(etag)
        md5 = md5_from_etag(normal, self.etag_is_md5)
        return ObjectInfo(size=size, md5=md5, etag=normal, etag_md5=md5)

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

    def part_size(self, name: str, info: ObjectInfo) -> int | None:
        """The part size of a multipart object (a HEAD of its first part), so that its ETag can
        be recomputed from bytes read elsewhere; None when the store does not tell it, when the
        object is not multipart or is encrypted (its ETag then proves nothing), or when the
        object changed since ``info``."""
        from botocore.exceptions import ClientError

        parts = multipart_parts(info.etag)
        if not parts or info.encrypted or not self.etag_is_md5 or info.size <= 0:
            return None
        try:
            head = self.client.head_object(
                Bucket=self.bucket, Key=self.key(name), PartNumber=1, **self.read_params
            )
        except ClientError:
            return None
        # S3 answers with the object's ETag, some stores with the part's own: either way the
        # count of parts must be the object's. (An object replaced meanwhile only makes the
        # recomputed ETag differ: a failed proof, never a false one.)
        if head.get("PartsCount", parts) != parts and normalize_etag(head.get("ETag")) != info.etag:
            return None
        size = int(head.get("ContentLength") or 0)
        if parts == 1:
            return info.size if size == info.size else None
        last = info.size - size * (parts - 1)
        # Every part but the last has the part size; the last is not larger.
        return size if size > 0 and 0 < last <= size else None

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
        """One listing of the batch's key range (from its first key to its last, in the folder
        that holds them all) instead of one HEAD per name; a HEAD for what the listing's budget
        did not reach. Rows read in primary-key order are mostly neighbours in time, and so in
        the date folders that upload_to makes: the range is short."""
        if self.assume_empty:
            return dict.fromkeys(names)
        by_key: dict[str, list[str]] = defaultdict(list)
        for name in names:
            by_key[self.key(name)].append(name)  # several names can make one key
        keys = sorted(by_key, key=utf8)
        found: dict[str, ObjectInfo | None] = {}
        if len(keys) >= 3:  # below that, a HEAD or two is cheaper than a listing
            wanted = set(keys)
            budget = LIST_MIN_BUDGET + LIST_KEYS_PER_ROW * len(keys)
            listed, last_listed = 0, b""
            for entry in self.list_range(
                common_folder(keys[0], keys[-1]), keys[0], keys[-1], budget
            ):
                key = entry["Key"]
                listed, last_listed = listed + 1, utf8(key)
                if key in wanted:
                    found[key] = self._listed(entry)
            # A listing cut short by its budget proves absence only up to its last key.
            covered_to = last_listed if listed >= budget else utf8(keys[-1])
            for key in keys:
                if key not in found and utf8(key) <= covered_to:
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

    def is_empty(self, prefix: str) -> bool:
        listing = self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=self.key_prefix + prefix, MaxKeys=1
        )
        return not listing.get("Contents")

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
                yield entry["Key"][len(start) :], self._listed(entry)

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

    def remove_if_unchanged(
        self, name: str, fingerprint: Fingerprint, quarantine: str | None = None
    ) -> str | None:
        """Delete the object only while its ETag is the one proven (If-Match, where the store
        honours it; one that refuses the header gets a plain delete, right after delete_source
        checked the fingerprint).
        With a quarantine, the object is first copied there server-side (pinned to that ETag,
        never over another object) and the copy proven to hold the same bytes; a copy left by
        an interrupted run is proven and kept."""
        from botocore.exceptions import ClientError

        from .proof import same_bytes

        size, etag = fingerprint
        if quarantine is not None:
            # The copy needs the source as it is: the delete alone is pinned by If-Match.
            source = self.stat(name)
            if source is None:
                return "gone"
            if (source.size, source.etag) != (size, etag):
                return "source changed after it was copied; it was not deleted (run again)"
            target = f"{quarantine}/{name}"
            moved = self.stat(target)
            if moved is None:
                self.client.copy(
                    {"Bucket": self.bucket, "Key": self.key(name)},
                    self.bucket,
                    self.key(target),
                    ExtraArgs={
                        "CopySourceIfMatch": f'"{etag}"',
                        **self.read_params,  # SSE-C: the copy is encrypted as its source...
                        **{f"CopySource{k}": v for k, v in self.read_params.items()},  # read so
                    },
                )
                moved = self.stat(target)
            if moved is None or not same_bytes(self, name, source, self, target, moved):
                return f"the quarantine holds another object under {target!r}; the source stays"
            again = self.stat(name)  # a new upload during the copy is not deleted
            if again is None:
                return "gone"
            if (again.size, again.etag) != (size, etag):
                return "source changed after it was copied; it was not deleted (run again)"
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name), IfMatch=f'"{etag}"')
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            if status == 412 or code == "PreconditionFailed":
                return "source changed after it was copied; it was not deleted (run again)"
            if status == 404 or code in ("NoSuchKey", "404"):
                return "gone"
            if status in (400, 501) or code in ("NotImplemented", "InvalidArgument"):
                self.delete(name)  # a store without conditional deletes
                return None
            raise
        return None
