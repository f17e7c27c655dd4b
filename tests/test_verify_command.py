"""manage.py verify_files through call_command, on the local disk and moto's in-process S3: the
text, JSON, CSV and JUnit reports, --output, exit codes, configuration errors, and the options
that shape a check (--level, --strict, --sample, --orphans, --fix-metadata, --fail-on)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError

from core.models import FileManager
from storage_migrate import migrate_storage
from storage_migrate.endpoints.local import LocalEndpoint
from storage_migrate.testing import s3_client
from storage_migrate.verify import joins
from storage_migrate.verify import run as verification
from tests.conftest import reset_storages

pytestmark = pytest.mark.django_db

SECONDS = r"\d+\.\d s"
RATE = r"( \(\d+\.\d MB/s\))?"  # where bytes were read (on a fast machine possibly 0.0 MB/s)
READ_RATE = r" \(\d+\.\d MB/s\)"
EVERY_FIELD = "each field's storage"
REPORT_KEYS = {
    "command",
    "storage",
    "level",
    "sample",
    "interrupted",
    "started_at",
    "finished_at",
    "totals",
    "problems",
}
CSV_HEADER = ["kind", "model", "field", "pk", "name", "detail", "expected", "actual"]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KNOWN_ALIASES = "known: default, local, s3, staticfiles"
KNOWN_KINDS = (
    "known: unsafe_name, missing, size_mismatch, checksum_mismatch, metadata_mismatch, error, "
    "unverifiable, orphan"
)
FAIL_ON_MESSAGE = "problem(s) of a --fail-on kind."

MISSING = "file does not exist"
SIZE = "stored size disagrees with the file"
CHECKSUM = "file bytes do not match the stored checksum"
UNVERIFIABLE = "no stored checksum to compare the file with"
ORPHAN = "no row points to this file"

ALPHA = b"a" * 100
BRAVO = bytes(range(200))
CHARLIE = b"c,s,v\n" * 116 + b"1234"
STRAY = "file_manager/stray.txt"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def verify(*args: str, **options: Any) -> tuple[int, str, str]:
    """call_command("verify_files"): (exit status, stdout, stderr). A CommandError's returncode
    is the exit status; any other exception fails the test."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_files", *args, stdout=out, stderr=err, **options)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def verify_failing(*args: str, **options: Any) -> tuple[CommandError, str, str]:
    """call_command that must raise CommandError: (the error, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("verify_files", *args, stdout=out, stderr=err, **options)
    return info.value, out.getvalue(), err.getvalue()


def verify_json(*args: str, **options: Any) -> tuple[int, dict[str, Any]]:
    """(exit status, the report); stdout must be exactly one JSON document."""
    status, out, err = verify(*args, "--format", "json", **options)
    assert re.fullmatch(rf"Verified [^\n]* in {SECONDS}{RATE}\n", err), err  # the summary line
    report = json.loads(out)
    assert set(report) == REPORT_KEYS
    return status, report


def by_pk(problems: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Rows' problems keyed by pk (the order of a report's problems is the order checks end)."""
    keyed = {p["pk"]: p for p in problems}
    assert len(keyed) == len(problems), problems
    return keyed


def line(kind: str, row: FileManager | None, name: str, detail: str) -> str:
    """A problem line of the text report."""
    where = f"core.FileManager pk={row.pk}" if row is not None else "core.FileManager"
    return f"  {kind:<17} {where} {name!r}: {detail}"


def make_row(name: str, data: bytes) -> FileManager:
    """A row stored through the default (local) storage, its metadata recorded by the model."""
    row = FileManager.objects.create(file=ContentFile(data, name=name))
    assert row.checksum == md5(data)
    assert row.file_size == len(data)
    return row


def update(row: FileManager, **columns: Any) -> FileManager:
    """Change a row's columns behind the model's back (no save(), no signals)."""
    FileManager.objects.filter(pk=row.pk).update(**columns)
    row.refresh_from_db()
    return row


def to_s3(count: int) -> None:
    """migrate_storage(to="s3"), which must copy ``count`` files without a problem."""
    report = migrate_storage(to="s3")
    assert report.problems == []
    assert report.totals["copied"] == count


def put(bucket: str, key: str, body: bytes, content_type: str = "text/plain") -> None:
    s3_client().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def same_size_other_bytes(data: bytes) -> bytes:
    other = bytes(b ^ 0xFF for b in data)
    assert len(other) == len(data) and other != data
    return other


@pytest.fixture
def clean(media_root: Path) -> dict[str, FileManager]:
    """Three files of 100, 200 and 700 bytes whose rows say all there is to say of them."""
    return {
        "a": make_row("alpha.txt", ALPHA),
        "b": make_row("bravo.bin", BRAVO),
        "c": make_row("charlie.csv", CHARLIE),
    }


@pytest.fixture
def rows(media_root: Path) -> dict[str, FileManager]:
    """On the local disk: a clean row, a row whose stored size is wrong, a row whose stored
    checksum is of other bytes (of the same length), and a row whose file is gone."""
    made = {
        "ok": make_row("alpha.txt", ALPHA),
        "size": make_row("bravo.bin", BRAVO),
        "checksum": make_row("charlie.csv", CHARLIE),
        "gone": make_row("gone.txt", b"soon deleted"),
    }
    update(made["size"], file_size=201)
    update(made["checksum"], checksum=md5(same_size_other_bytes(CHARLIE)))
    (media_root / str(made["gone"].file.name)).unlink()
    return made


# --- the text report --------------------------------------------------------------------------


