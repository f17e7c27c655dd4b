"""A storage alias ("local", "s3", any STORAGES key) as an endpoint that can stat, list, read and
delete objects by FileField name. Writing is transfer.py's job."""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import IO, TYPE_CHECKING

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.files.storage.handler import InvalidStorageError

from .conf import Conf
from .errors import ConfigurationError, UnsafeName
from .hashing import Digest, digest_stream
from .names import utf8

if TYPE_CHECKING:
    pass

# Listing a key range costs one request per 1000 keys; past this many keys per row wanted,
# one HEAD per row is cheaper.
LIST_KEYS_PER_ROW = 20
LIST_MIN_BUDGET = 1000
_SSE_C_PARAMS = ("SSECustomerAlgorithm", "SSECustomerKey", "SSECustomerKeyMD5")


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

    def hash(self, name: str, part_size: int | None = None) -> Digest:
        """Read and hash the object's bytes (also per part of ``part_size``, if given)."""
        with self.open(name) as stream:
            return digest_stream(stream, part_size)  # type: ignore[arg-type]

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

    def local_path(self, name: str) -> str | None:
        return None

    def delete(self, name: str) -> None:
        self.storage.delete(name)

    def iter_objects(self, prefix: str = "") -> Iterator[tuple[str, ObjectInfo]]:
        """Every object whose name starts with ``prefix``, in UTF-8 byte order of the names
        (the order S3 lists in), as a stream."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        yield from self._walk(folder, prefix)

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


# Where /proc is mounted (Linux), the kernel names the file a descriptor has open: a check of
# what was opened holds whatever is swapped on the way afterwards.
_PROC_FD = "/proc/self/fd"
_HAS_PROC_FD = os.path.isdir(_PROC_FD)
# O_NONBLOCK: opening a FIFO returns at once (and is refused), never waits for a writer.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
IS_ROOT = "name is the storage's root"
IS_FOLDER = "name is a folder"
NOT_REGULAR = "not a regular file (a FIFO, device or socket)"


class LocalEndpoint(Endpoint):
    """A FileSystemStorage: files under its location (MEDIA_ROOT). Others may change the tree
    during a run, so what decides a read, write or delete is a check of the file or folder
    actually opened (open_checked, open_folder_checked), not an earlier look at its path."""

    kind = "local"
    storage: FileSystemStorage

    def local_path(self, name: str) -> str:
        """The file's path; refused (UnsafeName, a SuspiciousFileOperation) when it is the root,
        a folder, a FIFO, device or socket, or when a symlink on the way leads out of the
        storage's root. An early refusal only: what is opened is checked again once opened."""
        path = self._storage_path(name)
        if path == self.storage.location:
            raise UnsafeName(IS_ROOT)
        real, mode = self._resolve(path)
        if not self._within(real):
            raise UnsafeName(f"{name!r} leads out of {self.storage.location}")
        if S_ISDIR(mode):
            raise UnsafeName(IS_FOLDER)
        if mode and not S_ISREG(mode):
            raise UnsafeName(NOT_REGULAR)
        return path

    def _inside(self, path: str) -> bool:
        """Does the path, symlinks resolved, stay under the root?"""
        return self._within(self._resolve(path)[0])

    def _resolve(self, path: str) -> tuple[str, int]:
        """The path with symlinks resolved, and the mode of what is there (0: nothing). Folders
        repeat from row to row (date folders), so each folder's real path is resolved once; the
        file itself is looked at (one lstat) every time."""
        folder, base = os.path.split(path)
        real_folder = self._real_folders.get(folder)
        if real_folder is None:
            if len(self._real_folders) > 65_536:
                self._real_folders.clear()
            real_folder = self._real_folders[folder] = os.path.realpath(folder)
        real = os.path.join(real_folder, base)
        try:
            mode = os.lstat(real).st_mode
        except OSError:
            return real, 0  # not there (yet: a destination)
        if S_ISLNK(mode):
            real = os.path.realpath(real)
            try:
                mode = os.stat(real).st_mode
            except OSError:
                mode = 0
        return real, mode

    def _within(self, real: str) -> bool:
        root = self._real_root
        return real == root or real.startswith(root + os.sep)

    def _opened_inside(self, fd: int, path: str) -> bool:
        """Is what this descriptor has open inside the root? Asked of the kernel where /proc
        says (one readlink); else the path, resolved now, must lead to the very file opened."""
        if _HAS_PROC_FD:
            with contextlib.suppress(OSError):
                return self._within(os.readlink(f"{_PROC_FD}/{fd}"))
        real = os.path.realpath(path)
        try:
            opened, there = os.fstat(fd), os.stat(real)
        except OSError:
            return False
        same = (opened.st_dev, opened.st_ino) == (there.st_dev, there.st_ino)
        return same and self._within(real)

    def open_checked(self, name: str, path: str | None = None) -> int:
        """A descriptor of the regular file under this name, for reading, checked once opened:
        inside the root (symlinks within it allowed) and a regular file, never a FIFO waited
        on. ``path`` is local_path(name), when the caller has it already."""
        path = path or self.local_path(name)
        try:
            fd = os.open(path, _READ_FLAGS)
        except IsADirectoryError:
            raise UnsafeName(IS_FOLDER) from None
        try:
            if not self._opened_inside(fd, path):
                raise UnsafeName(f"{name!r} leads out of {self.storage.location}")
            mode = os.fstat(fd).st_mode
            if S_ISDIR(mode):
                raise UnsafeName(IS_FOLDER)
            if not S_ISREG(mode):
                raise UnsafeName(NOT_REGULAR)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_folder_checked(self, name: str, *, create: bool = False) -> tuple[int, str]:
        """A descriptor of the folder the name's file is in, checked once opened, and the file's
        name in it: what is then done through it (``dir_fd=``) happens in that folder, inside
        the root, whatever is swapped meanwhile. ``create`` makes the missing folders, each one
        made only in a folder already checked."""
        path = self.local_path(name)
        folder, base = os.path.split(path)
        try:
            dfd = os.open(folder, _FOLDER_FLAGS)
        except FileNotFoundError:
            if not create:
                raise
            dfd = self._make_folders(folder)
        try:
            if not self._opened_inside(dfd, folder):
                raise UnsafeName(f"{name!r} leads out of {self.storage.location}")
        except BaseException:
            os.close(dfd)
            raise
        return dfd, base

    def _make_folders(self, folder: str) -> int:
        """Make the folders down to ``folder``, one at a time, each in its checked parent (so
        nothing is made beyond a folder swapped for a link out); a descriptor of the last."""
        root = str(self.storage.location)
        os.makedirs(root, exist_ok=True)  # the root is the settings' own
        dfd = os.open(root, _FOLDER_FLAGS)
        made = root
        try:
            for part in os.path.relpath(folder, root).split(os.sep):
                if part in ("", "."):
                    continue
                if not self._opened_inside(dfd, made):
                    raise UnsafeName(f"folder {os.path.relpath(made, root)!r} leads out of {root}")
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=dfd)
                child = os.open(part, _FOLDER_FLAGS, dir_fd=dfd)
                os.close(dfd)
                dfd, made = child, os.path.join(made, part)
        except BaseException:
            os.close(dfd)
            raise
        return dfd

    def pinned_path(self, fd: int, path: str, owner: object) -> str:
        """A path that opens again the very file this descriptor has open, as long as ``owner``
        lives (``/proc/self/fd/N`` of a duplicate, closed with the owner): a file re-read later
        by path (boto3 does) is the one checked, whatever the name leads to by then. Without
        /proc, the path itself."""
        if not _HAS_PROC_FD:
            return path
        pinned = os.dup(fd)
        weakref.finalize(owner, os.close, pinned)
        return f"{_PROC_FD}/{pinned}"

    @cached_property
    def _storage_path(self) -> NameMemo:
        return NameMemo(self.storage.path)

    @cached_property
    def _real_folders(self) -> dict[str, str]:
        return {}

    @cached_property
    def _real_root(self) -> str:
        return os.path.realpath(self.storage.location)

    def canonical(self, name: str) -> str:
        relative = os.path.relpath(self.local_path(name), self.storage.location)
        return relative.replace(os.sep, "/")

    def preflight(
        self, *, as_source: bool, create_bucket: bool = False, dry_run: bool = False
    ) -> None:
        root = self.storage.location
        fix = "check MEDIA_ROOT or the storage's location"
        configured = os.fspath(self.storage.base_location or "")
        if not os.path.isabs(configured):
            # FileSystemStorage makes it absolute against the current folder: files would be
            # read from, written to (and deleted from) wherever the command happens to run.
            raise ConfigurationError(
                f"Storage {self.alias!r} has the location {configured!r}, which is not an "
                f"absolute path ({fix})."
            )
        if as_source:
            if not os.path.isdir(root):
                raise ConfigurationError(
                    f"Storage {self.alias!r} reads from {root}, which is not a directory ({fix})."
                )
            return
        # A destination (a dry run too, which predicts the real run): the folder, or the
        # nearest folder above it that exists (the run makes the rest), must take writes.
        # os.access also says no on a read-only filesystem and to an immutable folder.
        existing = root
        while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise ConfigurationError(
                f"Storage {self.alias!r} writes to {root}, but {existing} is not a directory "
                f"({fix})."
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            where = "it" if existing == root else f"{existing}, where it would be made,"
            raise ConfigurationError(
                f"Storage {self.alias!r} writes to {root}, but {where} is not writable "
                f"(make it writable, or {fix})."
            )

    def stat(self, name: str) -> ObjectInfo | None:
        # Status only, never an open: a FIFO is refused, not waited on.
        try:
            st = os.stat(self.local_path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if S_ISDIR(st.st_mode):
            raise UnsafeName(IS_FOLDER)
        if not S_ISREG(st.st_mode):
            raise UnsafeName(NOT_REGULAR)
        return ObjectInfo(size=st.st_size)

    def open(self, name: str) -> IO[bytes]:
        fd = self.open_checked(name)
        try:
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _walk(self, folder: str, prefix: str) -> Iterator[tuple[str, ObjectInfo]]:
        path = os.path.join(self.storage.location, folder)
        try:
            dfd = os.open(path, _FOLDER_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return
        entries: list[tuple[str, int]] = []
        try:
            if not self._opened_inside(dfd, path):
                return  # a folder swapped for a link out of the root: nothing of it is listed
            with os.scandir(dfd) as scan:  # status only: nothing listed is ever opened
                for entry in scan:
                    name = f"{folder}/{entry.name}" if folder else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        entries.append((entry.name + "/", 0))
                    elif not name.startswith(prefix):
                        continue
                    elif entry.is_file(follow_symlinks=False):
                        entries.append((entry.name, entry.stat(follow_symlinks=False).st_size))
                    elif (
                        entry.is_symlink()
                        and entry.is_file()
                        and self._inside(os.path.join(path, entry.name))
                    ):  # a link to a file within the root
                        entries.append((entry.name, entry.stat().st_size))
        finally:
            os.close(dfd)
        for label, size in sorted(entries, key=lambda e: utf8(e[0])):
            name = f"{folder}/{label}" if folder else label
            if label.endswith("/"):
                if name.startswith(prefix) or prefix.startswith(name):
                    yield from self._walk(name.rstrip("/"), prefix)
            else:
                yield name, ObjectInfo(size=size)

    def fingerprint(self, name: str) -> Fingerprint | None:
        try:
            # Only the file's status, never its bytes: the way out through a symlink is
            # checked where the file is read.
            st = os.stat(self._storage_path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)

    def delete(self, name: str) -> None:
        try:
            dfd, base = self.open_folder_checked(name)
        except FileNotFoundError:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base, dir_fd=dfd)  # in the folder checked, whatever is swapped now
        finally:
            os.close(dfd)


def endpoint_for(alias: str, conf: Conf) -> Endpoint:
    """The endpoint of a STORAGES alias, by the kind of its storage."""
    try:
        storage = storages[alias]
    except InvalidStorageError:
        known = ", ".join(sorted(getattr(settings, "STORAGES", {}) or {}))
        raise ConfigurationError(
            f"Storage alias {alias!r} is not in STORAGES (known: {known})"
        ) from None
    return endpoint_for_storage(alias, storage, conf)


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


def endpoint_for_storage(alias: str, storage: Storage, conf: Conf) -> Endpoint:
    """An endpoint for a storage instance (a field's own storage, or an alias's)."""
    if isinstance(storage, FileSystemStorage):
        return LocalEndpoint(alias, storage, conf)
    from storages.backends.s3 import S3Storage

    if isinstance(storage, S3Storage):
        from .s3 import S3Endpoint  # here: s3.py builds on this module

        return S3Endpoint(alias, storage, conf)
    return Endpoint(alias, storage, conf)
