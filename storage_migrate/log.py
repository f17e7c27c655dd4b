"""The one logger of the package: -v 3 shows its debug lines (the decisions, row by row)."""

from __future__ import annotations

import logging

log = logging.getLogger("storage_migrate")
