"""What a purge_source run did: the files deleted (or moved to the quarantine), those kept, why."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import SUMMARY, TEXT_PER_KIND, Report, _kinds_in_order, _more, format_bytes, plural
from .problems import CHECKSUM_MISMATCH, ERROR, EXIT_OK, EXIT_PROBLEMS, MISSING, UNSAFE_NAME

# A row that does not record its file at the destination (not migrated yet, or a model with no
# bucket column): the file stays.
NOT_RECORDED = "not_recorded"
# The destination's object is not proven, now, to hold the source's bytes: the file stays.
NOT_PROVEN = "not_proven"
PURGE_PROBLEMS = (NOT_RECORDED, MISSING, NOT_PROVEN, CHECKSUM_MISMATCH, UNSAFE_NAME, ERROR)


def format_duration(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass
class PurgeReport(Report):
    """Every row walked, every file considered, and each one kept for a reason a person should
    see (a problem, exit 1); files younger than --min-age and files already gone are counted."""

    command: ClassVar[str] = "purge_source"
    source: str
    destination: str
    dry_run: bool = False
    min_age: float = 0.0
    quarantine: str | None = None
    rows: int = 0
    files: int = 0  # files whose every row qualified, and were proven (or not) one by one
    purged: int = 0
    bytes_purged: int = 0
    too_young: int = 0
    gone: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems else EXIT_OK

    def fails_on(self, kind: str) -> bool:
        return True

    def header(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "verified_against": self.destination,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "min_age_seconds": self.min_age,
            "quarantine": self.quarantine,
        }

    @property
    def totals(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "files": self.files,
            "purged": self.purged,
            "bytes_purged": self.bytes_purged,
            "too_young": self.too_young,
            "gone": self.gone,
            "problems": len(self.problems),
        }

    def summary(self) -> str:
        if self.quarantine:
            verb = "would move" if self.dry_run else "moved"
            done = f"{verb} {plural(self.purged, 'file')} to {self.quarantine!r}"
        else:
            verb = "Dry run: would delete" if self.dry_run else "deleted"
            done = f"{verb} {plural(self.purged, 'file')}"
        head = (
            f"{done[0].upper()}{done[1:]} ({format_bytes(self.bytes_purged)}) of {self.rows} rows"
        )
        if self.too_young:
            head += f", kept {self.too_young} younger than {format_duration(self.min_age)}"
        if self.gone:
            head += f", {self.gone} already gone"
        if self.interrupted:
            head = f"Interrupted: {head[0].lower()}{head[1:]}"
        return f"{head}, {self.problems_phrase()} in {self.seconds:.1f} s"

    def text_lines(
        self, limit: int | None = TEXT_PER_KIND, report: str | None = None
    ) -> Iterator[tuple[str, str]]:
        yield SUMMARY, f"{self.source} (verified against {self.destination}): {self.summary()}"
        counts = self.problems.counts()
        for kind in _kinds_in_order(counts, PURGE_PROBLEMS):
            yield from ((kind, p.line()) for p in self.first_of_kind(kind, limit))
            yield from ((kind, line) for line in _more(counts[kind], kind, limit, report))

    def to_text(self, limit: int | None = TEXT_PER_KIND, report: str | None = None) -> str:
        return "\n".join(line for _, line in self.text_lines(limit, report))
