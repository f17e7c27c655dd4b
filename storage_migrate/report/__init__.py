"""Outcomes, problems and the two reports: their totals, text, JSON, CSV and JUnit forms, and the
exit statuses they mean.

``problems`` holds the vocabulary (the kinds of outcome, Problem, the log that spills to
disk), ``base`` what both reports share, ``migration`` and ``verification`` each command's own.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import SUMMARY, TEXT_PER_KIND, Report, csv_safe, format_bytes, plural, rate, xml_safe
    from .migration import MigrationReport
    from .problems import (
        AT_DESTINATION,
        CHECKSUM_MISMATCH,
        CONFLICT,
        COPIED,
        DEFAULT_FAIL_ON,
        ERROR,
        EXIT_CONFIG,
        EXIT_OK,
        EXIT_PROBLEMS,
        MEMORY_PROBLEMS,
        METADATA_MISMATCH,
        MIGRATION_PROBLEMS,
        MISSING,
        OK,
        ORPHAN,
        SIZE_MISMATCH,
        SKIPPED,
        UNSAFE_NAME,
        UNVERIFIABLE,
        VERIFY_PROBLEMS,
        Problem,
        ProblemLog,
        iso,
        now,
    )
    from .purge import NOT_PROVEN, NOT_RECORDED, PURGE_PROBLEMS, PurgeReport
    from .verification import INTERRUPTED_DETAIL, JUNIT_MAX_CASES, VerificationReport

__all__ = [
    "AT_DESTINATION",
    "CHECKSUM_MISMATCH",
    "CONFLICT",
    "COPIED",
    "DEFAULT_FAIL_ON",
    "ERROR",
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "INTERRUPTED_DETAIL",
    "JUNIT_MAX_CASES",
    "MEMORY_PROBLEMS",
    "METADATA_MISMATCH",
    "MIGRATION_PROBLEMS",
    "MISSING",
    "NOT_PROVEN",
    "NOT_RECORDED",
    "OK",
    "ORPHAN",
    "PURGE_PROBLEMS",
    "SIZE_MISMATCH",
    "SKIPPED",
    "SUMMARY",
    "TEXT_PER_KIND",
    "UNSAFE_NAME",
    "UNVERIFIABLE",
    "VERIFY_PROBLEMS",
    "MigrationReport",
    "Problem",
    "ProblemLog",
    "PurgeReport",
    "Report",
    "VerificationReport",
    "csv_safe",
    "format_bytes",
    "iso",
    "now",
    "plural",
    "rate",
    "xml_safe",
]


def __getattr__(name: str) -> Any:
    # Each name is imported from its module on first use (the vocabulary's module first): a
    # command's --help, which needs a few constants, does not import every report.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for home in ("problems", "base", "migration", "verification", "purge"):
        module = import_module(f"{__name__}.{home}")
        if hasattr(module, name):
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
