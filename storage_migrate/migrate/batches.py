"""A run cut into batches for Celery (migrate_storage --enqueue): primary-key ranges of one model
and field, each holding at most a given number of rows, read in bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from ..endpoints.base import Endpoint
    from ..targets import Target
    from .plan import PkRange

# Rows in a batch, by default: a batch is short (one worker's few seconds), so that a worker
# killed mid-batch costs little when its batch is delivered again, and a Redis broker's
# visibility timeout (an hour by default) is far longer than any batch.
BATCH_ROWS = 500


@dataclass(frozen=True)
class Batch:
    """One Celery task's share of a run: the rows of ``model``'s ``field`` whose primary key is
    between ``pk_min`` and ``pk_max`` (both included); ``rows`` of them when it was cut."""

    model: str
    field: str
    pk_min: Any
    pk_max: Any
    rows: int

    @property
    def pk_range(self) -> PkRange:
        from .plan import PkRange

        return PkRange(self.pk_min, self.pk_max)

    def __str__(self) -> str:
        return f"{self.model}.{self.field} pk {self.pk_min}..{self.pk_max}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "field": self.field,
            "pk_min": self.pk_min,
            "pk_max": self.pk_max,
            "rows": self.rows,
        }


def json_pk(pk: Any) -> Any:
    """A primary key as a task's JSON argument: numbers as they are, anything else (a UUID) as
    text, which the database compares as it compares the key itself."""
    if isinstance(pk, int) and not isinstance(pk, bool):
        return pk
    return str(pk)


def _first_keys(keys: QuerySet[Any], count: int) -> list[Any]:
    return list(keys[:count])


def split_batches(
    targets: list[Target],
    batch_rows: int = BATCH_ROWS,
    *,
    limit: int | None = None,
    pending_at: Endpoint | None = None,
) -> Iterator[Batch]:
    """The targets' rows with a file cut into primary-key ranges of ``batch_rows`` rows, in key
    order: one query per batch (pk > last, never OFFSET), so that memory holds one batch's keys.
    With ``pending_at``, only the rows whose columns do not record them there (--pending);
    with ``limit``, the first ``limit`` rows."""
    # Here, not at the top: the commands' --help reads BATCH_ROWS without importing the run.
    from ..rows import fetch, with_files
    from .plan import recorded_at

    if batch_rows < 1:
        raise ValueError("batch_rows must be 1 or more")
    remaining = limit
    for target in targets:
        rows = with_files(target)
        if pending_at is not None:
            recorded = recorded_at(target, pending_at)
            if recorded is not None:
                rows = rows.exclude(recorded)
        keys = rows.order_by("pk").values_list("pk", flat=True)
        last = None
        while remaining is None or remaining > 0:
            size = batch_rows if remaining is None else min(batch_rows, remaining)
            page = keys if last is None else keys.filter(pk__gt=last)
            batch = fetch(target.model, partial(_first_keys, page, size))
            if not batch:
                break
            last = batch[-1]
            if remaining is not None:
                remaining -= len(batch)
            yield Batch(
                target.label, target.field_name, json_pk(batch[0]), json_pk(last), len(batch)
            )
