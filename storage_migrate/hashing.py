"""Streaming MD5, and what an ETag can and cannot prove about an object's bytes."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import BinaryIO

CHUNK = 1024 * 1024
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")


def new_md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)


@dataclass
class Digest:
    """Size and MD5 of some bytes, and the MD5 of each part when they were hashed in parts."""

    size: int
    md5: str
    part_md5s: list[bytes] = field(default_factory=list)

    @property
    def content_md5(self) -> str:
        """The base64 form S3 expects in a Content-MD5 header."""
        return base64.b64encode(bytes.fromhex(self.md5)).decode("ascii")

    def multipart_etag(self) -> str | None:
        """The ETag S3 gives a multipart upload of these parts: MD5 of the parts' MD5s, '-N'."""
        if not self.part_md5s:
            return None
        joined = new_md5()
        for digest in self.part_md5s:
            joined.update(digest)
        return f"{joined.hexdigest()}-{len(self.part_md5s)}"


def digest_stream(stream: BinaryIO, part_size: int | None = None) -> Digest:
    """Hash a stream chunk by chunk (never the whole file in memory); optionally per part."""
    whole = new_md5()
    size = 0
    parts: list[bytes] = []
    part = new_md5()
    in_part = 0
    read = stream.read
    while True:
        chunk = read(min(CHUNK, part_size - in_part) if part_size else CHUNK)
        if not chunk:
            break
        whole.update(chunk)
        size += len(chunk)
        if part_size:
            part.update(chunk)
            in_part += len(chunk)
            if in_part == part_size:
                parts.append(part.digest())
                part, in_part = new_md5(), 0
    if part_size and in_part:
        parts.append(part.digest())
    return Digest(size=size, md5=whole.hexdigest(), part_md5s=parts)


def digest_bytes(data: bytes) -> Digest:
    return Digest(size=len(data), md5=hashlib.md5(data, usedforsecurity=False).hexdigest())


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
