"""Server-side copies between two S3 storages on one store: the bytes never pass through this
process. CopyObject up to COPY_CUTOFF, parallel UploadPartCopy above it; the source pinned
with x-amz-copy-source-if-match on every request; the destination's whole header set written
(MetadataDirective=REPLACE); no overwrite without --overwrite; every copy proven before a row
may point at it (DESIGN section 4: a single CopyObject's ETag is the MD5 of what it wrote)."""

from __future__ import annotations

import contextlib
import math
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..conf import Conf, MiB
from ..errors import Conflict, SourceMissing, Unverifiable, VerificationFailed
from ..hashing import Digest, md5_from_etag, multipart_parts, normalize_etag, one_part_etag
from ..log import log
from .base import Endpoint, ObjectInfo
from .places import strip_userinfo
from .s3 import S3Endpoint
from .s3write import S3Engine, _engine

MAX_PARTS = 10_000
MAX_PART = 5 * 1024 * MiB  # S3's largest part (and largest CopyObject)
# The names of the copy probe's scratch objects, under the destination's prefix (not the
# preflight's: a marker that tells two aliases apart is never tidied away by another run).
PROBE = ".storage-migrate-copy-probe-"


def copies_server_side(src: Endpoint, dst: Endpoint, conf: Conf) -> bool:
    """Do this pair's copies stay inside the store? Both S3 storages on one endpoint, and one set
    of credentials for both (the destination's client reads the source), or the settings say
    the destination's credentials can read the source (SERVER_SIDE_COPY = "always")."""
    if conf.SERVER_SIDE_COPY == "never":
        return False
    if not (isinstance(src, S3Endpoint) and isinstance(dst, S3Endpoint)):
        return False
    if strip_userinfo(src.s3storage.endpoint_url) != strip_userinfo(dst.s3storage.endpoint_url):
        return False
    if conf.SERVER_SIDE_COPY == "always":
        return True
    mine, theirs = src.credentials, dst.credentials
    return mine is not None and theirs is not None and mine.access_key == theirs.access_key


@dataclass
class CopySupport:
    """What the store does with the headers a server-side copy relies on (probed once a run)."""

    pins_source: bool = False  # x-amz-copy-source-if-match refused when it does not match
    conditional_copy: bool = False  # If-None-Match: * on CopyObject refused over an object
    part_copy: bool = False  # UploadPartCopy answers with the part's ETag


_PROBE_LOCK = threading.Lock()


def copy_support(dst: S3Endpoint) -> CopySupport:
    """Ask the store once (scratch objects beside the destination's files, removed after)."""
    with _PROBE_LOCK:
        found = getattr(dst, "_copy_support", None)
        if found is None:
            found = dst._copy_support = _probe(dst)  # type: ignore[attr-defined]
            log.debug("storage %s: server-side copies %s", dst.alias, found)
        return found


def _probe(dst: S3Endpoint) -> CopySupport:
    from botocore.exceptions import BotoCoreError, ClientError

    client, bucket = dst.client, dst.bucket
    _tidy_probes(dst)
    base = f"{dst.key_prefix}{PROBE}{uuid.uuid4().hex}"
    a, b = f"{base}-a", f"{base}-b"
    params = dst.probe_params(a)
    source: Any = {"Bucket": bucket, "Key": a}
    copy_params = {**params, **{f"CopySource{k}": v for k, v in dst.read_params.items()}}
    support = CopySupport()
    try:
        client.put_object(Bucket=bucket, Key=a, Body=b"storage-migrate probe", **params)
        support.pins_source = _refused(
            lambda: client.copy_object(
                Bucket=bucket, Key=b, CopySource=source, CopySourceIfMatch='"0"', **copy_params
            )
        )
        client.copy_object(Bucket=bucket, Key=b, CopySource=source, **copy_params)
        support.conditional_copy = _refused(
            lambda: client.copy_object(
                Bucket=bucket, Key=b, CopySource=source, IfNoneMatch="*", **copy_params
            )
        )
        upload = client.create_multipart_upload(Bucket=bucket, Key=b, **params)
        try:
            part = client.upload_part_copy(
                Bucket=bucket,
                Key=b,
                UploadId=upload["UploadId"],
                PartNumber=1,
                CopySource=source,
                **{k: v for k, v in copy_params.items() if k.startswith(("SSE", "CopySource"))},
            )
            support.part_copy = bool(normalize_etag(part.get("CopyPartResult", {}).get("ETag")))
        finally:
            client.abort_multipart_upload(Bucket=bucket, Key=b, UploadId=upload["UploadId"])
    except (ClientError, BotoCoreError) as exc:
        log.debug("storage %s: copy probe stopped: %s", dst.alias, exc)
    finally:
        for key in (a, b):
            with contextlib.suppress(ClientError, BotoCoreError):
                client.delete_object(Bucket=bucket, Key=key)
    return support


