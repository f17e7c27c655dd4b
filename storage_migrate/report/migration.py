"""What a migrate_storage run did: its totals, summary and text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import SUMMARY, TEXT_PER_KIND, Report, _kinds_in_order, _more, format_bytes, plural, rate
from .problems import EXIT_OK, EXIT_PROBLEMS, MIGRATION_PROBLEMS, Problem, ProblemLog, parse_iso


@dataclass
class MigrationReport(Report):
    """What a migrate_storage run did: one outcome per row, and every problem."""

    command: ClassVar[str] = "migrate_storage"
    source: str
    destination: str
    dry_run: bool = False
    rows: int = 0
    copied: int = 0
    skipped: int = 0
    # The source is gone and the destination holds the name (an upload made after the
    # switch): not a problem of the move, and the row was not changed.
    at_destination: int = 0
    bytes_copied: int = 0
    # Of the copies, those made inside the store (two S3 storages on one endpoint): their bytes
    # never went through this process. The others were streamed through it.
    copied_server_side: int = 0
    # The requests by pricing class and the bytes the run sent (a dry run: would send), and the
    # ceilings it kept to (storage_migrate.meter).
    cost: dict[str, Any] = field(default_factory=dict)
    # --delete-source: sources deleted once the run was over (in a dry run: would be).
    deleted: int = 0
    bytes_deleted: int = 0
    # --pending: only rows whose columns do not record them at the destination were walked;
    # these models (no bucket column) were walked whole.
    pending: bool = False
    walked_whole: list[str] = field(default_factory=list)
    # --shard K/N: only the rows of shard K were walked and counted (None: every row).
    shard: str | None = None
    # --until-stable: each pass's totals, and whether the last one copied nothing (None: not
    # asked, or interrupted).
    passes: list[dict[str, Any]] = field(default_factory=list)
    stable: bool | None = None
    # For --until-stable's totals (not in the report): rows of models walked whole, which every
    # pass walks again, and the problems of rows committed with one, which no later pass walks.
    copied_whole: int = field(default=0, repr=False)
    skipped_whole: int = field(default=0, repr=False)
    carried: ProblemLog = field(default_factory=ProblemLog, repr=False)

    @property
    def failed(self) -> int:
        """Rows that were neither copied, skipped nor found only at the destination."""
        return self.rows - self.copied - self.skipped - self.at_destination

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems or self.stable is False else EXIT_OK

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MigrationReport:
        """The report of to_dict() (its JSON form, read back): a batch's report sent back by a
        Celery worker. The problems' values come back as JSON has them (a tuple as a list)."""
        totals = data["totals"]
        report = cls(
            source=data["source"],
            destination=data["destination"],
            dry_run=bool(data.get("dry_run")),
            pending=bool(data.get("pending")),
            walked_whole=list(data.get("walked_whole", [])),
            passes=list(data.get("passes", [])),
            stable=data.get("stable"),
            interrupted=bool(data.get("interrupted")),
            error=data.get("error"),
            notes=list(data.get("notes", [])),
            problems=ProblemLog(Problem(**p) for p in data.get("problems", [])),
            started_at=parse_iso(data["started_at"]),
            finished_at=parse_iso(data["finished_at"]) if data.get("finished_at") else None,
        )
        for name in ("rows", "copied", "skipped", "at_destination", "bytes_copied"):
            setattr(report, name, int(totals.get(name, 0)))
        report.copied_server_side = int(totals.get("copied_server_side", 0))
        report.cost = dict(data.get("cost") or {})
        report.deleted = int(totals.get("deleted", 0))
        report.bytes_deleted = int(totals.get("bytes_deleted", 0))
        return report

    def pass_totals(self) -> dict[str, Any]:
        """One pass of --until-stable, as the report lists it."""
        return {
            "rows": self.rows,
            "copied": self.copied,
            "bytes_copied": self.bytes_copied,
            "problems": len(self.problems),
            "seconds": round(self.seconds, 3),
        }

    def header(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "pending": self.pending,
            "walked_whole": self.walked_whole,
            "cost": self.cost,
            "shard": self.shard,
            **({"passes": self.passes, "stable": self.stable} if self.passes else {}),
        }

    @property
    def totals(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "copied": self.copied,
            "skipped": self.skipped,
            "at_destination": self.at_destination,
            "failed": self.failed,
            "problems": len(self.problems),
            "bytes_copied": self.bytes_copied,
            "copied_server_side": self.copied_server_side,
            "deleted": self.deleted,
            "bytes_deleted": self.bytes_deleted,
        }

    def summary(self) -> str:
        problems = self.problems_phrase()
        size = format_bytes(self.bytes_copied)
        if self.copied_server_side:  # which way the copies went
            streamed = self.copied - self.copied_server_side
            size += f"; {self.copied_server_side} server-side, {streamed} streamed"
        if self.dry_run:
            head = f"Dry run: would copy {plural(self.copied, 'file')} ({size})"
            head += f", skip {self.skipped}"
        else:
            head = f"Copied {plural(self.copied, 'file')} ({size}), skipped {self.skipped}"
        if self.at_destination:
            head += f", {self.at_destination} only at the destination"
        if self.deleted:
            verb = "would delete" if self.dry_run else "deleted"
            head += (
                f", {verb} {plural(self.deleted, 'source')} ({format_bytes(self.bytes_deleted)})"
            )
        if self.pending:
            whole = ", ".join(self.walked_whole)
            head += " (--pending" + (f"; walked whole, no bucket column: {whole}" if whole else "")
            if self.passes:
                n = len(self.passes)
                passes = f"{n} pass" if n == 1 else f"{n} passes"
                if self.stable:
                    head += f"; stable after {passes}"
                elif self.stable is False:
                    head += (
                        f"; not stable after {passes}: the last copied {self.passes[-1]['copied']}"
                    )
                else:
                    head += f"; {passes}"
            head += ")"
        if self.interrupted:
            head = f"Interrupted: {head[0].lower()}{head[1:]}"
        speed = None if self.dry_run else rate(self.bytes_copied, self.seconds)
        return f"{head}, {problems} in {self.seconds:.1f} s" + (f" ({speed})" if speed else "")

    def cost_phrase(self) -> str:
        """What the run sent (a dry run: would send, including its own look at the stores)."""
        cost = self.cost
        requests = cost.get("requests", {})
        verb = "A real run would send about" if self.dry_run else "Sent"
        return (
            f"{verb} {requests.get('put_copy_post_list', 0)} PUT/COPY/POST/LIST and "
            f"{requests.get('get_head', 0)} GET/HEAD requests; "
            f"{format_bytes(cost.get('bytes_sent', 0))} sent, "
            f"{format_bytes(cost.get('bytes_received', 0))} received, "
            f"{format_bytes(cost.get('bytes_copied_in_store', 0))} copied inside the store."
        )

    def fails_on(self, kind: str) -> bool:
        return True  # every problem of a migration is exit 1

    def text_lines(
        self, limit: int | None = TEXT_PER_KIND, report: str | None = None
    ) -> Iterator[tuple[str, str]]:
        """The summary, then the first ``limit`` problems of each kind in primary-key order
        (all with None), each line with what it is about (SUMMARY, or its problems' kind);
        ``report`` names the file that has all of them, if one was written."""
        yield SUMMARY, f"{self.source} -> {self.destination}: {self.summary()}"
        if self.shard is not None:
            index, count = self.shard.split("/")
            yield (
                SUMMARY,
                f"  Shard {self.shard}: only the rows whose file hashes to shard {index} of "
                f"{count}; the other shards' processes walk the rest.",
            )
        if self.stable is False:
            yield (
                SUMMARY,
                (
                    "  Files are still arriving at the source (processes of the old release still "
                    "running?): run the same command again once the deploy is over."
                ),
            )
        yield from ((SUMMARY, f"  Note: {note}.") for note in self.notes)
        if self.dry_run and self.cost:
            yield SUMMARY, f"  {self.cost_phrase()}"
        counts = self.problems.counts()
        for kind in _kinds_in_order(counts, MIGRATION_PROBLEMS):
            yield from ((kind, p.line()) for p in self.first_of_kind(kind, limit))
            yield from ((kind, line) for line in _more(counts[kind], kind, limit, report))

    def to_text(self, limit: int | None = TEXT_PER_KIND, report: str | None = None) -> str:
        return "\n".join(line for _, line in self.text_lines(limit, report))
