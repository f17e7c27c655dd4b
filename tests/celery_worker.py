"""The sample site's Celery app, for the workers the end-to-end tests start
(`celery -A tests.celery_worker worker`), with one hook: a row whose name contains
$SLOW_ROW_NAME makes its batch wait $SLOW_ROW_SECONDS before it is copied, after appending the
worker process's pid to $SLOW_ROW_MARKER, so that a test can kill that process mid-batch."""

from __future__ import annotations

import os
import time
from typing import Any

from shams_vision.celery import app
from storage_migrate.migrate.rowcopy import RowCopier

__all__ = ["app"]

_real_process_many = RowCopier.process_many


def _slow_process_many(self: RowCopier, items: list[Any], in_flight: int | None = None) -> Any:
    marker, name = os.environ.get("SLOW_ROW_MARKER"), os.environ.get("SLOW_ROW_NAME")
    if marker and name and any(name in row.name for row, _ in items):
        with open(marker, "a") as out:
            out.write(f"{os.getpid()}\n")
        time.sleep(float(os.environ.get("SLOW_ROW_SECONDS", "5")))
    return _real_process_many(self, items, in_flight)


RowCopier.process_many = _slow_process_many  # type: ignore[method-assign]
