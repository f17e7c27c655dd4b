"""Django storages for the site itself while its files move: FallbackStorage reads the new storage
and falls back to the old one, writes only to the new one, and deletes from both, so that no file
is missing from the site between the first copy and the last.

    STORAGES = {
        "default": {
            "BACKEND": "storage_migrate.storage.FallbackStorage",
            "OPTIONS": {"primary": "s3", "fallback": "local"},
        },
        "s3": {...}, "local": {...},
    }

``url()`` sends no request on a hot page: it decides from what it has learned of each name, in a
bounded cache (a name seen in the primary stays there; "not in the primary yet" is believed for
``miss_ttl`` seconds, after which a migration that has copied the file in the meantime is seen).
``file_url()`` decides from a row's own metadata columns (``bucket``/``object_key``), which
migrate_storage writes when it commits the row, with no request at all.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import IO, Any

from django.core.files.base import File
from django.core.files.storage import Storage, storages
from django.db import models
from django.utils.deconstruct import deconstructible

# "In the primary": kept until evicted (a file does not leave the primary but through delete()).
# "Not in the primary yet": believed for this many seconds.
MISS_TTL = 60.0
CACHE_SIZE = 10_000


class _Places:
    """A bounded, thread-safe memory of where names are: name -> (in the primary, until when)."""

    def __init__(self, size: int, miss_ttl: float) -> None:
        self.size, self.miss_ttl = size, miss_ttl
        self._known: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> bool | None:
        with self._lock:
            entry = self._known.get(name)
            if entry is None:
                return None
            in_primary, until = entry
            if until < time.monotonic():
                del self._known[name]
                return None
            self._known.move_to_end(name)
            return in_primary

    def put(self, name: str, in_primary: bool) -> None:
        until = float("inf") if in_primary else time.monotonic() + self.miss_ttl
        with self._lock:
            self._known[name] = (in_primary, until)
            self._known.move_to_end(name)
            while len(self._known) > self.size:
                self._known.popitem(last=False)

    def forget(self, name: str) -> None:
        with self._lock:
            self._known.pop(name, None)


@deconstructible(path="storage_migrate.storage.FallbackStorage")
class FallbackStorage(Storage):
    """Reads from ``primary``, else from ``fallback``; writes to ``primary`` only; deletes from
    both. ``primary`` and ``fallback`` are STORAGES aliases."""

    def __init__(
        self,
        primary: str = "s3",
        fallback: str = "local",
        miss_ttl: float = MISS_TTL,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        if primary == fallback:
            raise ValueError(f"FallbackStorage needs two storages, not {primary!r} twice")
        self.primary_alias, self.fallback_alias = primary, fallback
        self._places = _Places(cache_size, miss_ttl)

    @property
    def primary(self) -> Storage:
        return storages[self.primary_alias]

    @property
    def fallback(self) -> Storage:
        return storages[self.fallback_alias]

    # What a model that records its storage on save reads: the primary's, where writes go.
    @property
    def bucket_name(self) -> str:
        name = getattr(self.primary, "bucket_name", None)
        if name is None:
            raise AttributeError("bucket_name")  # a local primary: no bucket (hasattr is False)
        return str(name)

    @property
    def location(self) -> str:
        return str(getattr(self.primary, "location", "") or "")

    # --- where a name is ----------------------------------------------------------------------

    def in_primary(self, name: str) -> bool:
        """Whether the primary holds the name: from memory, else one request (remembered)."""
        known = self._places.get(name)
        if known is None:
            known = bool(self.primary.exists(name))
            self._places.put(name, known)
        return known

    def _reading(self, name: str) -> Storage:
        """The storage a read of this name goes to: the primary when it holds it (asked now, not
        from memory: a read must not miss a file that has just been copied)."""
        if self.primary.exists(name):
            self._places.put(name, True)
            return self.primary
        self._places.put(name, False)
        return self.fallback

    # --- reads: the primary, then the fallback ----------------------------------------------

    def _open(self, name: str, mode: str = "rb") -> File[Any]:
        if any(c in mode for c in "wa+"):
            return self.primary.open(name, mode)  # writes go to the primary only
        try:
            file = self.primary.open(name, mode)
        except (FileNotFoundError, IsADirectoryError):
            self._places.put(name, False)
            return self.fallback.open(name, mode)
        self._places.put(name, True)
        return file

    def exists(self, name: str) -> bool:
        """In either storage: a new upload never takes the name of a file not yet moved."""
        return self._reading(name) is self.primary or bool(self.fallback.exists(name))

    def size(self, name: str) -> int:
        return int(self._reading(name).size(name))

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        """What either storage holds in the folder (a folder only one of them has is fine)."""
        folders: set[str] = set()
        files: set[str] = set()
        found = False
        for storage in (self.primary, self.fallback):
            try:
                more_folders, more_files = storage.listdir(path)
            except FileNotFoundError:
                continue
            found = True
            folders.update(more_folders)
            files.update(more_files)
        if not found:
            raise FileNotFoundError(f"No folder {path!r} in either storage")
        return sorted(folders), sorted(files)

    def get_accessed_time(self, name: str) -> datetime:
        return self._reading(name).get_accessed_time(name)

    def get_created_time(self, name: str) -> datetime:
        return self._reading(name).get_created_time(name)

    def get_modified_time(self, name: str) -> datetime:
        return self._reading(name).get_modified_time(name)

    def path(self, name: str) -> str:
        """The local path, where one of the two storages is local disk and holds the file."""
        for storage in (self.primary, self.fallback):
            try:
                path = storage.path(name)
            except NotImplementedError:
                continue
            if storage.exists(name):
                return str(path)
        raise NotImplementedError("Neither storage holds this file on local disk.")

    def url(self, name: str | None) -> str:
        """The URL of the storage that holds the name, decided from memory (one request the first
        time a name is seen, or again once "not in the primary yet" is older than miss_ttl)."""
        assert name is not None
        storage = self.primary if self.in_primary(name) else self.fallback
        return str(storage.url(name))

    # --- writes: the primary only; deletes: both --------------------------------------------

    def _save(self, name: str, content: IO[bytes] | File[Any]) -> str:
        saved = str(self.primary.save(name, content))
        self._places.put(saved, True)
        return saved

    def delete(self, name: str) -> None:
        """From both storages, so that a deleted file does not come back through the fallback."""
        self._places.forget(name)
        self.primary.delete(name)
        self.fallback.delete(name)

    def get_valid_name(self, name: str) -> str:
        return str(self.primary.get_valid_name(name))

    def generate_filename(self, filename: str | os.PathLike[str]) -> str:
        return str(self.primary.generate_filename(filename))

    def get_alternative_name(self, file_root: str, file_ext: str) -> str:
        return str(self.primary.get_alternative_name(file_root, file_ext))


def file_url(instance: models.Model, field_name: str = "file") -> str:
    """The URL of a row's file with no request: from the row's bucket column, which
    migrate_storage fills when it commits the row's copy (empty for local disk). The row is
    served from whichever of the two storages keeps its files in that bucket, the primary when
    both could; a row whose model has no bucket column, or whose bucket is neither's, from
    what the storage has learned (its url()). For templates and serializers; a field whose
    storage is not a FallbackStorage gives its own url()."""
    from .conf import get_conf
    from .targets import metadata_columns

    fieldfile = getattr(instance, field_name)
    storage = fieldfile.storage
    name = fieldfile.name
    if not isinstance(storage, FallbackStorage) or not name:
        return str(fieldfile.url)
    field = instance._meta.get_field(field_name)
    assert isinstance(field, models.FileField)
    columns = metadata_columns(type(instance), field, get_conf())
    if "bucket" not in columns:  # an object key alone cannot tell disk from a bucket
        return storage.url(name)
    bucket = getattr(instance, columns["bucket"], "") or ""
    for candidate in (storage.primary, storage.fallback):
        if (getattr(candidate, "bucket_name", "") or "") == bucket:
            return str(candidate.url(name))
    return storage.url(name)
