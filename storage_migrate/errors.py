"""Exceptions: configuration errors end a run (exit 2); the others end one row's copy."""

from __future__ import annotations


class ConfigurationError(Exception):
    """The run cannot start: a bad option or setting, a missing bucket, refused credentials.
    Nothing has been written when it is raised."""


class RowError(Exception):
    """One row's transfer failed; the run goes on. ``kind`` is the report's outcome kind."""

    kind = "error"


class SourceMissing(RowError):
    kind = "missing"


class Conflict(RowError):
    kind = "conflict"


class VerificationFailed(RowError):
    kind = "error"
