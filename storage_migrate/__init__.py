"""django-storage-migrate: move a Django site's files between storages, verified, and prove them.

Public API::

    from storage_migrate import migrate_storage
    report = migrate_storage(to="s3")          # local -> s3
    report.exit_code, report.totals, report.problems

    from storage_migrate import verify_files
    report = verify_files(level="checksum", orphans=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "ConfigurationError",
    "MigrationReport",
    "Problem",
    "VerificationReport",
    "migrate_storage",
    "verify_files",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .errors import ConfigurationError
    from .migrate.run import migrate_storage
    from .report.migration import MigrationReport
    from .report.problems import Problem
    from .report.verification import VerificationReport
    from .verify.run import verify_files


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (e.g. from settings) does not import Django models.
    if name == "migrate_storage":
        from .migrate.run import migrate_storage

        return migrate_storage
    if name == "ConfigurationError":
        from .errors import ConfigurationError

        return ConfigurationError
    if name == "verify_files":
        from .verify.run import verify_files

        return verify_files
    if name in ("MigrationReport", "Problem", "VerificationReport"):
        from . import report

        return getattr(report, name)
    raise AttributeError(name)
