"""--fix-metadata: the columns of the rows checked, in one short transaction per batch, with
QuerySet.update() (no model signals); never a stored checksum, and a row the database refuses is
that row's error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import Error, transaction
from django.db.models import Q, QuerySet

from ..log import log
from ..report.problems import (
    ERROR,
)
from ..report.verification import VerificationReport
from .check import CheckResult

# What writing one row's columns can raise: the database's refusals (DataError, IntegrityError,
# any DatabaseError; InterfaceError for a lost connection), and a driver's or a field's refusal
# of a value (ValueError, OverflowError).
WRITE_ERRORS = (Error, ValueError, OverflowError)


class Fixer:
    """Verification's writes, in the calling thread."""

    report: VerificationReport
    _pending: list[CheckResult]
    _record: Callable[[CheckResult], None]  # Verification's

    def _commit(self) -> None:
        """--fix-metadata: the pending rows' columns in one short transaction, with
        QuerySet.update() (no model signals); never a stored checksum. When the database
        refuses the batch, each row is written in its own savepoint, and a row it refuses is
        that row's error: the others are written."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            with transaction.atomic():
                changed = [self._write(result) for result in pending]
        except WRITE_ERRORS as exc:
            log.debug("the batch's metadata was refused (%s): row by row", exc)
            changed = []
            for result in pending:
                try:
                    with transaction.atomic():
                        changed.append(self._write(result))
                except WRITE_ERRORS as row_exc:
                    self._refused(result, row_exc)
                    changed.append(0)
        for result, count in zip(pending, changed, strict=True):
            self.report.fixed += count
            self._record(result)

    def _statements(self, result: CheckResult) -> list[tuple[QuerySet[Any], dict[str, Any]]]:
        """The updates that fix one row: its contradicted or blank columns, and, apart, each
        empty digest column (filled only where it is still empty)."""
        row = result.row
        columns = row.target.columns
        same_row = row.target.model._base_manager.filter(
            pk=row.pk, **{str(row.target.field.attname): row.name}
        )
        digests = row.target.digests
        updates = {columns[r]: v for r, v in result.updates.items() if r not in digests}
        statements = [(same_row, updates)] if updates else []
        for role in digests:
            if role in result.updates:
                column = columns[role]
                empty = Q(**{column: ""}) | Q(**{f"{column}__isnull": True})
                statements.append((same_row.filter(empty), {column: result.updates[role]}))
        return statements

    def _write(self, result: CheckResult) -> int:
        changed = 0
        for queryset, values in self._statements(result):
            changed |= queryset.update(**values)
        return changed

    def _refused(self, result: CheckResult, exc: BaseException) -> None:
        """The database refused the row's columns: nothing of it was written, and that is its
        outcome (what the check found is kept in the detail)."""
        columns = [
            (queryset, column, value)
            for queryset, values in self._statements(result)
            for column, value in values.items()
        ]
        failing = []
        for queryset, column, value in columns:  # each alone, undone: which one is refused?
            try:
                with transaction.atomic():
                    queryset.update(**{column: value})
                    transaction.set_rollback(True)
            except WRITE_ERRORS:
                failing.append(column)
        named = len(failing) < len(columns) or len(columns) == 1
        what = ", ".join(failing) if failing and named else "the row's metadata columns"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"--fix-metadata could not write {what}: {exc.__class__.__name__}: {message}"
        found = result.problem
        if found is not None:
            detail += f" (the check found {found.kind})"
        extra = {"expected": found.expected, "actual": found.actual} if found else {}
        result.outcome = ERROR
        result.problem = result.row.problem(ERROR, detail, **extra)
