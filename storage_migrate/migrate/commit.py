"""Committing the rows whose copies are proven: one short transaction per batch, one UPDATE
statement per group of rows (batch_update), each row only if it still holds the same file; a
deadlock or a lost connection is retried, a value one row refuses stays that row's problem."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, transaction

from ..report.migration import MigrationReport
from ..report.problems import COPIED, ERROR, SKIPPED, Problem
from ..rows import (
    COMMIT_ROWS,
    Row,
    RowResult,
    reconnect,
)
from .deletion import DeletionLedger

# Verified rows are committed in one transaction per COMMIT_ROWS rows, or sooner: every
# COMMIT_SECONDS.
COMMIT_SECONDS = 1.0
COMMIT_ATTEMPTS = 4
# Rows a PostgreSQL UPDATE ... FROM (VALUES ...) statement carries.
VALUES_ROWS = 1000


def _columns(result: RowResult) -> dict[str, Any]:
    columns = result.row.target.columns
    return {columns[role]: value for role, value in result.updates.items()}


def batch_update(group: list[RowResult]) -> bool:
    """One UPDATE for every row of the group (one model, field and set of columns), each row only
    if it still holds the same file: one statement run for each row (executemany: a few
    microseconds a row on SQLite, where an ORM update() costs a round of query building each),
    or on PostgreSQL one statement joined with the rows' values. True when every row was
    updated; False (nothing to undo: the caller updates row by row) when one was not, or when
    the columns are not all in the model's own table (multi-table inheritance: the ORM's job)."""
    from django.db import connections, router

    target = group[0].row.target
    model = target.model._meta.concrete_model
    assert model is not None
    meta = model._meta
    own = set(meta.local_concrete_fields)
    fields: list[Any] = [meta.get_field(name) for name in _columns(group[0])]
    if not all(f in own for f in [*fields, target.field, meta.pk]):
        return False
    alias = router.db_for_write(model)
    connection = connections[alias]
    quote = connection.ops.quote_name
    keys = [meta.pk, target.field]
    params = []
    for result in group:
        values = _columns(result)
        params.append(
            [meta.pk.get_db_prep_value(result.row.pk, connection), result.row.name]
            + [f.get_db_prep_save(values[f.name], connection) for f in fields]
        )
    table = quote(meta.db_table)
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One statement a chunk: PostgreSQL parses and plans each statement of an
            # executemany on its own (0.12 ms of its CPU a row, 2.4 times the wall time).
            updated = 0
            for start in range(0, len(params), VALUES_ROWS):
                chunk = params[start : start + VALUES_ROWS]
                cursor.execute(
                    _values_update(connection, table, keys, fields, len(chunk)),
                    [value for row in chunk for value in row],
                )
                updated += cursor.rowcount
            return updated == len(group)
        sets = ", ".join(f"{quote(f.column)} = %s" for f in fields)
        sql = (
            f"UPDATE {table} SET {sets} WHERE {quote(str(meta.pk.column))} = %s "
            f"AND {quote(str(target.field.column))} = %s"
        )
        cursor.executemany(sql, [row[2:] + row[:2] for row in params])
        return bool(cursor.rowcount == len(group))


def _values_update(
    connection: Any, table: str, keys: list[Any], fields: list[Any], rows: int
) -> str:
    """UPDATE ... FROM (VALUES ...): the rows' keys (primary key, file name) and new values.
    The first row's placeholders carry the columns' types without their length or precision,
    so that a value too long for its column is refused as with a plain UPDATE, never cut."""
    quote = connection.ops.quote_name
    every = [*keys, *fields]
    typed = ", ".join(f"CAST(%s AS {_base_type(f, connection)})" for f in every)
    plain = ", ".join(["%s"] * len(every))
    values = ", ".join([f"({typed})"] + [f"({plain})"] * (rows - 1))
    names = ", ".join(f"c{i}" for i in range(len(every)))
    sets = ", ".join(f"{quote(f.column)} = v.c{i + len(keys)}" for i, f in enumerate(fields))
    where = " AND ".join(f"{table}.{quote(str(f.column))} = v.c{i}" for i, f in enumerate(keys))
    return f"UPDATE {table} SET {sets} FROM (VALUES {values}) AS v({names}) WHERE {where}"


def _base_type(field: Any, connection: Any) -> str:
    """The column's type without its parameters ("varchar(500)" -> "varchar")."""
    db_type = str(field.db_type(connection) or "text")
    return re.sub(r"\([^)]*\)", "", db_type).strip()


