"""What proves that an object holds given bytes, and what proves a download."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import Conflict, Unverifiable, VerificationFailed
from ..hashing import Digest, is_md5_hex, multipart_parts, one_part_etag
from .base import Endpoint, ObjectInfo

if TYPE_CHECKING:
    from .s3 import S3Endpoint
    from .sources import Source


def _etag_md5(endpoint: Endpoint, name: str, info: ObjectInfo) -> tuple[ObjectInfo, str | None]:
    """The MD5 the object's ETag proves, asking with a HEAD when a listing gave none (a listing
    cannot tell a KMS ETag from an MD5, nor does it say whether the object is encrypted)."""
    if info.etag_md5 or info.headed or endpoint.kind != "s3":
        return info, info.etag_md5
    headed = endpoint.head(name, info)
    return headed, headed.etag_md5


def same_bytes(
    a: Endpoint,
    a_name: str,
    a_info: ObjectInfo,
    b: Endpoint,
    b_name: str,
    b_info: ObjectInfo,
    *,
    known_md5: str | None = None,
) -> str | None:
    """The MD5 of the bytes both objects hold, when it is proven that they hold the same bytes;
    None when they differ. Reads an object only where no ETag proves it. ``known_md5`` (the
    row's stored checksum) is what is returned when two equal multipart ETags, which stores
    compute from the parts' bytes, prove the objects equal without telling their MD5."""
    if a_info.size != b_info.size:
        return None
    if known_md5 and _equal_multipart(a, a_info, b, b_info):
        return known_md5
    a_info, a_md5 = _etag_md5(a, a_name, a_info)
    b_info, b_md5 = _etag_md5(b, b_name, b_info)
    if a_md5 and b_md5:
        if a_md5 == b_md5:
            return a_md5
        # A listing's ETag can mislead (a bucket's default KMS encryption): ask again.
        a_info, a_md5 = _etag_md5(a, a_name, a.head(a_name, a_info))
        b_info, b_md5 = _etag_md5(b, b_name, b.head(b_name, b_info))
        if a_md5 and b_md5:
            return a_md5 if a_md5 == b_md5 else None
    if b_md5 and not a_md5:  # make `a` the side an ETag proves, if either
        a, a_name, a_info, a_md5, b, b_name, b_info, b_md5 = (
            b, b_name, b_info, b_md5, a, a_name, a_info, a_md5,
        )  # fmt: skip
    if a_md5:
        return a_md5 if b.hash(b_name).md5 == a_md5 else None
    for x, x_name, x_info, y, y_name in (
        (a, a_name, a_info, b, b_name),
        (b, b_name, b_info, a, a_name),
    ):
        part_size = x.part_size(x_name, x_info)
        if part_size:
            digest = y.hash(y_name, part_size)
            return digest.md5 if digest.multipart_etag() == x_info.etag else None
    first = a.hash(a_name).md5
    return first if b.hash(b_name).md5 == first else None


def _equal_multipart(a: Endpoint, a_info: ObjectInfo, b: Endpoint, b_info: ObjectInfo) -> bool:
    """Two objects on S3 stores whose multipart ETags (of the same parts, unencrypted) agree."""
    return (
        a.kind == b.kind == "s3"
        and bool(multipart_parts(a_info.etag))
        and a_info.etag == b_info.etag
        and not (a_info.encrypted or b_info.encrypted)
        and bool(getattr(a, "etag_is_md5", False) and getattr(b, "etag_is_md5", False))
    )


def one_part_proves(endpoint: Endpoint, info: ObjectInfo, md5: str) -> bool:
    """Is the object an unencrypted one-part multipart upload of bytes with this MD5?"""
    return (
        multipart_parts(info.etag) == 1
        and bool(getattr(endpoint, "etag_is_md5", False))
        and not info.encrypted
        and is_md5_hex(md5)
        and info.etag == one_part_etag(md5)
    )


def etag_proves(endpoint: Endpoint, name: str, info: ObjectInfo, md5: str) -> bool:
    """Does the object's ETag prove it holds bytes with this MD5 (no read)?"""
    if one_part_proves(endpoint, info, md5):
        # A listing cannot tell a KMS-encrypted object: only a HEAD's answer is taken.
        headed = endpoint.head(name, info)
        return one_part_proves(endpoint, headed, md5)
    info, etag_md5 = _etag_md5(endpoint, name, info)
    if etag_md5 and etag_md5 != md5 and not info.headed:
        info, etag_md5 = _etag_md5(endpoint, name, endpoint.head(name, info))
    return etag_md5 == md5


def holds(endpoint: Endpoint, name: str, info: ObjectInfo, md5: str) -> bool:
    """Is the object proven to hold bytes with this MD5 (its ETag, else reading it)?"""
    if one_part_proves(endpoint, info, md5) and etag_proves(endpoint, name, info, md5):
        return True
    info, etag_md5 = _etag_md5(endpoint, name, info)
    if etag_md5 and etag_md5 != md5 and not info.headed:
        info, etag_md5 = _etag_md5(endpoint, name, endpoint.head(name, info))
    if etag_md5:
        return etag_md5 == md5
    return endpoint.hash(name).md5 == md5


def prove_download(
    info: ObjectInfo | None,
    digest: Digest,
    layout_etag: str | None,
    stored_md5: str | None,
    stored_others: dict[str, str] | None = None,
) -> None:
    """Raise unless the bytes read are proven to be the object's: its ETag is their MD5, or
    its multipart ETag is what their parts give (``layout_etag``, hashed with the object's part
    layout), or, with neither, they match a digest the row stores (its MD5, or its SHA-1 or
    SHA-256 where ``digest`` has that algorithm's: the database is trusted). A bit flipped on
    the way must never be committed."""
    if info is None:
        return  # a storage that says nothing of its objects: the caller hashed what it wrote
    if info.size != digest.size:
        raise VerificationFailed(f"read {digest.size} bytes, the object has {info.size}")
    if info.etag_md5:
        if info.etag_md5 != digest.md5:
            raise VerificationFailed(f"read MD5 {digest.md5}, but the ETag says {info.etag_md5}")
        return
    if layout_etag:
        if layout_etag != info.etag:
            raise VerificationFailed(
                f"the bytes read give the multipart ETag {layout_etag}, the object has {info.etag}"
            )
        return
    stored = {"md5": stored_md5, **(stored_others or {})}
    compared = {a: v for a, v in stored.items() if v and digest.of(a)}
    if compared and all(digest.of(a) == v for a, v in compared.items()):
        return
    why = "it differs from the stored checksum" if compared else "the row has no stored checksum"
    raise Unverifiable(
        "the download could not be proven equal to the object (its ETag is not an MD5, its part "
        f"layout is unknown, and {why}); nothing was written"
    )


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


def prove_adopted(endpoint: S3Endpoint, name: str, source: Source) -> ObjectInfo:
    """A retried write whose first attempt succeeded (its answer was lost) finds its own object:
    that is a success if the object holds these very bytes. Anything else under the name is
    someone else's, and is neither replaced nor deleted."""
    found = endpoint.stat(name)
    digest = source.digest
    multipart = endpoint.etag_is_md5 and found is not None and not found.encrypted
    if (
        found is not None
        and found.size == digest.size
        and (found.etag_md5 == digest.md5 or (multipart and found.etag == digest.multipart_etag()))
    ):
        found.md5 = digest.md5
        return found
    raise Conflict("an object appeared under this name during the copy")
