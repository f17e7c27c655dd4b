"""Exceptions: configuration errors end a run (exit 2); the others end one row's copy."""

from __future__ import annotations

from django.core.exceptions import SuspiciousFileOperation


class ConfigurationError(Exception):
    """The run cannot start: a bad option or setting, a database that cannot be read, a missing
    bucket, refused credentials, a destination folder that cannot be written. Nothing has been
    written when it is raised."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a driver's message may span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class DatabaseLost(Exception):
    """The database went away during a run and did not come back after a few attempts. What
    was committed until then stays committed; ``report`` is the report of the run so far."""


class RowError(Exception):
    """One row's transfer failed; the run goes on. ``kind`` is the report's outcome kind."""

    kind = "error"


class SourceMissing(RowError):
    kind = "missing"


class Conflict(RowError):
    kind = "conflict"


class VerificationFailed(RowError):
    kind = "error"


class UnsafeName(RowError, SuspiciousFileOperation):
    """The name is not a regular file inside the storage's root: it leads out of it (a folder
    swapped for a symlink), is the root or a folder, or is a FIFO, device or socket. A
    SuspiciousFileOperation too, so that every check of a name that catches those refuses it."""

    kind = "unsafe_name"


class Unverifiable(RowError):
    """The bytes could not be proven equal to the object they came from."""

    kind = "unverifiable"
