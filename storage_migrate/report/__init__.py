"""Outcomes, problems and the two reports: their totals, text, JSON, CSV and JUnit forms, and the
exit statuses they mean.

``problems`` holds the vocabulary (the kinds of outcome, Problem, the log that spills to
disk), ``base`` what both reports share, ``migration`` and ``verification`` each command's own.
"""

from __future__ import annotations

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
