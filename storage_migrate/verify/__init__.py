"""One run of verify_files: is every row's file where the app reads it, with its size and MD5?

``run`` walks the rows, ``check`` judges one row against what the storage holds, ``fix`` writes
the --fix-metadata columns, ``joins`` joins many rows with one listing, ``orphans`` finds files
no row points to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import verify_files

__all__ = ["LEVELS", "verify_files"]

# What a check looks at, from the cheapest: here, so that the command's --help has them without
# importing the run.
LEVELS = ("exists", "size", "checksum", "deep")


def __getattr__(name: str) -> Any:
    # On first use: importing one of the package's modules does not import the whole run.
    if name == "verify_files":
        from .run import verify_files

        return verify_files
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
