"""Writing to any other Django storage: through its own save(), the bytes hashed on the way,
a renamed result refused, the copy marked as in progress until it is read back and proven."""

from __future__ import annotations

import io
import os
from typing import IO, cast

from django.core.files.storage import Storage

from ..errors import Conflict, VerificationFailed
from ..hashing import CHUNK, Digest, _etag_of, _Others, _Parts, new_md5
from .generic import SAVE_ATTEMPTS, StorageEndpoint


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

    def read(self, size: int | None = -1) -> bytes:
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


class _Upload:
    """What a storage's save() is given: a stream read once, front to back. Backends ask
    whether it can seek (no), rewind it before they start (a no-op at its start), and ask its
    size (given when known). No ``name``: Django would take it for a local path."""

    def __init__(self, reader: HashingReader, size: int | None) -> None:
        self._reader = reader
        self.closed = False
        if size is not None:
            self.size = size

    def read(self, size: int | None = -1) -> bytes:
        return self._reader.read(size)

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        at = self._reader.size
        if (whence == os.SEEK_SET and offset == at) or (whence == os.SEEK_CUR and offset == 0):
            return at
        raise io.UnsupportedOperation("the copy's stream is read once, front to back")

    def close(self) -> None:
        self.closed = True


def write_generic(
    endpoint: StorageEndpoint,
    name: str,
    stream: IO[bytes],
    *,
    overwrite: bool,
    size: int | None = None,
) -> Digest:
    """Save through the storage's API under the name (a renamed result is refused and removed),
    then read it back and hash it. The copy is marked as in progress from before its first
    byte until it is proven: a killed run's part of a file is known as such by the next."""
    storage = endpoint.storage
    if storage.exists(name):
        if not overwrite:
            raise Conflict("destination exists")
        storage.delete(name)
    endpoint.mark_partial(name)
    reader = HashingReader(stream)
    saved = _save(storage, name, reader, size)
    if saved != name:
        storage.delete(saved)
        endpoint.clear_partial(name)  # nothing of ours is under the name
        raise Conflict(f"the storage saved the file as {saved!r}, not under its name")
    for _chunk in iter(lambda: reader.read(CHUNK), b""):  # what the storage left unread
        pass
    sent, stored = reader.digest(), endpoint.hash(name)
    if (stored.size, stored.md5) != (sent.size, sent.md5):
        storage.delete(name)
        endpoint.clear_partial(name)
        raise VerificationFailed(
            f"destination holds {stored.size} bytes of MD5 {stored.md5}, {sent.size} bytes of "
            f"MD5 {sent.md5} were sent"
        )
    endpoint.clear_partial(name)
    return sent


def _save(storage: Storage, name: str, reader: HashingReader, size: int | None) -> str:
    """save(), tried again while it failed before it read a byte and left nothing under the
    name: two threads making one new folder collide (SFTPStorage makes a missing folder after
    looking for it; the second mkdir fails). A failure after that leaves the mark and whatever
    the storage kept for the next run (StorageEndpoint.is_leftover)."""
    from django.core.files import File

    for attempt in range(SAVE_ATTEMPTS):
        try:
            return storage.save(name, File(cast(IO[bytes], _Upload(reader, size))))
        except Exception:
            if attempt + 1 >= SAVE_ATTEMPTS or reader.size or storage.exists(name):
                raise
    raise AssertionError("unreachable")  # pragma: no cover
