"""What verify_files writes, beyond the shapes test_verify_command checks: an empty --fail-on,
the bytes it reads and their rate, what Ctrl-C says, where the summary goes beside a report
on stdout, control characters in CSV, and Django's colours (only for text on a terminal)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.core.management.color import color_style

from core.models import FileManager
from storage_migrate.report import MigrationReport, Problem, VerificationReport, now
from storage_migrate.verify import run as verification
from tests.conftest import ManagePy
from tests.test_verify_command import (
    ALPHA,
    BRAVO,
    CHARLIE,
    KNOWN_KINDS,
    MISSING,
    ORPHAN,
    SECONDS,
    STRAY,
    line,
    make_row,
    to_s3,
    update,
    verify,
    verify_failing,
)

pytestmark = pytest.mark.django_db

ESCAPE = "\x1b["  # the start of every ANSI colour sequence
SUMMARY = re.compile(rf"Verified [^\n]* in {SECONDS}( \(\d+\.\d MB/s\))?")


class Terminal(io.StringIO):
    """A stream that says it is a terminal (what a person watching the command has)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def django_colors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_COLORS", raising=False)  # its palette, not the caller's


@pytest.fixture
def clean(media_root: Path) -> dict[str, FileManager]:
    """1000 bytes in three files whose rows are right."""
    return {
        "a": make_row("alpha.txt", ALPHA),
        "b": make_row("bravo.bin", BRAVO),
        "c": make_row("charlie.csv", CHARLIE),
    }


@pytest.fixture
def problems(clean: dict[str, FileManager], media_root: Path) -> dict[str, FileManager]:
    """A missing file (an error kind) and a stray file (an orphan, with --orphans)."""
    (media_root / str(clean["b"].file.name)).unlink()
    (media_root / STRAY).write_bytes(b"nobody's")
    return clean


# --- 1. an empty --fail-on --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", " ", ",", " , ,"])
def test_an_empty_fail_on_is_refused(problems: dict[str, FileManager], value: str) -> None:
    # It would make every run exit 0, whatever it found.
    error, out, err = verify_failing("--fail-on", value)
    assert error.returncode == 2
    message = str(error)
    assert "\n" not in message
    assert message.startswith("--fail-on ")
    assert KNOWN_KINDS in message
    assert (out, err) == ("", "")  # refused before anything was checked