def test_text_summary_and_problems_grouped_by_kind(rows: dict[str, FileManager]) -> None:
    status, out, err = verify()

    assert status == 1
    assert err == ""  # no progress bar: stderr is not a terminal
    lines = out.splitlines()
    assert re.fullmatch(
        r"Verified 4 rows at level checksum on each field's storage: 1 ok, 3 problems "
        r"\(1 checksum_mismatch, 1 missing, 1 size_mismatch\) \(2 read to hash, 800 B\) "
        rf"in {SECONDS}{READ_RATE}",
        lines[0],
    ), lines[0]
    gone, size, checksum = rows["gone"], rows["size"], rows["checksum"]
    assert lines[1:] == [
        "missing (1):",
        f"  missing           core.FileManager pk={gone.pk} {gone.file.name!r}: {MISSING}",
        "size_mismatch (1):",
        f"  size_mismatch     core.FileManager pk={size.pk} {size.file.name!r}: {SIZE}",
        "checksum_mismatch (1):",
        f"  checksum_mismatch core.FileManager pk={checksum.pk} {checksum.file.name!r}: {CHECKSUM}",
    ]


def test_several_problems_of_a_kind_share_one_group(
    clean: dict[str, FileManager], media_root: Path
) -> None:
    for key in ("a", "c"):
        (media_root / str(clean[key].file.name)).unlink()
    status, out, _ = verify()

    assert status == 1
    lines = out.splitlines()
    assert re.fullmatch(
        rf"Verified 3 rows at level checksum on {EVERY_FIELD}: 1 ok, 2 problems \(2 missing\) "
        rf"\(1 read to hash, 200 B\) in {SECONDS}{READ_RATE}",
        lines[0],
    ), lines[0]
    assert lines[1] == "missing (2):"
    assert sorted(lines[2:]) == sorted(
        line("missing", clean[key], str(clean[key].file.name), MISSING) for key in ("a", "c")
    )


@pytest.mark.parametrize("where", ["default", "local", "s3"])
def test_clean_run_exits_zero(s3_bucket: str, clean: dict[str, FileManager], where: str) -> None:
    if where == "s3":
        to_s3(3)
        status, out, err = verify("--storage", "s3")
        # moto's ETags are the MD5s of the bytes: nothing is read to hash them.
        expected = rf"Verified 3 rows at level checksum on s3: 3 ok, 0 problems in {SECONDS}\n"
    else:
        status, out, err = verify(*(["--storage", "local"] if where == "local" else []))
        label = "local" if where == "local" else EVERY_FIELD
        expected = (
            rf"Verified 3 rows at level checksum on {label}: 3 ok, 0 problems "
            rf"\(3 read to hash, 1\.0 kB\) in {SECONDS}{READ_RATE}\n"
        )
    assert status == 0
    assert err == ""
    assert re.fullmatch(expected, out), out


def test_one_row_is_singular(media_root: Path) -> None:
    make_row("only.txt", b"one")
    status, out, _ = verify("--level", "size")
    assert status == 0
    assert re.fullmatch(
        rf"Verified 1 row at level size on {EVERY_FIELD}: 1 ok, 0 problems in {SECONDS}\n", out
    ), out


def test_verbosity_zero_prints_only_problem_lines(rows: dict[str, FileManager]) -> None:
    status, out, err = verify(verbosity=0)
    assert status == 1
    assert err == ""
    assert sorted(out.splitlines()) == sorted(
        [
            line("missing", rows["gone"], str(rows["gone"].file.name), MISSING),
            line("size_mismatch", rows["size"], str(rows["size"].file.name), SIZE),
            line("checksum_mismatch", rows["checksum"], str(rows["checksum"].file.name), CHECKSUM),
        ]
    )


def test_verbosity_zero_prints_nothing_when_clean(clean: dict[str, FileManager]) -> None:
    status, out, err = verify("-v", "0")
    assert (status, out, err) == (0, "", "")


def test_verbosity_two_prints_a_line_per_row(rows: dict[str, FileManager]) -> None:
    status, out, err = verify("-v", "2")
    assert status == 1
    seen = {}
    for text in err.splitlines():
        match = re.fullmatch(r"(\w+) +core\.FileManager pk=(\d+) '([^']+)'( \(\d+ B\))?", text)
        assert match, text
        seen[int(match[2])] = (match[1], match[3], match[4])
    assert seen == {  # with the bytes read to hash the file, where it was read
        rows["ok"].pk: ("ok", rows["ok"].file.name, " (100 B)"),
        rows["size"].pk: ("size_mismatch", rows["size"].file.name, None),
        rows["checksum"].pk: ("checksum_mismatch", rows["checksum"].file.name, " (700 B)"),
        rows["gone"].pk: ("missing", rows["gone"].file.name, None),
    }
    assert out.startswith("Verified 4 rows at level checksum")


# --- JSON -------------------------------------------------------------------------------------


