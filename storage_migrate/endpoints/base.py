"""What every storage is to us: an endpoint that can stat, list, read and delete objects by
FileField name, and what it says of an object (ObjectInfo). The kinds are local.py, s3.py and,
for any other Django storage, Endpoint itself; writing is transfer.py's job."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from django.core.files.storage import Storage, storages
from django.core.files.storage.handler import InvalidStorageError

from ..conf import Conf
from ..hashing import Digest, digest_stream
from ..meter import Meter
from ..names import utf8
from ..readahead import read_ahead


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
    # When the object was last written (POSIX seconds), where a HEAD said it.
    modified: float | None = None


Fingerprint = tuple[object, ...]


class NameMemo:
    """A bounded memo of a pure function of a name: a row's name is looked up several times
    while it is in flight (planning, reading, verifying). Errors are not kept."""

    def __init__(self, function: Callable[[str], str], size: int = 8192) -> None:
        self._function, self._size = function, size
        self._values: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        value = self._values.get(name)
        if value is None:
            value = self._function(name)
            if len(self._values) >= self._size:
                self._values.clear()
            self._values[name] = value
        return value


class Endpoint:
    """Base: any Django storage, through the storage API only."""

    kind = "storage"
    bucket = ""
    # The run's requests and bytes, and its ceilings (--max-rate, --max-requests): S3 only.
    meter: Meter | None = None
    # At most this many threads use the storage at once (None: as many as WORKERS).
    max_threads: int | None = None

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

    def hash(self, name: str, part_size: int | None = None, also: tuple[str, ...] = ()) -> Digest:
        """Read and hash the object's bytes (also per part of ``part_size``, if given, and in
        the algorithms ``also`` names)."""
        with self.open(name) as stream:
            return digest_stream(stream, part_size, also=also)  # type: ignore[arg-type]

    def part_size(self, name: str, info: ObjectInfo) -> int | None:
        """The part size of a multipart object (S3), else None."""
        return None

    def head(self, name: str, info: ObjectInfo) -> ObjectInfo:
        """The object with everything the storage can say of it (S3: a HEAD after a listing)."""
        return info

    def is_empty(self, prefix: str) -> bool:
        """Nothing is stored under this folder."""
        return next(iter(self.iter_objects(prefix)), None) is None

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

    def close(self) -> None:
        """Close what the endpoint opened for the run (connections of its worker threads)."""

    def local_path(self, name: str) -> str | None:
        return None

    def delete(self, name: str) -> None:
        self.storage.delete(name)

    def remove_if_unchanged(
        self, name: str, fingerprint: Fingerprint, quarantine: str | None = None
    ) -> str | None:
        """Delete the file (or move it to ``quarantine/name``) only if it is, at that moment,
        the file with this fingerprint: why not, or None once it is done. Only local disk and
        S3 remove a source (a delete elsewhere cannot be proven safe)."""
        raise NotImplementedError(f"{type(self).__name__} does not remove sources")

    def finish_quarantine(self, name: str, quarantine: str) -> None:
        """For a name already gone: finish a move into the quarantine that an interrupted run
        left half done (where a move has two steps)."""

    def iter_objects(self, prefix: str = "") -> Iterator[tuple[str, ObjectInfo]]:
        """Every object whose name starts with ``prefix``, in UTF-8 byte order of the names
        (the order S3 lists in), as a stream."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        yield from self._walk(folder, prefix)

    def iter_objects_ahead(self, prefix: str = "") -> Generator[tuple[str, ObjectInfo], None, None]:
        """iter_objects, its next pages fetched by a thread while the caller works through the
        current one (readahead.py). Close it when done with it early: its thread stops."""
        return read_ahead(self.iter_objects(prefix))

    def _walk(self, folder: str, prefix: str) -> Iterator[tuple[str, ObjectInfo]]:
        try:
            dirs, files = self.storage.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        entries = [(d + "/", True) for d in dirs] + [(f, False) for f in files]
        for entry, is_dir in sorted(entries, key=lambda e: utf8(e[0])):
            name = f"{folder}/{entry}" if folder else entry
            if is_dir:
                if name.startswith(prefix) or prefix.startswith(name):
                    yield from self._walk(name.rstrip("/"), prefix)
            elif name.startswith(prefix):
                yield name, ObjectInfo(size=self.storage.size(name))


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
