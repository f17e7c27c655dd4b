"""Streaming digests (MD5 always, SHA-1 and SHA-256 when a column keeps one: one read, several
digests), and what an ETag can and cannot prove about an object's bytes."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import BinaryIO

CHUNK = 1024 * 1024
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
# The algorithms a checksum column may hold, and the length of their hex digests.
HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64}
NAMES = {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256"}
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def new_md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)


def new_hash(algorithm: str) -> hashlib._Hash:
    return hashlib.new(algorithm, usedforsecurity=False)


def looks_like(algorithm: str, value: object) -> bool:
    """Is ``value`` a hex digest of ``algorithm`` (any case)?"""
    text = str(value).strip()
    return len(text) == HEX_LENGTHS[algorithm] and bool(_HEX.match(text))


def algorithm_of(value: object) -> str | None:
    """The algorithm whose hex digests look like ``value``, if one does."""
    return next((a for a in HEX_LENGTHS if looks_like(a, value)), None)


class _Others:
    """The digests other than MD5 asked for, fed chunk by chunk."""

    def __init__(self, algorithms: tuple[str, ...]) -> None:
        self.hashes = {a: new_hash(a) for a in algorithms if a != "md5"}

    def feed(self, chunk: bytes) -> None:
        for h in self.hashes.values():
            h.update(chunk)

    def done(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in self.hashes.items()}


@dataclass
class Digest:
    """Size and MD5 of some bytes, and the MD5 of each part when they were hashed in parts;
    ``layout_etag`` is the multipart ETag they give in another object's part layout (a proof
    that they are that object's bytes)."""

    size: int
    md5: str
    part_md5s: list[bytes] = field(default_factory=list)
    layout_etag: str | None = None
    part_size: int | None = None  # the size of the parts of part_md5s
    # The status of the file these bytes were written to, where they were (local disk).
    fingerprint: tuple[object, ...] | None = None
    # Their digests in the other algorithms asked for (sha1, sha256), from the same read.
    others: dict[str, str] = field(default_factory=dict)

    def of(self, algorithm: str) -> str | None:
        """Their hex digest in ``algorithm``, if it was computed."""
        return self.md5 if algorithm == "md5" else self.others.get(algorithm)

    @property
    def content_md5(self) -> str:
        """The base64 form S3 expects in a Content-MD5 header."""
        return base64.b64encode(bytes.fromhex(self.md5)).decode("ascii")

    def multipart_etag(self) -> str | None:
        """The ETag S3 gives a multipart upload of these parts: MD5 of the parts' MD5s, '-N'."""
        return _etag_of(self.part_md5s)


def _etag_of(part_md5s: list[bytes]) -> str | None:
    if not part_md5s:
        return None
    joined = new_md5()
    for digest in part_md5s:
        joined.update(digest)
    return f"{joined.hexdigest()}-{len(part_md5s)}"


class _Parts:
    """The MD5 of each part of a given size, fed chunk by chunk."""

    def __init__(self, part_size: int) -> None:
        self.part_size, self.md5s = part_size, []  # type: tuple[int, list[bytes]]
        self._part, self._in_part = new_md5(), 0

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            take = view[: self.part_size - self._in_part]
            self._part.update(take)
            self._in_part += len(take)
            view = view[len(take) :]
            if self._in_part == self.part_size:
                self.md5s.append(self._part.digest())
                self._part, self._in_part = new_md5(), 0

    def done(self) -> list[bytes]:
        if self._in_part:
            self.md5s.append(self._part.digest())
            self._part, self._in_part = new_md5(), 0
        return self.md5s


def digest_stream(
    stream: BinaryIO,
    part_size: int | None = None,
    layout: int | None = None,
    also: tuple[str, ...] = (),
) -> Digest:
    """Hash a stream chunk by chunk (never the whole file in memory); optionally per part of
    ``part_size`` (our uploads), per part of ``layout`` (another object's parts), and in the
    algorithms ``also`` names (a SHA-1 column's), all from the one read."""
    whole = new_md5()
    size = 0
    parts = [_Parts(n) if n else None for n in (part_size, layout)]
    others = _Others(also)
    feeders = [p.feed for p in parts if p is not None]
    if others.hashes:
        feeders.append(others.feed)
    read = stream.read
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        whole.update(chunk)
        size += len(chunk)
        for feed in feeders:
            feed(chunk)
    ours, theirs = (p.done() if p is not None else [] for p in parts)
    return Digest(
        size=size,
        md5=whole.hexdigest(),
        part_md5s=ours,
        layout_etag=_etag_of(theirs),
        part_size=part_size if ours else None,
        others=others.done(),
    )


def one_part_etag(md5: str) -> str:
    """The ETag of an unencrypted multipart upload of one part with this MD5 (a server-side copy
    made as one part): a function of the MD5, so it proves an MD5 known from elsewhere."""
    return str(_etag_of([bytes.fromhex(md5)]))


def multipart_parts(etag: str | None) -> int | None:
    """How many parts a multipart ETag ("<hex>-<parts>") says the object has, else None."""
    value = normalize_etag(etag)
    head, dash, count = value.partition("-")
    if not dash or not _MD5_HEX.match(head) or not count.isdigit():
        return None
    return int(count)


def digest_bytes(data: bytes, layout: int | None = None, also: tuple[str, ...] = ()) -> Digest:
    digest = Digest(size=len(data), md5=hashlib.md5(data, usedforsecurity=False).hexdigest())
    others = _Others(also)
    others.feed(data)
    digest.others = others.done()
    if layout:
        parts = _Parts(layout)
        parts.feed(data)
        digest.layout_etag = _etag_of(parts.done())
    return digest


def normalize_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"').lower()


def md5_from_etag(etag: str | None, etag_is_md5: bool = True) -> str | None:
    """The object's MD5 if its ETag is one: 32 hex digits, and the store does not encrypt with
    KMS or customer keys (then a 32-hex ETag is not an MD5). A multipart ETag proves nothing."""
    value = normalize_etag(etag)
    if etag_is_md5 and _MD5_HEX.match(value):
        return value
    return None


def is_md5_hex(value: str | None) -> bool:
    return bool(value) and bool(_MD5_HEX.match(str(value).lower()))