def test_json_is_one_document_with_exact_totals(rows: dict[str, FileManager]) -> None:
    status, report = verify_json()

    assert status == 1
    assert report["command"] == "verify_files"
    assert report["storage"] == EVERY_FIELD
    assert report["level"] == "checksum"
    assert report["sample"] is None
    assert TIMESTAMP.match(report["started_at"]), report["started_at"]
    assert TIMESTAMP.match(report["finished_at"]), report["finished_at"]
    assert report["finished_at"] >= report["started_at"]
    assert report["totals"] == {
        "rows": 4,
        "ok": 1,
        "problems": 3,
        "orphans": 0,
        "downloaded": 2,  # the clean row and the checksum mismatch were read and hashed
        "bytes_read": 800,
        "unchecked": 0,
        "fixed": 0,
    }
    gone, size, checksum = rows["gone"], rows["size"], rows["checksum"]
    assert by_pk(report["problems"]) == {
        gone.pk: {
            "kind": "missing",
            "model": "core.FileManager",
            "field": "file",
            "pk": gone.pk,
            "name": gone.file.name,
            "detail": MISSING,
        },
        size.pk: {
            "kind": "size_mismatch",
            "model": "core.FileManager",
            "field": "file",
            "pk": size.pk,
            "name": size.file.name,
            "detail": SIZE,
            "expected": 201,
            "actual": 200,
        },
        checksum.pk: {
            "kind": "checksum_mismatch",
            "model": "core.FileManager",
            "field": "file",
            "pk": checksum.pk,
            "name": checksum.file.name,
            "detail": CHECKSUM,
            "expected": md5(same_size_other_bytes(CHARLIE)),
            "actual": md5(CHARLIE),
        },
    }


def test_json_on_s3_after_migration(s3_bucket: str, clean: dict[str, FileManager]) -> None:
    to_s3(3)
    a, b, c = clean["a"], clean["b"], clean["c"]
    for row in clean.values():
        row.refresh_from_db()
        assert (row.bucket, row.object_key) == (s3_bucket, row.file.name)
    corrupt = same_size_other_bytes(ALPHA)
    put(s3_bucket, a.object_key, corrupt)
    s3_client().delete_object(Bucket=s3_bucket, Key=b.object_key)

    status, report = verify_json("--storage", "s3")

    assert status == 1
    assert report["storage"] == "s3"
    assert report["totals"] == {
        "rows": 3,
        "ok": 1,
        "problems": 2,
        "orphans": 0,
        "downloaded": 0,  # the ETags are the MD5s
        "bytes_read": 0,
        "unchecked": 0,
        "fixed": 0,
    }
    problems = by_pk(report["problems"])
    assert set(problems) == {a.pk, b.pk}
    assert problems[a.pk]["kind"] == "checksum_mismatch"
    assert problems[a.pk]["expected"] == md5(ALPHA)
    assert problems[a.pk]["actual"] == md5(corrupt)
    assert problems[b.pk] == {
        "kind": "missing",
        "model": "core.FileManager",
        "field": "file",
        "pk": b.pk,
        "name": b.file.name,
        "detail": MISSING,
    }
    assert c.pk not in problems

    # The local copies were never touched: their bytes are right, only the rows say S3 now.
    status, report = verify_json("--storage", "local")
    assert status == 1
    assert sorted((p["kind"], p["pk"]) for p in report["problems"]) == sorted(
        ("metadata_mismatch", row.pk) for row in clean.values()
    )
    assert report["problems"][0]["detail"] == f"bucket is {s3_bucket!r}, the storage says ''"


# --- CSV --------------------------------------------------------------------------------------


def test_csv_header_and_one_row_per_problem(rows: dict[str, FileManager], media_root: Path) -> None:
    (media_root / STRAY).write_bytes(b"nobody's")
    odd = make_row("odd.txt", b"x")
    Path(odd.file.path).unlink()
    odd_name = f'{str(odd.file.name).rsplit("/", 1)[0]}/o\'neil, "quoted".txt'
    update(odd, file=odd_name, object_key=odd_name)  # no such file: missing

    status, out, err = verify("--format", "csv", "--orphans")

    assert status == 1
    assert re.fullmatch(r"Verified 5 rows [^\n]*\n", err), err  # the summary line, on stderr
    parsed = list(csv.reader(io.StringIO(out)))
    assert parsed[0] == CSV_HEADER
    size, checksum, gone = rows["size"], rows["checksum"], rows["gone"]
    model = ["core.FileManager", "file"]
    md5s = [md5(same_size_other_bytes(CHARLIE)), md5(CHARLIE)]  # expected, actual
    expected: list[list[Any]] = [
        ["missing", *model, str(gone.pk), gone.file.name, MISSING, "", ""],
        ["missing", *model, str(odd.pk), odd_name, MISSING, "", ""],
        ["size_mismatch", *model, str(size.pk), size.file.name, SIZE, "201", "200"],
        ["checksum_mismatch", *model, str(checksum.pk), checksum.file.name, CHECKSUM, *md5s],
        ["orphan", *model, "", STRAY, ORPHAN, "", ""],
    ]
    assert sorted(parsed[1:]) == sorted(expected)


def test_csv_of_a_clean_run_is_the_header_alone(clean: dict[str, FileManager]) -> None:
    status, out, _ = verify("--format", "csv")
    assert status == 0
    assert list(csv.reader(io.StringIO(out))) == [CSV_HEADER]


# --- JUnit ------------------------------------------------------------------------------------


def junit(text: str) -> ET.Element:
    suite = ET.fromstring(text.encode("utf-8"))  # bytes: the document declares its encoding
    assert suite.tag == "testsuite"
    return suite


def test_junit_a_case_per_row_and_a_failure_per_problem(
    rows: dict[str, FileManager], media_root: Path
) -> None:
    (media_root / STRAY).write_bytes(b"nobody's")

    status, out, err = verify("--format", "junit", "--orphans")

    assert status == 1
    assert re.fullmatch(r"Verified 4 rows [^\n]*\n", err), err  # the summary line, on stderr
    suite = junit(out)
    cases = suite.findall("testcase")
    failures = suite.findall("testcase/failure")
    assert len(cases) == 5  # four rows and the orphan
    assert len(failures) == 4
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "4", "0")
    found = {}
    for case in cases:
        assert case.get("classname") == "core.FileManager.file"
        failure = case.find("failure")
        found[case.get("name")] = None if failure is None else failure.get("type")
        if failure is not None:
            assert str(failure.get("message")).startswith(f"{failure.get('type')}: ")
            assert json.loads(str(failure.text))["kind"] == failure.get("type")
    assert found == {
        f"pk={rows['ok'].pk} {rows['ok'].file.name}": None,
        f"pk={rows['size'].pk} {rows['size'].file.name}": "size_mismatch",
        f"pk={rows['checksum'].pk} {rows['checksum'].file.name}": "checksum_mismatch",
        f"pk={rows['gone'].pk} {rows['gone'].file.name}": "missing",
        STRAY: "orphan",
    }


