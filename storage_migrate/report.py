"""Outcomes, problems and the report of a run; its text and JSON renderings; its exit code."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

COPIED = "copied"
SKIPPED = "skipped"
MISSING = "missing"
UNSAFE_NAME = "unsafe_name"
CHECKSUM_MISMATCH = "checksum_mismatch"
SIZE_MISMATCH = "size_mismatch"
CONFLICT = "conflict"
ERROR = "error"

MIGRATION_PROBLEMS = (MISSING, UNSAFE_NAME, CHECKSUM_MISMATCH, SIZE_MISMATCH, CONFLICT, ERROR)

EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG = 0, 1, 2


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


@dataclass
class Problem:
    """Something a person should look at, about one row (or one object, for orphans)."""

    kind: str
    model: str
    field: str
    pk: Any
    name: str
    detail: str
    expected: Any = None
    actual: Any = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("expected", "actual"):
            if data[key] is None:
                del data[key]
        return data

    def line(self) -> str:
        where = f"{self.model} pk={self.pk}" if self.pk is not None else self.model
        return f"  {self.kind:<17} {where} {self.name!r}: {self.detail}"


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class MigrationReport:
    """What a migrate_storage run did: one outcome per row, and every problem."""

    source: str
    destination: str
    dry_run: bool = False
    started_at: datetime = field(default_factory=now)
    finished_at: datetime | None = None
    rows: int = 0
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    problems: list[Problem] = field(default_factory=list)
    command: str = "migrate_storage"

    @property
    def failed(self) -> int:
        """Rows that were neither copied nor skipped."""
        return self.rows - self.copied - self.skipped

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems else EXIT_OK

    @property
    def seconds(self) -> float:
        end = self.finished_at or now()
        return (end - self.started_at).total_seconds()

    def problem_counts(self) -> Counter[str]:
        return Counter(p.kind for p in self.problems)

    @property
    def totals(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "copied": self.copied,
            "skipped": self.skipped,
            "failed": self.failed,
            "problems": len(self.problems),
            "bytes_copied": self.bytes_copied,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "source": self.source,
            "destination": self.destination,
            "dry_run": self.dry_run,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "totals": self.totals,
            "problems": [p.to_dict() for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str)

    def summary(self) -> str:
        counts = self.problem_counts()
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        problems = plural(len(self.problems), "problem") + (f" ({kinds})" if kinds else "")
        if self.dry_run:
            head = (
                f"Dry run: would copy {plural(self.copied, 'file')} "
                f"({format_bytes(self.bytes_copied)}), skip {self.skipped}"
            )
        else:
            head = (
                f"Copied {plural(self.copied, 'file')} ({format_bytes(self.bytes_copied)}), "
                f"skipped {self.skipped}"
            )
        return f"{head}, {problems} in {self.seconds:.1f} s"

    def to_text(self) -> str:
        lines = [f"{self.source} -> {self.destination}: {self.summary()}"]
        lines += [p.line() for p in self.problems]
        return "\n".join(lines)
