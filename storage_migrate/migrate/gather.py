"""The batches' reports of a run on Celery gathered into one MigrationReport, as a run in one
process would have made it: every row counted once, every problem kept."""

from __future__ import annotations

from typing import Any

from ..meter import add_costs
from ..report.migration import MigrationReport
from ..report.problems import ERROR, Problem, now
from .batches import Batch


class Gathering:
    """The run's report, growing as its batches' reports come back (in any order)."""

    def __init__(self, source: str, destination: str, *, dry_run: bool, pending: bool) -> None:
        self.report = MigrationReport(
            source=source, destination=destination, dry_run=dry_run, pending=pending
        )
        self.batches = 0

    def add(self, batch: Batch, data: dict[str, Any]) -> MigrationReport:
        """Add one batch's report (its JSON form, as the task returned it). Batches are disjoint
        primary-key ranges, so their rows simply add up; a batch delivered twice (a worker
        lost mid-batch) has only its last run's report."""
        part = MigrationReport.from_dict(data)
        report = self.report
        report.rows += part.rows
        report.copied += part.copied
        report.skipped += part.skipped
        report.at_destination += part.at_destination
        report.bytes_copied += part.bytes_copied
        report.copied_server_side += part.copied_server_side
        report.cost = add_costs(report.cost, part.cost)
        report.deleted += part.deleted
        report.bytes_deleted += part.bytes_deleted
        report.problems.extend(part.problems)
        # Said once, whatever number of batches said it.
        report.notes = list(dict.fromkeys([*report.notes, *part.notes]))
        report.walked_whole = list(dict.fromkeys([*report.walked_whole, *part.walked_whole]))
        if part.interrupted:
            report.problems.append(
                self._problem(batch, "the batch was interrupted on its worker; run again")
            )
        part.close()
        self.batches += 1
        return part

    def fail(self, batch: Batch, detail: str) -> None:
        """A batch without a report (its task raised, or it did not finish in time): its rows
        count as failed, and one error names its model and primary-key range."""
        self.report.rows += batch.rows
        self.report.problems.append(self._problem(batch, detail))
        self.batches += 1

    @staticmethod
    def _problem(batch: Batch, detail: str) -> Problem:
        name = f"pk {batch.pk_min}..{batch.pk_max}"
        detail = f"batch of {batch.rows} rows: {detail}"
        return Problem(ERROR, batch.model, batch.field, None, name, detail)

    def finish(self, *, interrupted: bool = False) -> MigrationReport:
        """The report of the whole run (or of the batches gathered until it was interrupted)."""
        self.report.interrupted = interrupted
        self.report.finished_at = now()
        return self.report
