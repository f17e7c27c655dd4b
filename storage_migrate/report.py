"""Outcomes, problems and the report of a run; its text and JSON renderings; its exit code."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

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


@dataclass(kw_only=True)
class Report:
    """What both commands report: when, the problems, and one JSON shape around their totals."""

    command: ClassVar[str]
    started_at: datetime = field(default_factory=now)
    finished_at: datetime | None = None
    problems: list[Problem] = field(default_factory=list)

    def header(self) -> dict[str, Any]:
        """What the run was asked to do (keys between `command` and `started_at`)."""
        raise NotImplementedError

    @property
    def totals(self) -> dict[str, int]:
        raise NotImplementedError

    @property
    def seconds(self) -> float:
        return ((self.finished_at or now()) - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            **self.header(),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "totals": self.totals,
            "problems": [p.to_dict() for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str)

    def problems_phrase(self) -> str:
        """'3 problems (2 missing, 1 conflict)'."""
        counts = Counter(p.kind for p in self.problems)
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

    @property
    def failed(self) -> int:
        """Rows that were neither copied nor skipped."""
        return self.rows - self.copied - self.skipped

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems else EXIT_OK

    def header(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "dry_run": self.dry_run}

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
        return f"{head}, {problems} in {self.seconds:.1f} s"

    def to_text(self) -> str:
        lines = [f"{self.source} -> {self.destination}: {self.summary()}"]
        lines += [p.line() for p in self.problems]
        return "\n".join(lines)


OK = "ok"
METADATA_MISMATCH = "metadata_mismatch"
UNVERIFIABLE = "unverifiable"
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
    unchecked: int = 0
    fixed: int = 0
    fail_on: tuple[str, ...] = DEFAULT_FAIL_ON
    # (model, field, pk, name) of the rows found ok, kept only while JUnit wants one case a row.
    ok_rows: list[tuple[str, str, Any, str]] | None = field(default_factory=list)

    def add_ok(self, model: str, field_name: str, pk: Any, name: str) -> None:
        self.ok += 1
        if self.ok_rows is not None:
            self.ok_rows.append((model, field_name, pk, name))
            if len(self.ok_rows) > JUNIT_MAX_CASES:
                self.ok_rows = None  # too many: JUnit falls back to a summary case

    @property
    def orphans(self) -> int:
        return sum(1 for p in self.problems if p.kind == ORPHAN)

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if any(p.kind in self.fail_on for p in self.problems) else EXIT_OK

    def header(self) -> dict[str, Any]:
        return {"storage": self.storage, "level": self.level, "sample": self.sample}

    @property
    def totals(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "ok": self.ok,
            "problems": len(self.problems),
            "orphans": self.orphans,
            "downloaded": self.downloaded,
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
            extra.append(f"{self.downloaded} read to hash")
        if self.fixed:
            extra.append(f"{self.fixed} rows' metadata fixed")
        tail = f" ({'; '.join(extra)})" if extra else ""
        return (
            f"Verified {plural(self.rows, 'row')}{scope} at level {self.level} on "
            f"{self.storage}: {self.ok} ok, {problems}{tail} in {self.seconds:.1f} s"
        )

    def to_text(self) -> str:
        lines = [self.summary()]
        for kind in VERIFY_PROBLEMS:
            group = [p for p in self.problems if p.kind == kind]
            if group:
                lines.append(f"{kind} ({len(group)}):")
                lines += [p.line() for p in group]
        return "\n".join(lines)

    def to_csv(self) -> str:
        out = io.StringIO()
        columns = ["kind", "model", "field", "pk", "name", "detail", "expected", "actual"]
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for p in self.problems:
            data = asdict(p)
            writer.writerow(["" if data[c] is None else data[c] for c in columns])
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
        suite.set("tests", str(cases))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        return ET.tostring(suite, encoding="unicode", xml_declaration=True)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """Text XML 1.0 can hold: characters it cannot are written as \\xNN escapes."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _case_name(pk: Any, name: str) -> str:
    return xml_safe(f"pk={pk} {name}" if pk is not None else name)
