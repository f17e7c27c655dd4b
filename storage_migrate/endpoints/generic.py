"""Any other Django storage (SFTP, Google Cloud, Azure, your own), through the Storage API only:
one instance of the storage per thread, and markers of the copies in progress, which tell a
killed copy's half-written file from someone else's."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Generator, Iterator
from typing import IO, Any

from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.utils.module_loading import import_string

from ..conf import Conf
from ..errors import ConfigurationError, one_line
from ..hashing import CHUNK, new_md5
from .base import Endpoint, ObjectInfo

# A remote server takes only so many connections at once (OpenSSH: 10 starting logins by
# default, and then refuses some): at most this many threads talk to one such storage.
GENERIC_THREADS = 8
# Where a copy in progress is marked (one small file per name, removed once the copy is
# verified): a write through the Storage API may land in place (SFTP, FTP), so a killed copy
# can leave a part of a file under its final name.
MARKERS = ".storage-migrate-partial"
# A save that failed before anything was written (two threads making one new folder) is tried
# this many times in all.
SAVE_ATTEMPTS = 3


# Storages that hold one connection per instance, which threads must not share: each worker
# thread gets its own instance. Any other storage is shared as it is: one whose files live in
# the instance (InMemoryStorage, or a storage of your own) would otherwise be written into a
# throwaway copy, and a row pointed at a file that is nowhere.
PER_THREAD = frozenset(
    {
        "storages.backends.sftpstorage.SFTPStorage",
        "storages.backends.ftp.FTPStorage",
    }
)


def rebuild(storage: Storage) -> Storage | None:
    """A new instance of a storage with its constructor's arguments (Django storages are
    deconstructible), for the storages of PER_THREAD; None for any other."""
    deconstruct = getattr(storage, "deconstruct", None)
    kind = type(storage)
    if deconstruct is None or f"{kind.__module__}.{kind.__qualname__}" not in PER_THREAD:
        return None
    path, args, kwargs = deconstruct()
    cls = import_string(path)
    return cls(*args, **kwargs)  # type: ignore[no-any-return]


class StorageEndpoint(Endpoint):
    """Any Django storage that is neither local disk nor S3. A Storage is not promised to be
    thread-safe (one paramiko SFTP session shared by threads mixes up their answers and hangs):
    each worker thread gets its own instance of the storages that hold a connection
    (PER_THREAD), rebuilt from the storage's deconstruct()."""

    max_threads = GENERIC_THREADS

    def __init__(self, alias: str, storage: Storage, conf: Conf) -> None:
        self._made: list[Storage] = []
        self._local = threading.local()
        self._owner = threading.get_ident()
        self._lock = threading.Lock()
        super().__init__(alias, storage, conf)
        self._leftovers: set[str] = set()

    @property
    def storage(self) -> Storage:
        """This thread's instance of the storage."""
        if threading.get_ident() == self._owner:
            return self._shared
        mine: Storage | None = getattr(self._local, "storage", None)
        if mine is None:
            mine = rebuild(self._shared) or self._shared
            self._local.storage = mine
            if mine is not self._shared:
                with self._lock:
                    self._made.append(mine)
        return mine

    @storage.setter
    def storage(self, storage: Storage) -> None:
        self._shared = storage

    def iter_objects_ahead(self, prefix: str = "") -> Generator[tuple[str, ObjectInfo], None, None]:
        """Listed in the calling thread, not ahead: a thread of its own would open one more
        connection (its own instance, see storage) to a server that takes only so many."""
        yield from self.iter_objects(prefix)

    def preflight(
        self, *, as_source: bool, create_bucket: bool = False, dry_run: bool = False
    ) -> None:
        """The storage answers (a server that cannot be reached, or refuses the login, is one
        line, exit 2); the markers of copies that a killed run left unfinished are read."""
        try:
            self._leftovers = set(self._markers())
        except Exception as exc:
            raise ConfigurationError(
                f"Storage {self.alias!r} ({type(self._shared).__name__}) cannot be listed: "
                f"{one_line(exc)}"
            ) from exc

    def _markers(self) -> Iterator[str]:
        try:
            _dirs, files = self.storage.listdir(MARKERS)
        except FileNotFoundError:
            return
        yield from files

    @staticmethod
    def marker(name: str) -> str:
        """The marker of a copy of ``name`` in progress."""
        return f"{MARKERS}/{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()}"

    def mark_partial(self, name: str) -> None:
        """Say that a copy of ``name`` is being written (before its first byte is)."""
        marker = self.marker(name)
        for attempt in range(SAVE_ATTEMPTS):  # threads making the folder at once collide
            try:
                if not self.storage.exists(marker):
                    self.storage.save(marker, ContentFile(name.encode("utf-8", "surrogatepass")))
                return
            except Exception:
                if attempt + 1 >= SAVE_ATTEMPTS:
                    raise

    def clear_partial(self, name: str) -> None:
        """The copy of ``name`` is verified, or none of its bytes are under its name."""
        self.storage.delete(self.marker(name))
        self._leftovers.discard(self.marker(name).rsplit("/", 1)[1])

    def was_partial(self, name: str) -> bool:
        """Did a run that was stopped leave a copy of ``name`` unfinished?"""
        return self.marker(name).rsplit("/", 1)[1] in self._leftovers

    def is_leftover(
        self, name: str, dest: ObjectInfo, source: Endpoint, source_info: ObjectInfo
    ) -> bool:
        """Is the object under ``name`` what a killed copy of the source left: marked as in
        progress, shorter than the source, and its bytes the source's first bytes? Such a file
        holds nothing the source does not, and may be replaced."""
        if not self.was_partial(name) or dest.size >= source_info.size:
            return False
        return _md5_of(self, name, None) == _md5_of(source, name, dest.size)

    def open_info(self, name: str) -> tuple[IO[bytes], ObjectInfo | None]:
        """A stream of the object; FileNotFoundError now, not at the first read, when there is
        none (some backends open lazily)."""
        if not self.storage.exists(name):
            raise FileNotFoundError(f"{name!r} is not in storage {self.alias!r}")
        return self.open(name), None

    def close(self) -> None:
        """Close the connections of the instances made for the worker threads."""
        with self._lock:
            made, self._made = self._made, []
        for storage in made:
            close: Any = getattr(storage, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()


def _md5_of(endpoint: Endpoint, name: str, limit: int | None) -> str:
    """The MD5 of the object's first ``limit`` bytes (all of them when None), streamed."""
    md5 = new_md5()
    left = limit
    with endpoint.open(name) as stream:
        while left is None or left > 0:
            chunk = stream.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            md5.update(chunk)
            if left is not None:
                left -= len(chunk)
    return md5.hexdigest()
