"""Outcomes, problems and the report of a run; its text and JSON renderings; its exit code."""

from __future__ import annotations

import contextlib
import csv
import heapq
import io
import itertools
import json
import os
import re
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, ClassVar, overload
from uuid import UUID

COPIED = "copied"
SKIPPED = "skipped"
MISSING = "missing"
UNSAFE_NAME = "unsafe_name"
CHECKSUM_MISMATCH = "checksum_mismatch"
SIZE_MISMATCH = "size_mismatch"
CONFLICT = "conflict"
ERROR = "error"

UNVERIFIABLE = "unverifiable"
MIGRATION_PROBLEMS = (
    MISSING,
    UNSAFE_NAME,
    CHECKSUM_MISMATCH,
    SIZE_MISMATCH,
    CONFLICT,
    UNVERIFIABLE,
    ERROR,
)
# The text form shows this many problems of each kind (the first in primary-key order); the
# JSON report and the other formats have every one.
TEXT_PER_KIND = 10

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
        data = {name: getattr(self, name) for name in _FIELDS}  # asdict's deep copy is slow
        for key in ("expected", "actual"):
            if data[key] is None:
                del data[key]
        return data

    def line(self) -> str:
        where = f"{self.model} pk={self.pk}" if self.pk is not None else self.model
        return f"  {self.kind:<17} {where} {self.name!r}: {self.detail}"


# Problems kept as objects; the rest are only in the log's spill file.
MEMORY_PROBLEMS = 1000
_FIELDS = ("kind", "model", "field", "pk", "name", "detail", "expected", "actual")


def _encode(value: Any) -> Any:
    """A JSON value for a problem's field; a dict is always a tag, so no plain value is one."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, UUID):
        return {"uuid": str(value)}
    if isinstance(value, tuple | list):
        return {"tuple" if isinstance(value, tuple) else "list": [_encode(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    return str(value)  # what the renderings (default=str, f-strings) make of it anyway


def _decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    [(tag, inner)] = value.items()
    if tag == "uuid":
        return UUID(inner)
    if tag == "dict":
        return {k: _decode(v) for k, v in inner.items()}
    items = [_decode(v) for v in inner]
    return tuple(items) if tag == "tuple" else items


def _close_spill(spill: IO[str], path: str) -> None:
    spill.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class ProblemLog(Sequence[Problem]):
    """Every problem of a run in the order added, in bounded memory: counts by kind, the first
    MEMORY_PROBLEMS as objects, the rest in a JSON-lines file removed on close() or collection."""

    def __init__(self, problems: Iterable[Problem] = ()) -> None:
        self._memory: list[Problem] = []
        self._counts: Counter[str] = Counter()
        self._len = 0
        self._spilled = 0
        self._spill: IO[str] | None = None
        self._path: str | None = None
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        self._closed = False
        self.extend(problems)

    @property
    def path(self) -> str | None:
        """The spill file, once problems overflowed memory."""
        return self._path

    def append(self, problem: Problem) -> None:
        if self._closed:
            raise ValueError("This ProblemLog is closed")
        if len(self._memory) < MEMORY_PROBLEMS:
            self._memory.append(problem)
        else:
            self._write(problem)
        self._counts[problem.kind] += 1
        self._len += 1

    def extend(self, problems: Iterable[Problem]) -> None:
        for problem in problems:  # iteration is a snapshot: extend(self) doubles, as a list does
            self.append(problem)

    def _write(self, problem: Problem) -> None:
        if self._spill is None:
            fd, self._path = tempfile.mkstemp(prefix="storage-migrate-problems-", suffix=".jsonl")
            self._spill = os.fdopen(fd, "w", encoding="ascii", newline="\n")
            self._finalizer = weakref.finalize(self, _close_spill, self._spill, self._path)
        row = [_encode(getattr(problem, name)) for name in _FIELDS]
        # ensure_ascii: lone surrogates and control characters in names survive as \u escapes.
        self._spill.write(json.dumps(row, ensure_ascii=True, separators=(",", ":")) + "\n")
        self._spilled += 1

    def _read(self, count: int) -> Iterator[Problem]:
        """The first `count` spilled problems, read back from the file."""
        if count <= 0:
            return
        if self._closed or self._spill is None or self._path is None:
            raise ValueError("This ProblemLog is closed; its spilled problems are gone")
        self._spill.flush()
        with open(self._path, encoding="ascii", newline="\n") as spill:
            for line in itertools.islice(spill, count):
                yield Problem(*(_decode(v) for v in json.loads(line)))

    def close(self) -> None:
        """Remove the spill file; the counts stay, the problems past memory are gone."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()

    def counts(self) -> Counter[str]:
        """How many problems of each kind."""
        return Counter(self._counts)

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[Problem]:
        # A snapshot: problems appended while iterating are not yielded.
        in_memory, spilled = len(self._memory), self._spilled
        for i in range(in_memory):
            yield self._memory[i]
        yield from self._read(spilled)

    @overload
    def __getitem__(self, index: int) -> Problem: ...
    @overload
    def __getitem__(self, index: slice) -> list[Problem]: ...
    def __getitem__(self, index: int | slice) -> Problem | list[Problem]:
        if isinstance(index, slice):
            wanted = range(self._len)[index]
            if not wanted:
                return []
            forward = wanted if wanted.step > 0 else wanted[::-1]
            items = list(itertools.islice(self, forward.start, forward.stop, forward.step))
            return items if wanted.step > 0 else items[::-1]
        position = range(self._len)[index]  # IndexError as a list raises it
        if position < len(self._memory):
            return self._memory[position]
        offset = position - len(self._memory)
        return next(itertools.islice(self._read(offset + 1), offset, None))

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if not isinstance(other, ProblemLog | list):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        shown = self._memory[:10]
        more = (
            f", ... {self._len - len(shown)} more, {dict(self._counts)}"
            if self._len > len(shown)
            else ""
        )
        return f"ProblemLog([{', '.join(map(repr, shown))}{more}])"