def test_an_empty_fail_on_is_refused_before_anything_is_read(
    problems: dict[str, FileManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_run(self: Any) -> Any:
        raise AssertionError("the run must not start")

    monkeypatch.setattr(verification.Verification, "run", no_run)
    error, _, _ = verify_failing("--fail-on", "", "--fix-metadata")
    assert error.returncode == 2


# --- 2 and 5. bytes read, and their rate ------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_deep_counts_the_bytes_it_reads(
    s3_bucket: str, clean: dict[str, FileManager], where: str
) -> None:
    if where == "s3":
        to_s3(3)
    status, out, _ = verify("--storage", where, "--level", "deep")
    assert status == 0
    assert re.fullmatch(
        rf"Verified 3 rows at level deep on {where}: 3 ok, 0 problems "
        rf"\(3 read to hash, 1\.0 kB\) in {SECONDS} \(\d+\.\d MB/s\)\n",
        out,
    ), out

    status, out, _ = verify("--storage", where, "--level", "deep", "--format", "json")
    assert status == 0
    totals = json.loads(out)["totals"]
    assert (totals["downloaded"], totals["bytes_read"]) == (3, 1000)


def test_nothing_read_no_bytes_and_no_rate(s3_bucket: str, clean: dict[str, FileManager]) -> None:
    to_s3(3)  # moto's ETags are the MD5s: nothing to read
    status, out, _ = verify("--storage", "s3")
    assert status == 0
    assert re.fullmatch(
        rf"Verified 3 rows at level checksum on s3: 3 ok, 0 problems in {SECONDS}\n", out
    ), out


def test_the_progress_bar_counts_the_bytes_read(clean: dict[str, FileManager]) -> None:
    terminal = Terminal()
    call_command("verify_files", "--level", "deep", stdout=io.StringIO(), stderr=terminal)
    bar = terminal.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert "3/3" in bar, bar
    assert bar.endswith("1.0 kB]"), bar  # it said 0 B


def test_verbosity_two_gives_each_rows_bytes_read(clean: dict[str, FileManager]) -> None:
    status, _, err = verify("--level", "deep", "-v", "2")
    assert status == 0
    assert sorted(err.splitlines()) == sorted(
        f"ok                core.FileManager pk={row.pk} {row.file.name!r} ({size} B)"
        for row, size in ((clean["a"], 100), (clean["b"], 200), (clean["c"], 700))
    )


def timed(report: Any, seconds: float) -> Any:
    report.finished_at = report.started_at + timedelta(seconds=seconds)
    return report


def test_verification_summary_gives_the_rate_of_reading() -> None:
    report = timed(VerificationReport(storage="s3", level="deep"), 2)
    report.rows = report.ok = report.downloaded = 4
    report.bytes_read = 5_000_000
    assert report.summary() == (
        "Verified 4 rows at level deep on s3: 4 ok, 0 problems (4 read to hash, 5.0 MB) "
        "in 2.0 s (2.5 MB/s)"
    )
    assert report.totals["bytes_read"] == 5_000_000
    assert report.to_text().splitlines()[0] == report.summary()

    report = timed(VerificationReport(storage="s3", level="checksum"), 2)
    report.rows = report.ok = 4
    assert report.summary() == (
        "Verified 4 rows at level checksum on s3: 4 ok, 0 problems in 2.0 s"  # nothing read
    )
    report.finished_at = report.started_at  # no time at all: no rate, not a ZeroDivisionError
    report.downloaded, report.bytes_read = 1, 10
    assert report.summary().endswith("(1 read to hash, 10 B) in 0.0 s")


def test_migration_summary_gives_the_rate_of_copying() -> None:
    report = timed(MigrationReport(source="local", destination="s3"), 1.5)
    report.rows = report.copied = 3
    report.bytes_copied = 3_000_000
    assert report.summary() == "Copied 3 files (3.0 MB), skipped 0, 0 problems in 1.5 s (2.0 MB/s)"

    dry = timed(MigrationReport(source="local", destination="s3", dry_run=True), 1.5)
    dry.rows = dry.copied = 3
    dry.bytes_copied = 3_000_000  # would copy: nothing moved, no rate
    assert dry.summary() == "Dry run: would copy 3 files (3.0 MB), skip 0, 0 problems in 1.5 s"

    skipped = timed(MigrationReport(source="local", destination="s3"), 1.5)
    skipped.rows = skipped.skipped = 3
    assert skipped.summary() == "Copied 0 files (0 B), skipped 3, 0 problems in 1.5 s"


# --- 3. Ctrl-C --------------------------------------------------------------------------------


@pytest.mark.parametrize("fix", [False, True])
def test_ctrl_c_mentions_fix_metadata_only_when_given(
    clean: dict[str, FileManager], monkeypatch: pytest.MonkeyPatch, fix: bool
) -> None:
    def interrupted(self: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(verification.Verification, "run", interrupted)
    error, out, _ = verify_failing(*(["--fix-metadata"] if fix else []))
    assert error.returncode == 130
    assert out == ""
    message = str(error)
    assert message.startswith("Interrupted; ")
    assert ("--fix-metadata" in message) is fix, message
    if not fix:
        assert message == "Interrupted; nothing was changed."


# --- 4. where the summary goes ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "csv", "junit"])
def test_a_report_on_stdout_has_its_summary_on_stderr(
    problems: dict[str, FileManager], fmt: str
) -> None:
    status, out, err = verify("--format", fmt)
    assert status == 1
    assert "Verified" not in out.splitlines()[0]  # stdout is the document alone
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert SUMMARY.fullmatch(err[:-1]), err
    assert err.startswith("Verified 3 rows at level checksum on each field's storage: 2 ok, ")


def test_a_text_report_on_stdout_has_its_summary_there_alone(
    problems: dict[str, FileManager],
) -> None:
    status, out, err = verify()
    assert status == 1
    assert SUMMARY.fullmatch(out.splitlines()[0])
    assert err == ""  # not twice


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_verbosity_zero_writes_no_summary(problems: dict[str, FileManager], fmt: str) -> None:
    status, out, err = verify("--format", fmt, "-v", "0")
    assert status == 1
    assert err == ""
    assert "Verified" not in out


# --- 6. control characters in CSV -------------------------------------------------------------

HOSTILE = "file_manager/a\x00b\x1b[31mred\x07\tc\r\nd\x7f\x9be.txt"
ESCAPED = "file_manager/a\\x00b\\x1b[31mred\\x07\\x09c\\x0d\\x0ad\\x7f\\x9be.txt"


def test_csv_escapes_control_characters(clean: dict[str, FileManager]) -> None:
    from django.db import connection

    hostile, escaped = HOSTILE, ESCAPED
    if connection.vendor == "postgresql":  # a text column cannot hold a NUL; the rest it can
        hostile, escaped = HOSTILE.replace("\x00", ""), ESCAPED.replace("\\x00", "")
    update(clean["a"], file=hostile)

    status, out, _ = verify("--format", "csv")

    assert status == 1
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", out), repr(out)
    rows = list(csv.reader(io.StringIO(out)))
    assert len(rows) == 2  # the header and the one problem: no row split by a line break
    kind, _, _, pk, name, *_ = rows[1]
    assert (kind, pk, name) == ("unsafe_name", str(clean["a"].pk), escaped)

    _, text, _ = verify()  # the text report gives the name's repr(), escaped too
    assert repr(hostile) in text


def test_csv_escapes_every_column() -> None:
    report = VerificationReport(storage="s3", level="checksum")
    report.problems.append(
        Problem(
            kind="error",
            model="core.FileManager",
            field="file",
            pk="k\x00",
            name="lone \ud800 surrogate",
            detail="Boom: line one\nline two\x00",
            expected="\ufffe",
            actual=("tuple", "\x01"),
        )
    )
    rows = list(csv.reader(io.StringIO(report.to_csv())))
    assert rows[1] == [
        "error",
        "core.FileManager",
        "file",
        "k\\x00",
        "lone \\xd800 surrogate",
        "Boom: line one\\x0aline two\\x00",
        "\\xfffe",
        "('tuple', '\\x01')",  # str() of a tuple gives its repr, escaped already
    ]
    report.to_csv().encode("utf-8")  # a lone surrogate would not encode


def test_csv_keeps_ordinary_text(clean: dict[str, FileManager], media_root: Path) -> None:
    (media_root / str(clean["a"].file.name)).unlink()
    update(clean["a"], file='file_manager/façade, "quoted" — ok.txt')
    status, out, _ = verify("--format", "csv")
    assert status == 1
    [[_, _, _, _, name, detail, _, _]] = list(csv.reader(io.StringIO(out)))[1:]
    assert (name, detail) == ('file_manager/façade, "quoted" — ok.txt', MISSING)


# --- 7. colour --------------------------------------------------------------------------------

STYLE = color_style(force_color=True)


def uncoloured(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def coloured(*args: str, stdout: io.StringIO | None = None, **options: Any) -> tuple[int, str, str]:
    out, err = stdout if stdout is not None else io.StringIO(), io.StringIO()
    try:
        call_command("verify_files", *args, stdout=out, stderr=err, **options)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def test_force_color_paints_the_text_report(problems: dict[str, FileManager]) -> None:
    assert ESCAPE in STYLE.ERROR("x")  # else the test proves nothing
    status, out, err = coloured("--orphans", force_color=True)
    assert status == 1
    assert err == ""
    b = problems["b"]
    lines = out.splitlines()
    plain = [uncoloured(text) for text in lines]
    assert SUMMARY.fullmatch(plain[0])
    assert lines == [
        STYLE.ERROR(plain[0]),  # a failing run
        STYLE.ERROR("missing (1):"),
        STYLE.ERROR(line("missing", b, str(b.file.name), MISSING)),
        STYLE.WARNING("orphan (1):"),
        STYLE.WARNING(line("orphan", None, STRAY, ORPHAN)),
    ]


def test_force_color_summaries(clean: dict[str, FileManager], media_root: Path) -> None:
    status, out, _ = coloured(force_color=True)
    assert status == 0
    assert out == STYLE.SUCCESS(uncoloured(out.rstrip("\n"))) + "\n"  # clean: green, alone

    (media_root / STRAY).write_bytes(b"nobody's")
    status, out, _ = coloured("--orphans", force_color=True)
    assert status == 0
    first = out.splitlines()[0]
    assert first == STYLE.WARNING(uncoloured(first))  # passes, but look


def test_force_color_at_verbosity_zero_paints_the_problem_lines(
    problems: dict[str, FileManager],
) -> None:
    status, out, _ = coloured("--orphans", "-v", "0", force_color=True)
    assert status == 1
    b = problems["b"]
    assert sorted(out.splitlines()) == sorted(
        [
            STYLE.ERROR(line("missing", b, str(b.file.name), MISSING)),
            STYLE.WARNING(line("orphan", None, STRAY, ORPHAN)),
        ]
    )


def test_no_color_and_a_pipe_are_never_painted(
    problems: dict[str, FileManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the command ran on a terminal: Django's style is coloured.
    monkeypatch.setattr("django.core.management.color.supports_color", lambda: True)
    status, out, _ = coloured("--orphans", stdout=Terminal())
    assert status == 1
    assert out.startswith(ESCAPE)  # a terminal is painted

    status, out, _ = coloured("--orphans", stdout=Terminal(), no_color=True)
    assert status == 1
    assert ESCAPE not in out
    assert SUMMARY.fullmatch(out.splitlines()[0])

    status, out, _ = coloured("--orphans")  # a pipe or a file, though sys.stdout is a terminal
    assert status == 1
    assert ESCAPE not in out


@pytest.mark.parametrize("fmt", ["json", "csv", "junit"])
def test_other_formats_are_never_painted(problems: dict[str, FileManager], fmt: str) -> None:
    status, out, err = coloured("--orphans", "--format", fmt, force_color=True)
    assert status == 1
    assert ESCAPE not in out
    assert err == STYLE.ERROR(uncoloured(err.rstrip("\n"))) + "\n"  # the stderr summary is


@pytest.mark.parametrize("fmt", ["text", "json", "csv", "junit"])
def test_a_report_file_is_never_painted(
    problems: dict[str, FileManager], tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"report.{fmt}"
    status, out, err = coloured(
        "--orphans", "--format", fmt, "--output", str(path), force_color=True
    )
    assert status == 1
    assert out == ""
    assert ESCAPE not in path.read_text(encoding="utf-8")
    assert ESCAPE in err  # the summary line on stderr, forced


def test_the_stderr_summary_is_not_django_red_for_everything(
    clean: dict[str, FileManager], tmp_path: Path
) -> None:
    # Django paints all of a terminal's stderr ERROR; a clean run's summary there is SUCCESS,
    # and with --no-color plain.
    terminal = Terminal()
    call_command(
        "verify_files",
        "--output",
        str(tmp_path / "r.txt"),
        "--no-progress",
        stdout=io.StringIO(),
        stderr=terminal,
        force_color=True,
    )
    text = terminal.getvalue()
    assert text == STYLE.SUCCESS(uncoloured(text.rstrip("\n"))) + "\n"
    assert SUMMARY.fullmatch(uncoloured(text.rstrip("\n")))

    terminal = Terminal()
    call_command(
        "verify_files",
        "--output",
        str(tmp_path / "r.txt"),
        "--no-progress",
        stdout=io.StringIO(),
        stderr=terminal,
        no_color=True,
    )
    assert ESCAPE not in terminal.getvalue()
    assert SUMMARY.fullmatch(terminal.getvalue().rstrip("\n"))


def test_summary_tags_of_the_text_lines() -> None:
    report = VerificationReport(storage="s3", level="checksum", started_at=now())
    report.problems.append(Problem("orphan", "m", "f", None, "n", "d"))
    assert [tag for tag, _ in report.text_lines()] == ["summary", "orphan", "orphan"]


# --- 8. an interrupted run still reports -------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_write_the_partial_report(
    manage_py: ManagePy,
    http_bucket: str,
    media_root: Path,
    tmp_path: Path,
    sig: int,
    status: int,
) -> None:
    """A pipeline that stops verify_files still gets its JUnit file: the rows checked until
    then, and an error case that says the run was interrupted (a partial run is not a pass)."""
    for i in range(300):
        FileManager.objects.create(file=ContentFile(os.urandom(3000), name=f"v {i}.bin"))
    moved = manage_py("migrate_storage", "--to", "s3", "--no-progress")
    assert moved.returncode == 0, moved.stderr
    output = tmp_path / "partial.xml"
    args = ["--storage", "s3", "--level", "deep", "--workers", "1", "-v", "2"]
    process = manage_py.start("verify_files", *args, "--format", "junit", "--output", str(output))
    assert process.stderr is not None
    checked = 0
    while checked < 20:  # a line per row checked at -v 2
        line = process.stderr.readline()
        assert line, "verify_files ended before it was signalled"
        checked += line.startswith("ok ")
    process.send_signal(sig)
    stdout, stderr = manage_py.finish(process, 60)

    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    summary = [x for x in stderr.splitlines() if x.startswith("Interrupted: verified ")]
    assert len(summary) == 1, stderr
    suite = ElementTree.fromstring(output.read_text())
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases if c.find("error") is not None] == ["interrupted"]
    assert suite.get("errors") == "1"
    assert 20 <= len(cases) - 1 < 300
    assert FileManager.objects.filter(checksum="").count() == 0  # nothing was changed


def test_an_interrupted_verification_says_so_in_every_format() -> None:
    report = VerificationReport(storage="s3", level="deep", rows=2, ok=2, interrupted=True)
    report.finished_at = report.started_at + timedelta(seconds=1)

    assert report.summary().startswith("Interrupted: verified 2 rows at level deep on s3")
    assert json.loads(report.to_json())["interrupted"] is True
    assert list(csv.reader(io.StringIO(report.to_csv())))[1][0] == "interrupted"
    suite = ElementTree.fromstring(report.to_junit())
    assert suite.get("errors") == "1"
    finished = VerificationReport(storage="s3", level="deep", rows=2, ok=2)
    assert json.loads(finished.to_json())["interrupted"] is False
    assert ElementTree.fromstring(finished.to_junit()).get("errors") == "0"