def test_junit_on_s3(s3_bucket: str, clean: dict[str, FileManager]) -> None:
    to_s3(3)
    put(s3_bucket, str(clean["c"].file.name), same_size_other_bytes(CHARLIE), "text/csv")
    status, out, _ = verify("--storage", "s3", "--format", "junit")
    assert status == 1
    suite = junit(out)
    assert len(suite.findall("testcase")) == 3
    assert [f.get("type") for f in suite.findall("testcase/failure")] == ["checksum_mismatch"]
    assert suite.get("name") == "verify_files s3 checksum"


def test_junit_many_rows_a_case_per_problem_and_a_summary(
    clean: dict[str, FileManager], media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage_migrate.report.verification

    monkeypatch.setattr(storage_migrate.report.verification, "JUNIT_MAX_CASES", 2)
    gone = make_row("gone.txt", b"soon deleted")
    (media_root / str(gone.file.name)).unlink()

    status, out, _ = verify("--format", "junit")

    assert status == 1
    suite = junit(out)
    cases = suite.findall("testcase")
    assert len(cases) == 2  # the problem and the summary, not one per row
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    [failure] = suite.findall("testcase/failure")
    assert failure.get("type") == "missing"
    summary = [c for c in cases if c.find("failure") is None]
    assert [(c.get("classname"), c.get("name")) for c in summary] == [("verify_files", "summary")]
    assert re.fullmatch(
        rf"Verified 4 rows at level checksum on {EVERY_FIELD}: 3 ok, 1 problem \(1 missing\) "
        rf"\(3 read to hash, 1\.0 kB\) in {SECONDS}{READ_RATE}",
        str(summary[0].findtext("system-out")),
    )


# --- --output ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json", "csv", "junit"])
def test_output_writes_the_report_and_one_summary_line(
    rows: dict[str, FileManager], tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"report.{fmt}"

    error, out, err = verify_failing("--format", fmt, "--output", str(path))

    assert error.returncode == 1
    assert out == ""
    summary = (
        rf"Verified 4 rows at level checksum on {EVERY_FIELD}: 1 ok, 3 problems "
        r"\(1 checksum_mismatch, 1 missing, 1 size_mismatch\) \(2 read to hash, 800 B\) "
        rf"in {SECONDS}{READ_RATE}\n"
    )
    assert re.fullmatch(summary, err), err
    written = path.read_text(encoding="utf-8")
    kinds = {"missing", "size_mismatch", "checksum_mismatch"}
    if fmt == "json":
        report = json.loads(written)
        assert report["totals"]["problems"] == 3
        assert {p["kind"] for p in report["problems"]} == kinds
    elif fmt == "csv":
        parsed = list(csv.reader(io.StringIO(written)))
        assert parsed[0] == CSV_HEADER
        assert sorted(r[0] for r in parsed[1:]) == sorted(kinds)
    elif fmt == "junit":
        suite = junit(written)
        assert len(suite.findall("testcase")) == 4
        assert {str(f.get("type")) for f in suite.findall("testcase/failure")} == kinds
    else:
        lines = written.splitlines()
        assert re.fullmatch(summary, lines[0] + "\n")
        assert len(lines) == 7


def test_output_of_a_clean_run(
    s3_bucket: str, clean: dict[str, FileManager], tmp_path: Path
) -> None:
    to_s3(3)
    path = tmp_path / "report.json"
    status, out, err = verify("--storage", "s3", "--format", "json", "--output", str(path))
    assert (status, out) == (0, "")
    assert re.fullmatch(
        rf"Verified 3 rows at level checksum on s3: 3 ok, 0 problems in {SECONDS}\n", err
    ), err
    assert json.loads(path.read_text(encoding="utf-8"))["totals"]["ok"] == 3


def test_unwritable_output_path_is_refused(clean: dict[str, FileManager], tmp_path: Path) -> None:
    error, out, err = verify_failing("--output", str(tmp_path / "no-such-dir" / "r.json"))
    assert error.returncode == 2
    assert "--output" in str(error)
    assert (out, err) == ("", "")


def test_configuration_error_writes_a_report_that_says_why(
    clean: dict[str, FileManager], tmp_path: Path
) -> None:
    path = tmp_path / "report.json"
    error, out, err = verify_failing(
        "--storage", "nowhere", "--format", "json", "--output", str(path)
    )
    assert error.returncode == 2
    assert (out, err) == ("", "")
    # The file a pipeline shows says why the run did nothing.
    written = json.loads(path.read_text())
    assert (written["error"], written["problems"]) == (str(error), [])
    assert written["totals"]["rows"] == 0


# --- exit status and --fail-on ----------------------------------------------------------------


def stray(where: str, bucket: str, media_root: Path) -> None:
    """An object below file_manager/ that no row points to."""
    if where == "s3":
        put(bucket, STRAY, b"nobody's")
    else:
        (media_root / STRAY).write_bytes(b"nobody's")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_orphans_alone_exit_zero_unless_failed_on(
    s3_bucket: str, clean: dict[str, FileManager], media_root: Path, where: str
) -> None:
    if where == "s3":
        to_s3(3)
    stray(where, s3_bucket, media_root)

    status, report = verify_json("--storage", where, "--orphans")
    assert status == 0
    assert report["totals"]["rows"] == 3
    assert report["totals"]["ok"] == 3
    assert report["totals"]["orphans"] == 1
    assert report["totals"]["problems"] == 1
    assert report["problems"] == [
        {
            "kind": "orphan",
            "model": "core.FileManager",
            "field": "file",
            "pk": None,
            "name": STRAY,
            "detail": ORPHAN,
        }
    ]

    error, out, _ = verify_failing("--storage", where, "--orphans", "--fail-on", "orphan")
    assert error.returncode == 1
    assert str(error) == f"1 {FAIL_ON_MESSAGE}"
    assert out.splitlines()[1:] == ["orphan (1):", line("orphan", None, STRAY, ORPHAN)]

    # Without --orphans nobody looks for them, whatever --fail-on says.
    status, report = verify_json("--storage", where, "--fail-on", "orphan")
    assert status == 0
    assert report["problems"] == []
    assert report["totals"]["orphans"] == 0


def test_fail_on_chooses_the_kinds_that_fail(
    rows: dict[str, FileManager], media_root: Path
) -> None:
    (media_root / STRAY).write_bytes(b"nobody's")

    error, out, _ = verify_failing("--orphans")
    assert error.returncode == 1
    assert str(error) == f"3 {FAIL_ON_MESSAGE}"  # every kind but orphan
    assert json.loads(verify("--orphans", "--format", "json")[1])["totals"]["problems"] == 4

    error, _, _ = verify_failing("--orphans", "--fail-on", "missing, orphan")
    assert error.returncode == 1
    assert str(error) == f"2 {FAIL_ON_MESSAGE}"

    status, out, _ = verify("--orphans", "--fail-on", "unverifiable,error")
    assert status == 0  # the report is printed all the same
    assert "4 problems" in out.splitlines()[0]
    assert len(out.splitlines()) == 1 + 4 * 2


def test_fail_on_unknown_kind_exits_two(rows: dict[str, FileManager]) -> None:
    error, out, err = verify_failing("--fail-on", "missing,bogus")
    assert error.returncode == 2
    message = str(error)
    assert "bogus" in message
    assert KNOWN_KINDS in message
    assert "\n" not in message
    assert (out, err) == ("", "")


def test_unknown_storage_alias_lists_the_known_ones(clean: dict[str, FileManager]) -> None:
    error, out, err = verify_failing("--storage", "nowhere")
    assert error.returncode == 2
    assert "'nowhere'" in str(error)
    assert KNOWN_ALIASES in str(error)
    assert (out, err) == ("", "")


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_sample_exits_two(clean: dict[str, FileManager], value: str) -> None:
    error, out, _ = verify_failing("--sample", value)
    assert error.returncode == 2
    assert "--sample" in str(error)
    assert out == ""


def test_sample_zero_as_a_keyword_exits_two(clean: dict[str, FileManager]) -> None:
    # call_command(sample=0) bypasses argparse's type check; the library must refuse it.
    error, out, _ = verify_failing(sample=0)
    assert error.returncode == 2
    assert "sample must be 1 or more" in str(error)
    assert out == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--level", "thorough"), "--level"),
        (("--format", "xml"), "--format"),
        (("--workers", "0"), "--workers"),
        (("--model", "core.Nope"), "Unknown model 'core.Nope'"),
        (("--model", "core.FileManager.nofield"), "has no FileField 'nofield'"),
    ],
)
def test_bad_options_exit_two(
    clean: dict[str, FileManager], args: tuple[str, ...], expected: str
) -> None:
    error, out, _ = verify_failing(*args)
    assert error.returncode == 2
    assert expected in str(error)
    assert out == ""