def _pk_order(problem: Problem) -> tuple[int, Any]:
    """Primary keys in order: numbers as numbers, anything else (a UUID) as text; orphans (no
    pk) as they came, which is the listing's order of their names."""
    pk = problem.pk
    if pk is None:
        return (2, 0)
    if isinstance(pk, int | float):
        return (0, pk)
    return (1, str(pk))


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
            "totals": self.totals,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self._head(), "problems": [p.to_dict() for p in self.problems]}

    def to_json(self) -> str:
        out = io.StringIO()
        self.write_json(out)
        return out.getvalue()

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
    bytes_copied: int = 0
    # --delete-source: sources deleted once the run was over (in a dry run: would be).
    deleted: int = 0
    bytes_deleted: int = 0

    @property
    def failed(self) -> int:
        """Rows that were neither copied nor skipped."""
        return self.rows - self.copied - self.skipped

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems else EXIT_OK

    def header(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
        }

    @property
    def totals(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "copied": self.copied,
            "skipped": self.skipped,
            "failed": self.failed,
            "problems": len(self.problems),
            "bytes_copied": self.bytes_copied,
            "deleted": self.deleted,
            "bytes_deleted": self.bytes_deleted,
        }

    def summary(self) -> str:
        problems = self.problems_phrase()
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
        if self.deleted:
            verb = "would delete" if self.dry_run else "deleted"
            head += (
                f", {verb} {plural(self.deleted, 'source')} ({format_bytes(self.bytes_deleted)})"
            )
        if self.interrupted:
            head = f"Interrupted: {head[0].lower()}{head[1:]}"
        speed = None if self.dry_run else rate(self.bytes_copied, self.seconds)
        return f"{head}, {problems} in {self.seconds:.1f} s" + (f" ({speed})" if speed else "")

    def fails_on(self, kind: str) -> bool:
        return True  # every problem of a migration is exit 1

    def text_lines(
        self, limit: int | None = TEXT_PER_KIND, report: str | None = None
    ) -> Iterator[tuple[str, str]]:
        """The summary, then the first ``limit`` problems of each kind in primary-key order
        (all with None), each line with what it is about (SUMMARY, or its problems' kind);
        ``report`` names the file that has all of them, if one was written."""
        yield SUMMARY, f"{self.source} -> {self.destination}: {self.summary()}"
        counts = self.problems.counts()
        for kind in _kinds_in_order(counts, MIGRATION_PROBLEMS):
            yield from ((kind, p.line()) for p in self.first_of_kind(kind, limit))
            yield from ((kind, line) for line in _more(counts[kind], kind, limit, report))

    def to_text(self, limit: int | None = TEXT_PER_KIND, report: str | None = None) -> str:
        return "\n".join(line for _, line in self.text_lines(limit, report))


