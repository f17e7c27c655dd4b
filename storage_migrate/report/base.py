"""What both reports share: when, the problems, one JSON shape around their totals, and the
pieces of their text (sizes, rates, the first problems of each kind)."""

from __future__ import annotations

import heapq
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, ClassVar

from .problems import Problem, ProblemLog, _pk_order, iso, now

# The text form shows this many problems of each kind (the first in primary-key order); the
# JSON report and the other formats have every one.
TEXT_PER_KIND = 10


def _kinds_in_order(counts: Counter[str], order: tuple[str, ...]) -> list[str]:
    return [k for k in order if counts[k]] + sorted(
        k for k in counts if counts[k] and k not in order
    )


def _more(count: int, kind: str, limit: int | None, report: str | None) -> list[str]:
    if limit is None or count <= limit:
        return []
    where = f" ({report} has all of them)" if report else " (a report has all of them: --report)"
    return [f"  ... and {count - limit} more {kind}{where}"]


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def rate(size: int, seconds: float) -> str | None:
    """'12.3 MB/s' (decimal megabytes, as format_bytes), or None when nothing was moved."""
    if size <= 0 or seconds <= 0:
        return None
    return f"{size / seconds / 1_000_000:.1f} MB/s"


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def _dumps_item(data: dict[str, Any]) -> str:
    """_dumps(data) as an item of a list under the top level: every line indented 4 more."""
    if any(isinstance(v, list | tuple | dict) for v in data.values()):
        return "\n".join("    " + line for line in _dumps(data).split("\n"))
    # Flat: the C encoder, with indent=2's separators spelled out, is several times faster.
    flat = json.dumps(data, separators=(",\n      ", ": "), ensure_ascii=False, default=str)
    return "    {\n      " + flat[1:-1] + "\n    }"


SUMMARY = "summary"  # the tag of the summary line in the reports' text_lines()


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass(kw_only=True)
class Report:
    """What both commands report: when, the problems, and one JSON shape around their totals."""

    command: ClassVar[str]
    started_at: datetime = field(default_factory=now)
    finished_at: datetime | None = None
    problems: ProblemLog = field(default_factory=ProblemLog)
    # Why the run could not start (a configuration error, exit 2), for the report file a
    # pipeline reads: the run did nothing.
    error: str | None = None
    # Stopped by Ctrl-C, SIGTERM or a lost database: the report says what happened until then.
    interrupted: bool = False
    # What the run skipped or could not do without it being a row's problem (a tidying step a
    # store refused): said once, never a change of the exit status.
    notes: list[str] = field(default_factory=list)

    def header(self) -> dict[str, Any]:
        """What the run was asked to do (keys between `command` and `started_at`)."""
        raise NotImplementedError

    @property
    def exit_code(self) -> int:
        raise NotImplementedError

    def fails_on(self, kind: str) -> bool:
        """Whether a problem of this kind makes the exit status 1."""
        raise NotImplementedError

    @property
    def totals(self) -> dict[str, int]:
        raise NotImplementedError

    @property
    def seconds(self) -> float:
        return ((self.finished_at or now()) - self.started_at).total_seconds()

    def _head(self) -> dict[str, Any]:
        return {
            "command": self.command,
            **self.header(),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            **({"error": self.error} if self.error is not None else {}),
            **({"notes": self.notes} if self.notes else {}),
            "totals": self.totals,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self._head(), "problems": [p.to_dict() for p in self.problems]}

    def to_json(self) -> str:
        out = io.StringIO()
        self.write_json(out)
        return out.getvalue()

    def to_text(self) -> str:
        raise NotImplementedError

    def to_format(self, fmt: str) -> str:
        """The report as ``text`` or ``json`` (verify_files': also ``csv`` and ``junit``),
        without a final line break."""
        if fmt == "json":
            return self.to_json()
        if fmt == "text":
            return self.to_text()
        raise ValueError(f"unknown format {fmt!r} for {self.command}")

    def write_json(self, stream: IO[str]) -> None:
        """Write to_json()'s document to stream, one problem at a time."""
        head = _dumps(self._head())
        # "problems" is the last key: splice it in before the closing brace.
        stream.write(head[: -len("\n}")] + ',\n  "problems": ')
        if not self.problems:
            stream.write("[]\n}")
            return
        stream.write("[\n")
        for i, problem in enumerate(self.problems):
            if i:
                stream.write(",\n")
            stream.write(_dumps_item(problem.to_dict()))
        stream.write("\n  ]\n}")

    def close(self) -> None:
        """Remove the problems' spill file (problems past memory are then gone)."""
        self.problems.close()

    def first_of_kind(self, kind: str, limit: int | None) -> list[Problem]:
        """The problems of one kind in primary-key order, at most ``limit`` of them (one pass,
        bounded memory)."""
        mine = (p for p in self.problems if p.kind == kind)
        if limit is None:
            return sorted(mine, key=_pk_order)
        return heapq.nsmallest(limit, mine, key=_pk_order)

    def problems_phrase(self) -> str:
        """'3 problems (2 missing, 1 conflict)'."""
        counts = self.problems.counts()
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        return plural(len(self.problems), "problem") + (f" ({kinds})" if kinds else "")


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """Text XML 1.0 can hold: characters it cannot are written as \\xNN escapes."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# Everything XML cannot hold, and the other control characters (C0 with tab and line breaks,
# DEL, C1): a spreadsheet or a terminal acts on them, and a line break splits a row for grep.
_NOT_CSV = re.compile("[\x00-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")


def csv_safe(value: Any) -> str:
    """A CSV cell: control characters written as \\xNN escapes, as xml_safe() writes them."""
    return _NOT_CSV.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
