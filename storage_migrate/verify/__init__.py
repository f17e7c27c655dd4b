"""One run of verify_files: is every row's file where the app reads it, with its size and MD5?

``run`` walks the rows, ``check`` judges one row against what the storage holds, ``fix`` writes
the --fix-metadata columns, ``joins`` joins many rows with one listing, ``orphans`` finds files
no row points to.
"""

from __future__ import annotations

from .run import verify_files

__all__ = ["verify_files"]