class Committer:
    """Migration's commits: the verified rows wait in ``_pending`` until a batch is full or
    COMMIT_SECONDS have passed."""

    report: MigrationReport
    ledger: DeletionLedger | None
    delete_source: bool
    _pending: list[RowResult]
    _last_commit: float

    _release: Callable[..., None]  # Migration's

    _notify: Callable[[RowResult], None]  # Migration's

    _add_problems: Callable[[RowResult, list[Problem]], None]  # Migration's

    @staticmethod
    def _commit_wait() -> float:
        """How long the loop may wait for a transfer before it looks at the commits again."""
        return COMMIT_SECONDS

    def _maybe_commit(self) -> None:
        if len(self._pending) >= COMMIT_ROWS or (
            self._pending and time.monotonic() - self._last_commit >= COMMIT_SECONDS
        ):
            self._commit()

    def _commit(self, *, resubmit: bool = True) -> None:
        """Write the verified rows' metadata in one short transaction, without model signals
        (batch_update), then delete their sources if asked."""
        pending, self._pending = self._pending, []
        self._last_commit = time.monotonic()
        if not pending:
            return
        # One order for every run (model, field, pk): two runs at once then queue behind each
        # other's row locks instead of deadlocking.
        pending.sort(key=lambda r: (r.row.target.label, r.row.target.field_name, r.row.pk))
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                vanished = self._write_rows(pending)
                break
            except (OperationalError, InterfaceError) as exc:  # a deadlock, a lost connection
                if attempt + 1 == COMMIT_ATTEMPTS:
                    detail = f"verified, but its row could not be committed ({exc}); run again"
                    vanished = []
                    for result in pending:
                        self._vanished(result, detail)
                else:
                    reconnect(pending[0].row.target.model)  # a lost one is opened again
                    time.sleep(random.uniform(0.1, 0.5) * (attempt + 1))
            except DatabaseError:
                # A value one row's column refuses (DataError, IntegrityError): every row on its
                # own, so that the error stays that row's problem and the others are committed.
                vanished = self._write_rows_one_by_one(pending)
                break
        for result in vanished:
            self._vanished(result)
        for result in pending:
            row = result.row
            if self.ledger is not None and row.source_id is not None:
                if result.clean:
                    self.ledger.add(result, row.source_id, result.dest_proof)
                else:
                    self.ledger.taint(row.source_id)
            self._release(result, resubmit=resubmit)
            self._notify(result)

    def _write_rows(self, pending: list[RowResult]) -> list[RowResult]:
        """One transaction: each row's columns, if the row still holds the same file. Returns
        the rows that no longer do (deleted, or given another file, meanwhile)."""
        vanished: list[RowResult] = []
        groups: dict[tuple[Any, ...], list[RowResult]] = {}
        with transaction.atomic():
            for result in pending:
                if result.updates:
                    target = result.row.target
                    key = (target.label, target.field_name, tuple(sorted(result.updates)))
                    groups.setdefault(key, []).append(result)
                elif self.delete_source and not self._still_there(result.row).exists():
                    vanished.append(result)
            for group in groups.values():
                if not batch_update(group):
                    # Some row changed meanwhile: row by row, to tell which (the same values
                    # again for the others; the file column is not among them).
                    vanished += [
                        r for r in group if self._still_there(r.row).update(**_columns(r)) == 0
                    ]
        return vanished

    def _write_rows_one_by_one(self, pending: list[RowResult]) -> list[RowResult]:
        vanished: list[RowResult] = []
        for result in pending:
            try:
                with transaction.atomic():
                    if result.updates:
                        if self._still_there(result.row).update(**_columns(result)) == 0:
                            vanished.append(result)
                    elif self.delete_source and not self._still_there(result.row).exists():
                        vanished.append(result)
            except DatabaseError as exc:
                detail = (
                    f"verified, but the database refused its row ({exc.__class__.__name__}: "
                    f"{str(exc).strip()}); the row was left as it is"
                )
                self._vanished(result, detail)
        return vanished

    @staticmethod
    def _still_there(row: Row) -> Any:
        return row.target.model._base_manager.filter(
            pk=row.pk, **{str(row.target.field.attname): row.name}
        )

    def _vanished(self, result: RowResult, detail: str = "") -> None:
        """The row was deleted, or its file changed, while it was being copied: it is left as
        it is, and counted as an error rather than a copy."""
        report = self.report
        if result.outcome == COPIED:
            report.copied -= 1
            report.bytes_copied -= result.bytes
        elif result.outcome == SKIPPED:
            report.skipped -= 1
        result.outcome = ERROR
        detail = detail or "row was deleted or its file changed during the migration; left as is"
        problem = result.row.problem(ERROR, detail)
        result.problems.append(problem)
        self._add_problems(result, [problem])
