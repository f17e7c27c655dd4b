"""Rows: one row's file and metadata, what happened to it, and reading rows in primary-key
batches (pk > last, never OFFSET)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.db.models import QuerySet

from .endpoints.base import Fingerprint, ObjectInfo
from .errors import DatabaseLost
from .report.problems import COPIED, SKIPPED, Problem
from .targets import Target


@dataclass
class Row:
    """One row's file and its metadata columns, as read from the database."""

    target: Target
    pk: Any
    name: str
    meta: dict[str, Any]
    key: str = ""
    # What tells the source file apart from others (places.identity), with --delete-source.
    source_id: tuple[Any, ...] | None = None

    @classmethod
    def from_values(cls, target: Target, values: Sequence[Any]) -> Row:
        """From ``with_files(target).values_list(*row_columns(target))``."""
        meta = dict(zip(target.columns, values[2:], strict=True))
        return cls(target, values[0], str(values[1]), meta)

    def problem(self, kind: str, detail: str, **extra: Any) -> Problem:
        target = self.target
        return Problem(kind, target.label, target.field_name, self.pk, self.name, detail, **extra)


@dataclass
class RowResult:
    """What happened to one row. ``outcome`` is copied, skipped, or a problem kind."""

    row: Row
    outcome: str
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)
    # The source as it was when it was read (checked again before it is deleted).
    fingerprint: Fingerprint | None = None
    # The verified object at the destination, and what must still hold there when the source
    # is deleted (migrate/deletion.py, destination_proof).
    dest: ObjectInfo | None = None
    dest_proof: list[Any] | None = None
    server_side: bool = False  # copied inside the store (see endpoints/s3copy.py)

    @property
    def clean(self) -> bool:
        return self.outcome in (COPIED, SKIPPED) and not self.problems


class _Unknown:
    """The destination could not be listed for this row: the worker asks it directly."""


UNKNOWN = _Unknown()
Planned = ObjectInfo | None | _Unknown

ProgressCallback = Callable[[RowResult], None]
# Rows written in one transaction (migrate_storage's commits, verify_files --fix-metadata).
COMMIT_ROWS = 500
StartCallback = Callable[[int], None]


def with_files(target: Target) -> QuerySet[Any]:
    """The target's rows whose file field is not empty (every manager's rows: _base_manager)."""
    attname = str(target.field.attname)
    return target.model._base_manager.exclude(**{attname: ""}).exclude(
        **{f"{attname}__isnull": True}
    )


def stored_digest(row: Row, role: str) -> str:
    """The digest the row stores under ``role`` ('' when none), as digests compare: lower
    case, without the spaces a hand-edited column may carry."""
    return str(row.meta.get(role) or "").strip().lower()


def stored_others(row: Row) -> dict[str, str]:
    """The row's stored digests other than MD5, by algorithm (its SHA-1, SHA-256)."""
    return {
        algorithm: stored_digest(row, role)
        for role, algorithm in row.target.digests.items()
        if algorithm != "md5" and stored_digest(row, role)
    }


def row_columns(target: Target) -> tuple[str, ...]:
    """What Row.from_values reads: pk, the file name, the metadata columns."""
    return ("pk", str(target.field.attname), *target.columns.values())


# A batch read that fails for a lost connection is tried this many times, reconnecting between.
READ_ATTEMPTS = 4


def reconnect(model: Any) -> None:
    """Drop the model's database connection if it is broken, so the next query opens a new one
    (never inside a transaction the caller holds: that one is the caller's to end)."""
    from django.db import connections, router

    connection = connections[router.db_for_read(model)]
    if not connection.in_atomic_block:
        connection.close()


def fetch(model: Any, read: Callable[[], list[Any]]) -> list[Any]:
    """``read()``, tried again on a fresh connection when the database connection was lost
    (PostgreSQL restarted, a connection killed); DatabaseLost when it stays away."""
    from django.db import InterfaceError, OperationalError

    for attempt in range(READ_ATTEMPTS):
        try:
            return read()
        except (OperationalError, InterfaceError) as exc:
            if attempt + 1 == READ_ATTEMPTS:
                alias = model._meta.app_label
                raise DatabaseLost(
                    f"The database went away during the run ({type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else alias}); what "
                    "was committed stays committed: run the same command again when it is back."
                ) from exc
            reconnect(model)
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _first(queryset: QuerySet[Any], count: int) -> list[Any]:
    return list(queryset[:count])


def rows_by_pk(
    target: Target, batch_size: int, rows: QuerySet[Any] | None = None
) -> Iterator[list[Row]]:
    """The target's rows with a file (or those of ``rows``), in primary-key batches (pk > last,
    never OFFSET), each batch read again on a fresh connection if the connection was lost."""
    base = with_files(target) if rows is None else rows
    queryset = base.order_by("pk").values_list(*row_columns(target))
    last = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        batch = fetch(target.model, partial(_first, page, batch_size))
        if not batch:
            return
        last = batch[-1][0]
        yield [Row.from_values(target, values) for values in batch]