@pytest.mark.parametrize("how", ["--storage s3", "USE_S3_STORAGE"])
def test_missing_bucket_exits_two(
    s3_bucket: str,
    clean: dict[str, FileManager],
    settings: Any,
    default_storage_is: Any,
    how: str,
) -> None:
    missing = f"{s3_bucket}-missing"
    settings.AWS_STORAGE_BUCKET_NAME = missing
    if how == "USE_S3_STORAGE":
        default_storage_is("s3")
        args: tuple[str, ...] = ()
    else:
        reset_storages()
        args = ("--storage", "s3")

    error, out, err = verify_failing(*args)

    assert error.returncode == 2
    message = str(error)
    assert repr(missing) in message
    assert "does not exist" in message
    assert "\n" not in message
    assert (out, err) == ("", "")
    assert missing not in {b["Name"] for b in s3_client().list_buckets()["Buckets"]}


# --- --sample ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_sample_checks_that_many_rows(s3_bucket: str, media_root: Path, where: str) -> None:
    made = [make_row(f"file{i}.txt", f"file number {i}".encode()) for i in range(5)]
    if where == "s3":
        to_s3(5)

    status, report = verify_json("--storage", where, "--sample", "2")
    assert status == 0
    assert report["sample"] == 2
    assert report["totals"]["rows"] == 2
    assert report["totals"]["ok"] == 2

    status, out, _ = verify("--storage", where, "--sample", "2", "--format", "junit")
    assert status == 0
    names = [str(c.get("name")) for c in junit(out).findall("testcase")]
    assert len(names) == 2
    assert len(set(names)) == 2
    assert set(names) <= {f"pk={r.pk} {r.file.name}" for r in made}

    status, out, _ = verify("--storage", where, "--sample", "2")
    assert status == 0
    read, speed = (r" \(2 read to hash, 26 B\)", READ_RATE) if where == "local" else ("", "")
    assert re.fullmatch(
        rf"Verified 2 rows \(a random sample of at most 2 a field\) at level checksum on "
        rf"{where}: 2 ok, 0 problems{read} in {SECONDS}{speed}\n",
        out,
    ), out

    status, report = verify_json("--storage", where, "--sample", "10")
    assert (status, report["sample"], report["totals"]["rows"]) == (0, 10, 5)