def _tidy_probes(dst: S3Endpoint) -> None:
    """Remove what a run killed during its probe left (scratch objects, a multipart upload):
    the names are this probe's own. One of a run probing at this very moment may go too; its
    probe then finds less support than there is (a 404 is never a 412), never more."""
    from botocore.exceptions import BotoCoreError, ClientError

    client, bucket, prefix = dst.client, dst.bucket, f"{dst.key_prefix}{PROBE}"
    with contextlib.suppress(ClientError, BotoCoreError):
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=100)
        for entry in listed.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=entry["Key"])
    with contextlib.suppress(ClientError, BotoCoreError):  # rclone: NoSuchUpload when none
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix, MaxUploads=100)
        for upload in uploads.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )


def _refused(call: Any) -> bool:
    """Was the request refused for its precondition (412)? Written: the header was ignored."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as exc:
        return _precondition_failed(exc)
    return False


def _precondition_failed(exc: Any) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict")


class StreamInstead(Exception):
    """This object cannot be copied inside the store: its bytes are streamed instead."""


class ServerCopy:
    """One object copied inside the store, from ``src`` to ``dst`` under the same name."""

    def __init__(
        self,
        src: S3Endpoint,
        dst: S3Endpoint,
        name: str,
        conf: Conf,
        *,
        content_type: str | None,
        overwrite: bool,
        stored_md5: str | None,
    ) -> None:
        self.src, self.dst, self.name, self.conf = src, dst, name, conf
        self.overwrite, self.stored_md5 = overwrite, stored_md5
        self.engine: S3Engine = _engine(dst, conf)
        self.support = copy_support(dst)
        self.key = dst.key(name)
        self.params = self.engine.write_params(self.key, content_type)
        self.copy_source = {"Bucket": src.bucket, "Key": src.key(name)}
        self.written = ""  # the ETag of the object this copy made
        # An answer said the copy is encrypted with KMS or a customer key (a bucket's default
        # encryption the settings do not tell): none of its ETags is then an MD5.
        self.encrypted = False

    def run(self) -> tuple[Digest, ObjectInfo]:
        """Copy, prove, and return the bytes' digest and the verified destination object; raises
        a RowError (the source gone or changed, a conflict, a copy that is not proven)."""
        source = self.src.stat(self.name)
        if source is None:
            raise SourceMissing("source file does not exist")
        self.source = source
        # A HEAD's 32-hex ETag of an unencrypted object is its MD5: known before the copy.
        known = source.etag_md5
        metadata = {**self.params.get("Metadata", {}), **({"md5": known} if known else {})}
        params = {**self.params, "Metadata": metadata, "MetadataDirective": "REPLACE"}
        self.pin = {
            "CopySourceIfMatch": f'"{source.etag}"',
            **{f"CopySource{k}": v for k, v in self.src.read_params.items()},
        }
        parts = source.size > self.conf.COPY_CUTOFF
        if parts and not self.support.part_copy:
            # UploadPartCopy answers without the part's ETag (`rclone serve s3`): no part can be
            # joined. One CopyObject takes up to 5 GB; a larger object is streamed instead.
            if source.size > MAX_PART:
                raise StreamInstead("the store does not copy parts and the object is over 5 GB")
            parts = False
        if parts:
            etag, _parts = self._multipart(params, self._part_size(source))
            self.written = etag
            md5 = self._prove_parts(etag)
            return Digest(size=source.size, md5=md5), ObjectInfo(
                size=source.size, md5=md5, etag=etag
            )
        etag, copied = self._single(params, known)
        self.written = etag
        md5 = self._prove_single(copied)
        single = copied == md5 and not multipart_parts(etag)
        info = ObjectInfo(size=source.size, md5=md5, etag=etag, etag_md5=md5 if single else None)
        return Digest(size=source.size, md5=md5), info

    # --- the requests ---------------------------------------------------------------------

    def _single(self, params: dict[str, Any], known: str | None) -> tuple[str, str | None]:
        """One CopyObject; without overwrite, conditional where the store honours that, else
        as a one-part multipart copy whose completion is conditional, else after a HEAD.
        Returns the object's ETag and the MD5 of what was written, where the store said it."""
        conditional = not self.overwrite and self.support.conditional_copy
        if not self.overwrite and not conditional:
            if self.support.part_copy and self.engine.conditional_writes:
                if known:  # the ETag the part will give, beside the md5 it is the hint of
                    params["Metadata"]["etag"] = one_part_etag(known)
                etag, parts = self._multipart(params, None)
                # One part of the whole object: its ETag is the object's MD5.
                part_md5 = md5_from_etag(parts[0], self._plain)
                whole = part_md5 and etag == one_part_etag(part_md5)
                return etag, part_md5 if whole else None
            self.engine._refuse_taken(self.key)  # a store without conditional writes
        self._in_store(self.source.size)
        response = self._call(
            self.dst.client.copy_object,
            Bucket=self.dst.bucket,
            Key=self.key,
            CopySource=self.copy_source,
            **self.pin,
            **params,
            **({"IfNoneMatch": "*"} if conditional else {}),
        )
        self._note(response)
        result = response.get("CopyObjectResult") or {}
        etag = normalize_etag(result.get("ETag"))
        if not etag:
            raise VerificationFailed("the store answered CopyObject without an ETag")
        return etag, md5_from_etag(etag, self._plain)

    def _note(self, response: Any) -> None:
        """Remember an answer that says the copy is encrypted (its ETag is then no MD5)."""
        if str(response.get("ServerSideEncryption", "")).startswith("aws:kms") or response.get(
            "SSECustomerAlgorithm"
        ):
            self.encrypted = True

    @property
    def _plain(self) -> bool:
        """Are the copy's ETags MD5s (no KMS or customer keys in the destination's settings,
        nor in any answer about this copy)?"""
        return self.dst.etag_is_md5 and not self.encrypted

    def _part_size(self, source: ObjectInfo) -> int:
        """The source's own part layout where it has one (the copy's ETag is then the source's),
        else parts of MULTIPART_CHUNKSIZE, larger where 10 000 would not hold the object."""
        layout = self.src.part_size(self.name, source)
        fits = layout and math.ceil(source.size / layout) <= MAX_PARTS
        if layout and fits and 5 * MiB <= layout <= MAX_PART:
            return layout
        smallest = math.ceil(source.size / MAX_PARTS / MiB) * MiB
        return max(self.conf.MULTIPART_CHUNKSIZE, smallest)

    def _multipart(self, params: dict[str, Any], part_size: int | None) -> tuple[str, list[str]]:
        """CreateMultipartUpload with the header set, UploadPartCopy in parallel (the whole
        object as one part when ``part_size`` is None), a completion that never replaces an
        object unless asked. Aborted on any failure."""
        client, bucket, key = self.dst.client, self.dst.bucket, self.key
        size = self.source.size
        if part_size is None or size == 0:
            ranges: list[tuple[int, int] | None] = [None]
        else:
            ranges = [(a, min(a + part_size, size) - 1) for a in range(0, size, part_size)]
        create = {k: v for k, v in params.items() if k != "MetadataDirective"}
        if part_size is not None:  # above COPY_CUTOFF (even as one part: a part size over
            # the object's); a small object's one-part copy is left to a lifecycle rule
            self.engine.abort_leftovers(key)
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
        sse = {k: v for k, v in params.items() if k.startswith("SSECustomer")}
        try:

            def part(number: int, span: tuple[int, int] | None) -> str:
                extra = {} if span is None else {"CopySourceRange": f"bytes={span[0]}-{span[1]}"}
                self._in_store(size if span is None else span[1] - span[0] + 1)
                response = self._call(
                    client.upload_part_copy,
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=self.copy_source,
                    **self.pin,
                    **sse,
                    **extra,
                )
                self._note(response)
                etag = normalize_etag(response.get("CopyPartResult", {}).get("ETag"))
                if not etag:
                    raise VerificationFailed("the store answered UploadPartCopy without an ETag")
                return etag

            workers = max(1, min(len(ranges), self.conf.WORKERS, 8))
            if workers == 1:
                etags = [part(1, ranges[0])]
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="storage-migrate-part") as pool:
                    etags = list(pool.map(part, range(1, len(ranges) + 1), ranges))
            no_clobber = not self.overwrite
            if no_clobber:
                self.engine._refuse_taken(key)
            conditional = no_clobber and self.engine.conditional_writes
            condition = {"IfNoneMatch": "*"} if conditional else {}
            response = self._call(
                client.complete_multipart_upload,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"ETag": f'"{e}"', "PartNumber": n} for n, e in enumerate(etags, 1)]
                },
                **condition,
            )
        except BaseException:
            with contextlib.suppress(Exception):  # else its parts are left to a lifecycle rule
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        self._note(response)
        etag = normalize_etag(response.get("ETag"))
        if not etag or response.get("Key", key) != key:
            raise VerificationFailed("the store answered CompleteMultipartUpload without an ETag")
        return etag, etags

    def _in_store(self, nbytes: int) -> None:
        """Counted against --max-rate: the store's bandwidth is shared with the live site."""
        if self.dst.meter is not None:
            self.dst.meter.data(nbytes, "in_store")

    def _call(self, method: Any, **kwargs: Any) -> Any:
        """A request; 412 tells a source that changed (its pin) from a name taken meanwhile."""
        from botocore.exceptions import ClientError

        try:
            return method(**kwargs)
        except ClientError as exc:
            if not _precondition_failed(exc):
                raise
            now = self.src.stat(self.name)
            if now is None or now.etag != self.source.etag:
                raise VerificationFailed(
                    "source changed while it was copied; nothing was written (run again)"
                ) from None
            raise Conflict("an object appeared under this name during the copy") from None

    # --- the proof ------------------------------------------------------------------------

    def _prove_single(self, copied: str | None) -> str:
        """The MD5 of a single copy's bytes, proven to be the source's: the copy's MD5 is the
        source's plain ETag, or the row's checksum (the database is trusted), or the store pins
        the source (so the copy is of the version headed); else the destination is read."""
        source = self.source
        if copied and source.etag_md5:
            if copied != source.etag_md5:
                self._remove_ours()
                raise VerificationFailed(
                    f"the copy's MD5 {copied} is not the source's {source.etag_md5} (the source "
                    "changed during the copy?); the copy was removed (run again)"
                )
            return copied
        if copied and (self.support.pins_source or copied == self.stored_md5):
            return copied
        return self._read_proof(copied)

    def _prove_parts(self, etag: str) -> str:
        """A copy in parts: its ETag (the source's, in the source's layout) proves the bytes
        equal but tells no MD5, and the row's checksum is what the MD5 must be compared with,
        never taken for it (a stale one is a checksum_mismatch, as a streamed copy reports):
        the destination is read once, in the source's layout."""
        return self._read_proof(None)

    def _read_proof(self, copied: str | None) -> str:
        """Read the destination (in the source's part layout where the source is multipart)
        and prove it holds the source's bytes; remove our copy if it does not."""
        src, dst, source = self.src, self.dst, self.source
        layout = None if source.etag_md5 else src.part_size(self.name, source)
        digest = dst.hash(self.name, layout)
        if source.etag_md5:
            proven = digest.md5 == source.etag_md5
        else:
            by_layout = layout is not None and digest.multipart_etag() == source.etag
            proven = by_layout or digest.md5 == self.stored_md5
        if digest.size != source.size or (copied is not None and digest.md5 != copied):
            proven = False
        if not proven:
            self._remove_ours()
            now = src.stat(self.name)
            if source.etag_md5 or layout is not None or self.stored_md5 or self._changed(now):
                raise VerificationFailed(
                    "the server-side copy does not hold the source's bytes (the source changed "
                    "during the copy?); the copy was removed (run again)"
                )
            raise Unverifiable(
                "the server-side copy could not be proven equal to its source (the source's "
                "ETag is not an MD5, its part layout is unknown, the store does not pin copies "
                "to it, and the row has no stored checksum); the copy was removed"
            )
        return digest.md5

    def _changed(self, now: ObjectInfo | None) -> bool:
        """Is the source no longer the version headed before the copy?"""
        return now is None or (now.size, now.etag) != (self.source.size, self.source.etag)

    def _remove_ours(self) -> None:
        """Remove the copy just made: never with --overwrite (the object replaced is gone
        either way, and a row may point at the name), never another writer's object (the
        delete is conditional on our copy's ETag where the store honours If-Match)."""
        if self.overwrite or not self.written:
            return
        current = self.dst.stat(self.name)
        if current is not None and current.etag == self.written:
            self.dst.remove_if_unchanged(self.name, (current.size, current.etag))


def copy_server_side(
    src: S3Endpoint,
    dst: S3Endpoint,
    name: str,
    conf: Conf,
    *,
    content_type: str | None,
    overwrite: bool,
    stored_md5: str | None,
) -> tuple[Digest, ObjectInfo, bool]:
    """Copy one object inside the store and prove it (see ServerCopy). Also returns whether
    the object was found already copied: a retried request whose first answer was lost, or
    another run's copy, proven to hold the source's bytes (never ours to delete)."""
    from .proof import same_bytes

    copy = ServerCopy(
        src,
        dst,
        name,
        conf,
        content_type=content_type,
        overwrite=overwrite,
        stored_md5=stored_md5,
    )
    try:
        digest, info = copy.run()
    except Conflict:
        found = dst.stat(name)
        if found is not None:
            md5 = same_bytes(src, name, copy.source, dst, name, found, known_md5=stored_md5)
            if md5:
                found.md5 = md5
                return Digest(size=found.size, md5=md5), found, True
        raise
    return digest, info, False
