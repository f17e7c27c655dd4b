"""What a verify_files run found: its totals, summary, and its text, CSV and JUnit forms."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import (
    SUMMARY,
    TEXT_PER_KIND,
    Report,
    _kinds_in_order,
    _more,
    csv_safe,
    format_bytes,
    plural,
    rate,
    xml_safe,
)
from .problems import DEFAULT_FAIL_ON, EXIT_OK, EXIT_PROBLEMS, ORPHAN, VERIFY_PROBLEMS, iso

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

    def to_format(self, fmt: str) -> str:
        if fmt == "csv":
            return self.to_csv().rstrip("\n")
        if fmt == "junit":
            return self.to_junit()
        return super().to_format(fmt)

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


def _case_name(pk: Any, name: str) -> str:
    return xml_safe(f"pk={pk} {name}" if pk is not None else name)
