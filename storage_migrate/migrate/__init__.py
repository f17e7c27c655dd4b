"""One run of migrate_storage: plan -> copy -> verify -> commit -> (delete, once the run is over).

``run`` schedules the rows, ``plan`` decides what each row needs and refuses a run that could
lose files, ``rowcopy`` copies and proves one row's file, ``commit`` writes the rows whose copies
are proven, ``deletion`` deletes sources only when every row that shares them is clean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import migrate_storage

__all__ = ["migrate_storage"]


def __getattr__(name: str) -> Any:
    # On first use: importing one of the package's modules does not import the whole run.
    if name == "migrate_storage":
        from .run import migrate_storage

        return migrate_storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
