"""Local disk (a FileSystemStorage): reads, deletes and writes that check the file or folder
actually opened, so that a tree changed during the run cannot redirect them."""

from __future__ import annotations

import contextlib
import os
import uuid
import weakref
from collections.abc import Iterator
from functools import cached_property
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import IO

from django.core.files.storage import FileSystemStorage

from ..errors import ConfigurationError, UnsafeName
from ..names import utf8
from .base import Endpoint, Fingerprint, NameMemo, ObjectInfo

# Where /proc is mounted (Linux), the kernel names the file a descriptor has open: a check of
# what was opened holds whatever is swapped on the way afterwards.
_PROC_FD = "/proc/self/fd"
_HAS_PROC_FD = os.path.isdir(_PROC_FD)
# O_NONBLOCK: opening a FIFO returns at once (and is refused), never waits for a writer.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
# What remove_if_unchanged() answers for a file already gone.
_GONE = "gone"
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

    def remove_if_unchanged(
        self, name: str, fingerprint: Fingerprint, quarantine: str | None = None
    ) -> str | None:
        """The file is first renamed aside (atomic: a new upload under the name from then on is
        left alone), into its own folder, or into the quarantine's, then compared with the
        fingerprint (size, mtime, inode; a rename changes the ctime): a file that is not the
        one proven is put back, never over a newer one. Only then is it unlinked, or given its
        name in the quarantine (never over another file there). Killed half way, the file is
        beside its name, or in the quarantine, under a name ending in .removing."""
        try:
            dfd, base = self.open_folder_checked(name)
        except FileNotFoundError:
            return _GONE
        qfd = None
        try:
            if quarantine is not None:
                try:
                    qfd, qbase = self.open_folder_checked(f"{quarantine}/{name}", create=True)
                except (OSError, UnsafeName, ValueError) as exc:
                    return f"the quarantine cannot hold {name!r}: {exc}; the source stays"
            holder = dfd if qfd is None else qfd
            # 40 characters (160 bytes at most) of the name: within a file name's 255 bytes.
            aside = f".{(base if qfd is None else qbase)[:40]}.{uuid.uuid4().hex[:12]}.removing"
            changed = "source changed after it was copied"
            try:
                entry = os.stat(base, dir_fd=dfd, follow_symlinks=False)  # the name itself
                st = os.stat(base, dir_fd=dfd)  # the file it names (a symlink's target)
                if (st.st_size, st.st_mtime_ns, st.st_ino) != tuple(fingerprint[:3]):
                    return f"{changed}; it was not deleted (run again)"
                os.rename(base, aside, src_dir_fd=dfd, dst_dir_fd=holder)
            except FileNotFoundError:
                if qfd is not None:
                    self._finish_quarantine(qfd, qbase)
                return _GONE
            except OSError as exc:  # another file system, a read-only folder: nothing moved
                return f"the file could not be moved aside ({exc}); the source stays"
            try:
                moved = os.stat(aside, dir_fd=holder, follow_symlinks=False)
                # The entry renamed is the one checked: a file put under the name in between
                # is another inode, one rewritten in place has another mtime.
                if not os.path.samestat(moved, entry) or moved.st_mtime_ns != entry.st_mtime_ns:
                    return self._put_back(holder, aside, dfd, base, changed)
                if qfd is not None:
                    return self._name_in_quarantine(qfd, aside, qbase, f"{quarantine}/{name}")
                os.unlink(aside, dir_fd=holder)
            except OSError as exc:
                return self._put_back(holder, aside, dfd, base, f"{exc.strerror or exc}")
            return None
        finally:
            os.close(dfd)
            if qfd is not None:
                os.close(qfd)

    @staticmethod
    def _move_free(src_fd: int, src: str, dst_fd: int, dst: str) -> bool:
        """Give a file another name, never over another file: a hard link (atomic), or where
        the file system has none, a rename while the name is free. False if it is taken."""
        try:
            os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (fs.protected_hardlinks, a FAT or FUSE mount)
            try:
                os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
                return False
            except FileNotFoundError:
                os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                return True
        os.unlink(src, dir_fd=src_fd)
        return True

    def _put_back(self, holder: int, aside: str, dfd: int, base: str, why: str) -> str:
        try:
            if self._move_free(holder, aside, dfd, base):
                return f"{why}; it was not deleted (run again)"
            where = f"kept as {aside!r}, as a newer file took its name"
        except OSError as exc:
            where = f"kept as {aside!r}, as it could not be put back ({exc})"
        return f"{why}: the file is {where} beside its name or in the quarantine (run again)"

    def _name_in_quarantine(self, qfd: int, aside: str, qbase: str, target: str) -> str | None:
        """Give the file its name in the quarantine; why not (it is then put back), or None."""
        if self._move_free(qfd, aside, qfd, qbase):
            return None
        there = os.stat(qbase, dir_fd=qfd, follow_symlinks=False)
        if os.path.samestat(there, os.stat(aside, dir_fd=qfd, follow_symlinks=False)):
            os.unlink(aside, dir_fd=qfd)  # linked there by an interrupted run: this very file
            return None
        raise FileExistsError(f"the quarantine already holds {target!r}")

    def finish_quarantine(self, name: str, quarantine: str) -> None:
        """For a name already gone: a move of its file into the quarantine that an interrupted
        run left under its temporary name is given its name there."""
        try:
            qfd, qbase = self.open_folder_checked(f"{quarantine}/{name}")
        except (OSError, UnsafeName, ValueError):
            return
        try:
            self._finish_quarantine(qfd, qbase)
        finally:
            os.close(qfd)

    def _finish_quarantine(self, qfd: int, qbase: str) -> None:
        """A move into the quarantine that an interrupted run left under its temporary name
        gets its name there."""
        with contextlib.suppress(OSError):
            prefix = f".{qbase[:40]}."
            left = [n for n in os.listdir(qfd) if n.startswith(prefix) and n.endswith(".removing")]
            if len(left) == 1:
                self._move_free(qfd, left[0], qfd, qbase)

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