OK = "ok"
METADATA_MISMATCH = "metadata_mismatch"
ORPHAN = "orphan"
VERIFY_PROBLEMS = (
    UNSAFE_NAME,
    MISSING,
    SIZE_MISMATCH,
    CHECKSUM_MISMATCH,
    METADATA_MISMATCH,
    ERROR,
    UNVERIFIABLE,
    ORPHAN,
)
DEFAULT_FAIL_ON = tuple(k for k in VERIFY_PROBLEMS if k != ORPHAN)
INTERRUPTED_DETAIL = "the run was stopped; rows after those listed were not checked"
# Past this many rows, JUnit gets one case per problem and a summary case, not one per row.
JUNIT_MAX_CASES = 10_000


@dataclass
class VerificationReport(Report):
    """What a verify_files run found: one outcome per row, every problem, orphans."""

    command: ClassVar[str] = "verify_files"
    storage: str
    level: str
    sample: int | None = None
    rows: int = 0
    ok: int = 0
    downloaded: int = 0
    bytes_read: int = 0
    unchecked: int = 0
    fixed: int = 0
    fail_on: tuple[str, ...] = DEFAULT_FAIL_ON
    # (model, field, pk, name) of the rows found ok, kept only while JUnit wants one case a row.
    ok_rows: list[tuple[str, str, Any, str]] | None = field(default_factory=list)
    # The text form: how many problems of each kind it shows (None: all), and the file that has
    # every one, if one is written.
    text_limit: int | None = TEXT_PER_KIND
    report_path: str | None = None

    def add_ok(self, model: str, field_name: str, pk: Any, name: str) -> None:
        self.ok += 1
        if self.ok_rows is not None:
            self.ok_rows.append((model, field_name, pk, name))
            if len(self.ok_rows) > JUNIT_MAX_CASES:
                self.ok_rows = None  # too many: JUnit falls back to a summary case

    @property
    def orphans(self) -> int:
        return self.problems.counts()[ORPHAN]

    @property
    def exit_code(self) -> int:
        failing = any(self.problems.counts()[kind] for kind in self.fail_on)
        return EXIT_PROBLEMS if failing else EXIT_OK

    def fails_on(self, kind: str) -> bool:
        return kind in self.fail_on

    def header(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "level": self.level,
            "sample": self.sample,
            "interrupted": self.interrupted,
        }

    @property
    def totals(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "ok": self.ok,
            "problems": len(self.problems),
            "orphans": self.orphans,
            "downloaded": self.downloaded,
            "bytes_read": self.bytes_read,
            "unchecked": self.unchecked,
            "fixed": self.fixed,
        }

    def summary(self) -> str:
        problems = self.problems_phrase()
        scope = f" (a random sample of at most {self.sample} a field)" if self.sample else ""
        extra = []
        if self.unchecked:
            extra.append(f"{self.unchecked} without a stored checksum")
        if self.downloaded:
            extra.append(f"{self.downloaded} read to hash, {format_bytes(self.bytes_read)}")
        if self.fixed:
            extra.append(f"{self.fixed} rows' metadata fixed")
        tail = f" ({'; '.join(extra)})" if extra else ""
        speed = rate(self.bytes_read, self.seconds)
        head = "Interrupted: verified" if self.interrupted else "Verified"
        return (
            f"{head} {plural(self.rows, 'row')}{scope} at level {self.level} on "
            f"{self.storage}: {self.ok} ok, {problems}{tail} in {self.seconds:.1f} s"
            + (f" ({speed})" if speed else "")
        )

    def text_lines(self) -> Iterator[tuple[str, str]]:
        """to_text()'s lines, each with what it is about: SUMMARY, or its problems' kind."""
        if self.error is not None:
            yield SUMMARY, f"verify_files could not start: {self.error}"
            return
        yield SUMMARY, self.summary()
        counts = self.problems.counts()
        for kind in _kinds_in_order(counts, VERIFY_PROBLEMS):
            # One pass over the problems per kind found, and the first few in pk order kept.
            yield kind, f"{kind} ({counts[kind]}):"
            yield from ((kind, p.line()) for p in self.first_of_kind(kind, self.text_limit))
            yield from (
                (kind, line)
                for line in _more(counts[kind], kind, self.text_limit, self.report_path)
            )

    def to_text(self) -> str:
        return "\n".join(line for _, line in self.text_lines())

    def to_csv(self) -> str:
        out = io.StringIO()
        columns = ["kind", "model", "field", "pk", "name", "detail", "expected", "actual"]
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        if self.error is not None:
            writer.writerow(["configuration_error", "", "", "", "", csv_safe(self.error), "", ""])
        if self.interrupted:
            writer.writerow(["interrupted", "", "", "", "", INTERRUPTED_DETAIL, "", ""])
        for p in self.problems:
            writer.writerow(["" if (v := getattr(p, c)) is None else csv_safe(v) for c in columns])
        return out.getvalue()

    def to_junit(self) -> str:
        """JUnit XML: a case per checked row (or, past JUNIT_MAX_CASES, per problem plus a
        summary case), a <failure> per problem, so CI dashboards show what broke."""
        from xml.etree import ElementTree as ET

        suite = ET.Element(
            "testsuite",
            name=f"verify_files {self.storage} {self.level}",
            timestamp=iso(self.started_at) or "",
            time=f"{self.seconds:.3f}",
        )
        cases = 0
        failures = 0
        for p in self.problems:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{p.model}.{p.field}",
                name=_case_name(p.pk, p.name),
            )
            message = xml_safe(f"{p.kind}: {p.detail}")
            failure = ET.SubElement(case, "failure", type=p.kind, message=message)
            failure.text = json.dumps(p.to_dict(), ensure_ascii=True, default=str)
            cases += 1
            failures += 1
        if self.ok_rows is not None:
            for model, field_name, pk, name in self.ok_rows:
                ET.SubElement(
                    suite, "testcase", classname=f"{model}.{field_name}", name=_case_name(pk, name)
                )
                cases += 1
        else:
            summary = ET.SubElement(suite, "testcase", classname="verify_files", name="summary")
            ET.SubElement(summary, "system-out").text = self.summary()
            cases += 1
        if self.error is not None:  # the run could not start: one error case says why
            case = ET.SubElement(suite, "testcase", classname="verify_files", name="configuration")
            ET.SubElement(case, "error", type="configuration", message=xml_safe(self.error))
            cases += 1
        errors = int(self.error is not None)
        if self.interrupted:  # a partial run is not a pass: an error case says so
            case = ET.SubElement(suite, "testcase", classname="verify_files", name="interrupted")
            ET.SubElement(case, "error", type="interrupted", message=INTERRUPTED_DETAIL)
            cases += 1
            errors += 1
        suite.set("tests", str(cases))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        return ET.tostring(suite, encoding="unicode", xml_declaration=True)


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


def _case_name(pk: Any, name: str) -> str:
    return xml_safe(f"pk={pk} {name}" if pk is not None else name)
