"""Progress for the commands: a tqdm bar on stderr when it is a terminal, or a line per row."""

from __future__ import annotations

from typing import Any, Protocol, cast

from django.core.management.base import BaseCommand

from ..report.base import format_bytes


class _Result(Protocol):
    outcome: str
    bytes: int
    row: Any


class Progress:
    """A tqdm bar on stderr when it is a terminal (verbosity 1+); at -v 2, a line per row."""

    def __init__(
        self, command: BaseCommand, verbosity: int, *, enabled: bool, dry_run: bool = False
    ) -> None:
        self.command = command
        self.verbosity = verbosity
        # A dry run's lines say what a real run would do.
        self.words = {"copied": "would copy", "skipped": "would skip"} if dry_run else {}
        self.bar: Any = None
        self.copied_bytes = 0
        self.lines = verbosity >= 2
        self.want_bar = enabled and verbosity >= 1 and command.stderr.isatty() and not self.lines

    def start(self, total: int) -> None:
        """A bar for a pass over ``total`` rows (--until-stable starts one per pass)."""
        self.close()
        if self.want_bar:
            from tqdm import tqdm

            stream: Any = cast(Any, self.command.stderr)._out
            self.bar = tqdm(total=total, unit="file", file=stream, dynamic_ncols=True)

    def row(self, result: _Result) -> None:
        self.copied_bytes += result.bytes
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(format_bytes(self.copied_bytes), refresh=False)
        elif self.lines:
            row = result.row
            size = f" ({format_bytes(result.bytes)})" if result.bytes else ""
            if getattr(result, "server_side", False):
                size += " server-side"
            outcome = self.words.get(result.outcome, result.outcome)
            self.command.stderr.write(
                f"{outcome:<17} {row.target.label} pk={row.pk} {row.name!r}{size}"
            )

    def batch(self, batch: Any, report: Any) -> None:
        """A batch of rows done on a Celery worker (``report`` None: it failed)."""
        self.copied_bytes += report.bytes_copied if report is not None else 0
        if self.bar is not None:
            self.bar.update(batch.rows)
            self.bar.set_postfix_str(format_bytes(self.copied_bytes), refresh=False)
        elif self.lines:
            outcome = "failed" if report is None else report.summary()
            self.command.stderr.write(f"batch {batch}: {outcome}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
