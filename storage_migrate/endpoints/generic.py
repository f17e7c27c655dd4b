"""Any other Django storage: written through its own API, the bytes hashed on the way."""

from __future__ import annotations

import os
from typing import IO, cast

from ..errors import Conflict, VerificationFailed
from ..hashing import CHUNK, Digest, _etag_of, _Others, _Parts, new_md5
from .base import Endpoint


class HashingReader:
    """Hashes what is read through it (also in another object's part layout, if given)."""

    def __init__(
        self, stream: IO[bytes], layout: int | None = None, also: tuple[str, ...] = ()
    ) -> None:
        self.stream = stream
        self.md5 = new_md5()
        self.size = 0
        self.parts = _Parts(layout) if layout else None
        self.others = _Others(also)

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size if size is not None and size >= 0 else CHUNK)
        self.md5.update(chunk)
        self.size += len(chunk)
        if self.parts is not None:
            self.parts.feed(chunk)
        self.others.feed(chunk)
        return chunk

    def digest(self) -> Digest:
        layout = _etag_of(self.parts.done()) if self.parts is not None else None
        others = {a: h.copy().hexdigest() for a, h in self.others.hashes.items()}
        return Digest(size=self.size, md5=self.md5.hexdigest(), layout_etag=layout, others=others)


def write_generic(endpoint: Endpoint, name: str, stream: IO[bytes], *, overwrite: bool) -> Digest:
    """Any other Django storage: save through its API, refuse a renamed result, hash it back."""
    from django.core.files import File

    if endpoint.storage.exists(name):
        if not overwrite:
            raise Conflict("destination exists")
        endpoint.storage.delete(name)
    reader = HashingReader(stream)
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