def test_sample_finds_a_problem_when_every_row_has_it(media_root: Path) -> None:
    for i in range(4):
        row = make_row(f"f{i}.txt", b"data")
        update(row, file_size=5)
    status, report = verify_json("--sample", "3")
    assert status == 1
    assert report["totals"]["rows"] == 3
    assert [p["kind"] for p in report["problems"]] == ["size_mismatch"] * 3


# --- --level ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_levels(s3_bucket: str, clean: dict[str, FileManager], where: str) -> None:
    """exists ignores sizes, size ignores bytes, checksum compares MD5s, deep reads it all."""
    a, b, c = clean["a"], clean["b"], clean["c"]
    if where == "s3":
        to_s3(3)
        put(s3_bucket, str(c.file.name), same_size_other_bytes(CHARLIE), "text/csv")
    else:
        Path(c.file.path).write_bytes(same_size_other_bytes(CHARLIE))
    update(b, file_size=199)
    args = ("--storage", where)

    status, report = verify_json(*args, "--level", "exists")
    assert status == 0
    assert report["level"] == "exists"
    assert report["totals"] == {
        "rows": 3,
        "ok": 3,
        "problems": 0,
        "orphans": 0,
        "downloaded": 0,
        "bytes_read": 0,
        "unchecked": 0,
        "fixed": 0,
    }

    status, report = verify_json(*args, "--level", "size")
    assert status == 1
    assert report["totals"]["downloaded"] == 0
    [problem] = report["problems"]
    assert (problem["kind"], problem["pk"]) == ("size_mismatch", b.pk)
    assert (problem["expected"], problem["actual"]) == (199, 200)

    status, report = verify_json(*args, "--level", "checksum")
    assert status == 1
    problems = by_pk(report["problems"])
    assert {pk: p["kind"] for pk, p in problems.items()} == {
        b.pk: "size_mismatch",
        c.pk: "checksum_mismatch",
    }
    assert problems[c.pk]["expected"] == md5(CHARLIE)
    assert problems[c.pk]["actual"] == md5(same_size_other_bytes(CHARLIE))
    # Local files are read to hash them; S3's ETags are their MD5s. A size mismatch is not read.
    assert report["totals"]["downloaded"] == (2 if where == "local" else 0)
    assert report["totals"]["bytes_read"] == (800 if where == "local" else 0)

    status, report = verify_json(*args, "--level", "deep")
    assert status == 1
    assert {p["pk"]: p["kind"] for p in report["problems"]} == {
        b.pk: "size_mismatch",
        c.pk: "checksum_mismatch",
    }
    assert report["totals"]["downloaded"] == 3
    assert report["totals"]["bytes_read"] == 1000
    assert a.pk not in {p["pk"] for p in report["problems"]}


def test_the_first_failing_check_names_the_outcome(
    s3_bucket: str, clean: dict[str, FileManager], media_root: Path
) -> None:
    """missing before size, size before checksum, checksum before metadata."""
    a, b, c = clean["a"], clean["b"], clean["c"]
    update(a, file_size=1, checksum="0" * 32, bucket="elsewhere")
    update(b, checksum="0" * 32, bucket="elsewhere")
    update(c, bucket="elsewhere", file_size=1)
    (media_root / str(c.file.name)).unlink()

    status, report = verify_json()

    assert status == 1
    assert {p["pk"]: p["kind"] for p in report["problems"]} == {
        a.pk: "size_mismatch",
        b.pk: "checksum_mismatch",
        c.pk: "missing",
    }


# --- --strict ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_strict_makes_a_blank_checksum_unverifiable(
    s3_bucket: str, clean: dict[str, FileManager], where: str
) -> None:
    if where == "s3":
        to_s3(3)
    blank = update(clean["b"], checksum="")
    args = ("--storage", where)

    status, report = verify_json(*args)
    assert status == 0
    assert report["problems"] == []
    assert (report["totals"]["ok"], report["totals"]["unchecked"]) == (3, 1)

    status, out, _ = verify(*args, "--strict")
    assert status == 1
    lines = out.splitlines()
    read, speed = ("; 2 read to hash, 800 B", READ_RATE) if where == "local" else ("", "")
    assert re.fullmatch(
        rf"Verified 3 rows at level checksum on {where}: 2 ok, 1 problem \(1 unverifiable\) "
        rf"\(1 without a stored checksum{read}\) in {SECONDS}{speed}",
        lines[0],
    ), lines[0]
    assert lines[1:] == [
        "unverifiable (1):",
        line("unverifiable", blank, str(blank.file.name), UNVERIFIABLE),
    ]

    status, report = verify_json(*args, "--strict")
    assert status == 1
    assert report["problems"] == [
        {
            "kind": "unverifiable",
            "model": "core.FileManager",
            "field": "file",
            "pk": blank.pk,
            "name": blank.file.name,
            "detail": UNVERIFIABLE,
        }
    ]
    blank.refresh_from_db()
    assert blank.checksum == ""  # nothing is written without --fix-metadata

    status, _ = verify_json(*args, "--strict", "--level", "size")
    assert status == 0  # no checksum is compared below level checksum


# --- unsafe names and errors ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_unsafe_names_are_never_looked_up(
    s3_bucket: str, clean: dict[str, FileManager], where: str
) -> None:
    if where == "s3":
        to_s3(3)
    up = update(clean["a"], file="../settings.py")
    absolute = update(clean["b"], file="/etc/passwd")

    status, report = verify_json("--storage", where)

    assert status == 1
    assert by_pk(report["problems"]) == {
        up.pk: {
            "kind": "unsafe_name",
            "model": "core.FileManager",
            "field": "file",
            "pk": up.pk,
            "name": "../settings.py",
            "detail": "name has a '..' part",
        },
        absolute.pk: {
            "kind": "unsafe_name",
            "model": "core.FileManager",
            "field": "file",
            "pk": absolute.pk,
            "name": "/etc/passwd",
            "detail": "name is an absolute path",
        },
    }
    assert report["totals"]["ok"] == 1


def test_a_failing_read_is_an_error_and_the_run_goes_on(
    clean: dict[str, FileManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = LocalEndpoint.open
    broken = str(clean["b"].file.name)

    def open_or_fail(self: LocalEndpoint, name: str) -> Any:
        if name == broken:
            raise OSError("disk on fire")
        return real_open(self, name)

    monkeypatch.setattr(LocalEndpoint, "open", open_or_fail)

    status, out, _ = verify()

    assert status == 1
    lines = out.splitlines()
    assert "2 ok, 1 problem (1 error)" in lines[0]
    assert lines[1:] == [
        "error (1):",
        line("error", clean["b"], broken, "OSError: disk on fire"),
    ]


# --- metadata and --fix-metadata --------------------------------------------------------------


def columns(row: FileManager) -> tuple[Any, ...]:
    row.refresh_from_db()
    return (row.file_size, row.checksum, row.bucket, row.object_key, row.content_type)


def test_fix_metadata_on_local_disk(clean: dict[str, FileManager]) -> None:
    a, b, c = clean["a"], clean["b"], clean["c"]
    update(a, file_size=1)
    update(b, checksum="")
    update(c, checksum="0" * 32)

    status, report = verify_json("--fix-metadata")

    assert status == 1
    problems = by_pk(report["problems"])
    assert {pk: p["kind"] for pk, p in problems.items()} == {
        a.pk: "size_mismatch",
        c.pk: "checksum_mismatch",
    }
    assert problems[a.pk]["detail"] == f"{SIZE}; corrected (--fix-metadata)"
    assert problems[c.pk]["detail"] == CHECKSUM  # a checksum is never corrected
    assert report["totals"]["unchecked"] == 1
    assert report["totals"]["fixed"] == 2
    assert columns(a)[0] == len(ALPHA)
    assert columns(b)[1] == md5(BRAVO)  # an empty checksum is filled
    assert columns(c)[1] == "0" * 32

    status, report = verify_json()
    assert status == 1
    assert [(p["kind"], p["pk"]) for p in report["problems"]] == [("checksum_mismatch", c.pk)]


def test_metadata_mismatch_on_s3_and_fix_metadata(
    s3_bucket: str, clean: dict[str, FileManager]
) -> None:
    to_s3(3)
    a, b, c = clean["a"], clean["b"], clean["c"]
    update(a, bucket="old-bucket")
    update(b, content_type="image/png")
    update(c, content_type="")  # blank: filled, not a mismatch

    status, out, _ = verify("--storage", "s3")
    assert status == 1
    lines = out.splitlines()
    assert "1 ok, 2 problems (2 metadata_mismatch)" in lines[0]
    assert lines[1] == "metadata_mismatch (2):"
    assert sorted(lines[2:]) == sorted(
        [
            line(
                "metadata_mismatch",
                a,
                str(a.file.name),
                f"bucket is 'old-bucket', the storage says {s3_bucket!r}",
            ),
            line(
                "metadata_mismatch",
                b,
                str(b.file.name),
                "content_type is 'image/png', the storage says 'application/octet-stream'",
            ),
        ]
    )
    assert columns(c)[4] == ""

    status, report = verify_json("--storage", "s3", "--fix-metadata")
    assert status == 1
    assert report["totals"]["fixed"] == 3
    assert all(p["detail"].endswith("; corrected (--fix-metadata)") for p in report["problems"])
    assert columns(a)[2] == s3_bucket
    assert columns(b)[4] == "application/octet-stream"
    assert columns(c)[4] == "text/csv"

    status, report = verify_json("--storage", "s3")
    assert status == 0
    assert report["totals"]["ok"] == 3


# --- where the app reads: the field's storage -------------------------------------------------


def test_without_storage_the_fields_storage_is_checked(
    s3_bucket: str, clean: dict[str, FileManager], default_storage_is: Any
) -> None:
    """Flipping the default storage (USE_S3_STORAGE) moves the check to S3."""
    to_s3(3)
    corrupt = same_size_other_bytes(BRAVO)
    put(s3_bucket, str(clean["b"].file.name), corrupt, "application/octet-stream")

    status, report = verify_json("--level", "checksum", "--model", "core.FileManager")
    assert status == 1  # on the local disk: the bytes are right, the rows say S3
    assert {p["kind"] for p in report["problems"]} == {"metadata_mismatch"}

    default_storage_is("s3")
    status, report = verify_json()
    assert status == 1
    assert report["storage"] == EVERY_FIELD
    assert report["totals"]["downloaded"] == 0
    [problem] = report["problems"]
    assert (problem["kind"], problem["pk"]) == ("checksum_mismatch", clean["b"].pk)
    assert (problem["expected"], problem["actual"]) == (md5(BRAVO), md5(corrupt))


# --- large selections: rows joined with one listing -------------------------------------------


def store(where: str, bucket: str, media_root: Path, key: str, data: bytes) -> None:
    """A file on the local disk or an object in the bucket, under the storage's own name."""
    if where == "s3":
        put(bucket, key, data)
    else:
        path = media_root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def row_for(where: str, bucket: str, name: str, key: str, data: bytes, **extra: Any) -> FileManager:
    """An unsaved row for a file stored as ``key``, with right metadata unless ``extra`` says."""
    values = {
        "file": name,
        "file_size": len(data),
        "checksum": md5(data),
        "bucket": bucket if where == "s3" else "",
        "object_key": key if where == "s3" else name,
        "content_type": "text/plain",
        **extra,
    }
    return FileManager(**values)


def pk_of(name: str) -> Any:
    return FileManager.objects.get(file=name).pk


@pytest.mark.parametrize("where", ["local", "s3"])
def test_large_selection_joined_with_a_listing(
    s3_bucket: str, media_root: Path, settings: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """From JOIN_MIN_ROWS rows, the rows are read in the byte order of their names (in keyset
    pages, here of 7 rows) and merged with one listing: names whose byte order is not a
    locale's ('B' < 'Zz' < 'a' < 'é') must still meet their objects, and rows may share a
    file."""
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "BATCH_SIZE": 7}
    monkeypatch.setattr(joins, "JOIN_PAGE", 1)  # pages of BATCH_SIZE rows
    shared, wrong, accented = b"many rows, one file", b"stored md5 is wrong", b"accented"
    for key, data in [
        ("file_manager/a.txt", shared),
        ("file_manager/B.txt", wrong),
        ("file_manager/\u00e9.txt", accented),
    ]:
        store(where, s3_bucket, media_root, key, data)
    rows = [
        row_for(
            where, s3_bucket, "file_manager/B.txt", "file_manager/B.txt", wrong, checksum="0" * 32
        ),
        row_for(where, s3_bucket, "file_manager/\u00e9.txt", "file_manager/\u00e9.txt", accented),
        row_for(where, s3_bucket, "file_manager/Zz.txt", "file_manager/Zz.txt", b"never stored"),
    ]
    count = verification.JOIN_MIN_ROWS
    rows += [
        row_for(where, s3_bucket, "file_manager/a.txt", "file_manager/a.txt", shared)
        for _ in range(count - len(rows))
    ]
    FileManager.objects.bulk_create(rows)
    assert FileManager.objects.count() == count

    status, report = verify_json("--storage", where, "--orphans")

    assert status == 1
    assert report["totals"]["rows"] == count
    assert report["totals"]["ok"] == count - 2
    assert report["totals"]["orphans"] == 0
    # Local files are read to hash them (the missing one cannot be); S3 lists its MD5s.
    assert report["totals"]["downloaded"] == (count - 1 if where == "local" else 0)
    assert sorted((p["kind"], p["pk"], p["name"]) for p in report["problems"]) == [
        ("checksum_mismatch", pk_of("file_manager/B.txt"), "file_manager/B.txt"),
        ("missing", pk_of("file_manager/Zz.txt"), "file_manager/Zz.txt"),
    ]


# Names the storage keeps under a normalized name: the app reads them (Django's storages
# normalize them too), migrate_storage copies them; verify_files must find them.
UNNORMALIZED = [
    ("file_manager//double-slash.txt", "file_manager/double-slash.txt"),
    ("file_manager/./dot.txt", "file_manager/dot.txt"),
]


def unnormalized_rows(where: str, bucket: str, media_root: Path, count: int) -> dict[str, Any]:
    """``count`` rows: two whose names the storage normalizes, the rest sharing one file."""
    shared = b"shared"
    store(where, bucket, media_root, "file_manager/shared.txt", shared)
    rows = []
    for name, key in UNNORMALIZED:
        data = name.encode()
        store(where, bucket, media_root, key, data)
        rows.append(row_for(where, bucket, name, key, data))
    rows += [
        row_for(where, bucket, "file_manager/shared.txt", "file_manager/shared.txt", shared)
        for _ in range(count - len(rows))
    ]
    FileManager.objects.bulk_create(rows)
    return {name: pk_of(name) for name, _ in UNNORMALIZED}


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize(
    "joined",
    [False, True],
    ids=["per-row", "joined"],
)
def test_names_the_storage_normalizes_are_found(
    s3_bucket: str, media_root: Path, where: str, joined: bool
) -> None:
    count = verification.JOIN_MIN_ROWS if joined else 10
    unnormalized_rows(where, s3_bucket, media_root, count)

    status, report = verify_json("--storage", where)

    assert report["problems"] == []
    assert status == 0
    assert report["totals"]["ok"] == count


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_file_a_row_points_to_is_no_orphan(s3_bucket: str, media_root: Path, where: str) -> None:
    unnormalized_rows(where, s3_bucket, media_root, 3)

    status, report = verify_json("--storage", where, "--orphans", "--fail-on", "orphan")

    assert report["problems"] == []
    assert status == 0


@pytest.mark.django_db
def test_verbosity_3_says_how_rows_are_checked() -> None:
    FileManager.objects.create(file=ContentFile(b"debug me", name="debug.txt"))
    stderr = io.StringIO()

    call_command("verify_files", verbosity=3, stdout=io.StringIO(), stderr=stderr)

    assert "one request per row (small selection)" in stderr.getvalue()
    assert "DEBUG storage_migrate: ok core.FileManager pk=" in stderr.getvalue()
