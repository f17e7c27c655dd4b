"""manage.py migrate_storage through call_command, against moto's in-process S3: the text and JSON
reports, the report file, exit codes, configuration errors and the options that shape a run."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages

pytestmark = pytest.mark.django_db

SECONDS = r"\d+\.\d s"
ROW_COLUMNS = ("pk", "file", "bucket", "object_key", "file_size", "content_type", "checksum")
REPORT_KEYS = {
    "command",
    "source",
    "destination",
    "dry_run",
    "interrupted",
    "pending",
    "walked_whole",
    "cost",
    "shard",
    "started_at",
    "finished_at",
    "totals",
    "problems",
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def run(*args: str, **options: Any) -> tuple[str, str]:
    """call_command; (stdout, stderr). Fails the test if the command raises."""
    out, err = io.StringIO(), io.StringIO()
    call_command("migrate_storage", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def run_failing(*args: str, **options: Any) -> tuple[CommandError, str, str]:
    """call_command that must raise CommandError; (the error, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("migrate_storage", *args, stdout=out, stderr=err, **options)
    return info.value, out.getvalue(), err.getvalue()


def make_row(name: str, data: bytes) -> FileManager:
    """A row stored through the default (local) storage, metadata recorded by the model."""
    return FileManager.objects.create(file=ContentFile(data, name=name))


def snapshot() -> list[tuple[Any, ...]]:
    return list(FileManager.objects.order_by("pk").values_list(*ROW_COLUMNS))


def bucket_keys(bucket: str) -> list[str]:
    listing = s3_client().list_objects_v2(Bucket=bucket)
    return sorted(entry["Key"] for entry in listing.get("Contents", []))


@pytest.fixture
def rows(media_root: Path) -> dict[str, FileManager]:
    """Three files of 100, 200 and 700 bytes (1.0 kB together), and a row whose file is gone."""
    made = {
        "a": make_row("alpha.txt", b"a" * 100),
        "b": make_row("bravo.bin", bytes(range(200))),
        "c": make_row("charlie.csv", b"c,s,v\n" * 116 + b"1234"),
        "gone": make_row("gone.txt", b"soon deleted"),
    }
    assert made["c"].file_size == 700
    (media_root / str(made["gone"].file.name)).unlink()
    return made


def assert_migrated(row: FileManager, bucket: str, data: bytes) -> None:
    row.refresh_from_db()
    assert row.bucket == bucket
    assert row.object_key == row.file.name
    assert row.file_size == len(data)
    assert row.checksum == hashlib.md5(data).hexdigest()
    body = s3_client().get_object(Bucket=bucket, Key=row.object_key)["Body"].read()
    assert body == data


# --- the text report --------------------------------------------------------------------------


def test_text_summary_and_problem_line(s3_bucket: str, rows: dict[str, FileManager]) -> None:
    error, out, err = run_failing("--to", "s3")

    assert error.returncode == 1
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert re.fullmatch(
        rf"local -> s3: Copied 3 files \(1\.0 kB\), skipped 0, 1 problem \(1 missing\) "
        rf"in {SECONDS} \(\d+\.\d MB/s\)",
        lines[0],
    ), lines[0]
    gone = rows["gone"]
    assert lines[1] == (
        f"  missing           core.FileManager pk={gone.pk} {str(gone.file.name)!r}: "
        "source file does not exist"
    )
    assert err == ""  # no progress bar: stderr is not a terminal

    assert_migrated(rows["a"], s3_bucket, b"a" * 100)
    assert_migrated(rows["b"], s3_bucket, bytes(range(200)))
    assert_migrated(rows["c"], s3_bucket, b"c,s,v\n" * 116 + b"1234")
    gone.refresh_from_db()
    assert gone.bucket == ""
    assert len(bucket_keys(s3_bucket)) == 3


def test_clean_run_exits_zero_and_second_run_skips(
    s3_bucket: str, rows: dict[str, FileManager]
) -> None:
    rows["gone"].delete()
    out, _ = run("--to", "s3")
    assert re.fullmatch(
        rf"local -> s3: Copied 3 files \(1\.0 kB\), skipped 0, 0 problems in {SECONDS} "
        r"\(\d+\.\d MB/s\)\n",
        out,
    ), out

    out, _ = run("--to", "s3")
    assert re.fullmatch(
        rf"local -> s3: Copied 0 files \(0 B\), skipped 3, 0 problems in {SECONDS}\n", out
    ), out


def test_verbosity_zero_prints_only_problem_lines(
    s3_bucket: str, rows: dict[str, FileManager]
) -> None:
    error, out, _ = run_failing("--to", "s3", verbosity=0)
    assert error.returncode == 1
    gone = rows["gone"]
    assert out == (
        f"  missing           core.FileManager pk={gone.pk} {str(gone.file.name)!r}: "
        "source file does not exist\n"
    )


# --- JSON and the report file -----------------------------------------------------------------


def test_json_is_one_document_with_totals_and_problems(
    s3_bucket: str, rows: dict[str, FileManager]
) -> None:
    error, out, err = run_failing("--to", "s3", "--format", "json")

    assert error.returncode == 1
    report = json.loads(out)  # the whole of stdout is one document
    assert set(report) == REPORT_KEYS
    assert report["command"] == "migrate_storage"
    assert report["source"] == "local"
    assert report["destination"] == "s3"
    assert report["dry_run"] is False
    assert TIMESTAMP.match(report["started_at"]), report["started_at"]
    assert TIMESTAMP.match(report["finished_at"]), report["finished_at"]
    assert report["finished_at"] >= report["started_at"]
    assert report["totals"] == {
        "rows": 4,
        "copied": 3,
        "skipped": 0,
        "at_destination": 0,
        "failed": 1,
        "problems": 1,
        "bytes_copied": 1000,
        "copied_server_side": 0,
        "deleted": 0,
        "bytes_deleted": 0,
    }
    gone = rows["gone"]
    assert report["problems"] == [
        {
            "kind": "missing",
            "model": "core.FileManager",
            "field": "file",
            "pk": gone.pk,
            "name": gone.file.name,
            "detail": "source file does not exist",
        }
    ]
    assert err == ""


def test_report_file_holds_the_same_json(
    s3_bucket: str, rows: dict[str, FileManager], tmp_path: Path
) -> None:
    path = tmp_path / "report.json"
    error, out, _ = run_failing("--to", "s3", "--format", "json", "--report", str(path))
    assert error.returncode == 1
    written = path.read_text(encoding="utf-8")
    assert written == out
    assert json.loads(written)["totals"]["copied"] == 3


def test_report_file_is_json_when_stdout_is_text(
    s3_bucket: str, rows: dict[str, FileManager], tmp_path: Path
) -> None:
    path = tmp_path / "report.json"
    error, out, _ = run_failing("--to", "s3", "--report", str(path))
    assert error.returncode == 1
    assert out.startswith("local -> s3: Copied 3 files")
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["totals"] == {
        "rows": 4,
        "copied": 3,
        "skipped": 0,
        "at_destination": 0,
        "failed": 1,
        "problems": 1,
        "bytes_copied": 1000,
        "copied_server_side": 0,
        "deleted": 0,
        "bytes_deleted": 0,
    }
    assert [p["kind"] for p in report["problems"]] == ["missing"]


def test_problem_exit_code_after_the_report_is_printed(
    s3_bucket: str, rows: dict[str, FileManager]
) -> None:
    error, out, _ = run_failing("--to", "s3", "--format", "json")
    assert error.returncode == 1
    assert "1 problem(s)" in str(error)
    assert json.loads(out)["totals"]["problems"] == 1


# --- configuration errors: exit 2, nothing written --------------------------------------------


def test_unknown_alias_lists_the_known_ones(s3_bucket: str, rows: dict[str, FileManager]) -> None:
    before = snapshot()
    error, out, _ = run_failing("--to", "nowhere", "--from", "local")
    assert error.returncode == 2
    message = str(error)
    assert "'nowhere'" in message
    assert "known: default, local, s3, staticfiles" in message
    assert out == ""
    assert snapshot() == before


def test_unknown_alias_without_from_lists_the_known_ones(s3_bucket: str) -> None:
    error, out, _ = run_failing("--to", "nowhere")
    assert error.returncode == 2
    assert "'nowhere'" in str(error)
    assert "known: default, local, s3, staticfiles" in str(error)
    assert out == ""


def test_unknown_source_alias(s3_bucket: str) -> None:
    error, out, _ = run_failing("--to", "s3", "--from", "elsewhere")
    assert error.returncode == 2
    assert "'elsewhere'" in str(error)
    assert "known: default, local, s3, staticfiles" in str(error)
    assert out == ""
    assert bucket_keys(s3_bucket) == []


def test_same_source_and_destination(s3_bucket: str, rows: dict[str, FileManager]) -> None:
    before = snapshot()
    error, out, _ = run_failing("--to", "local", "--from", "local")
    assert error.returncode == 2
    assert "same storage" in str(error)
    assert out == ""
    assert snapshot() == before


def test_missing_bucket_needs_create_bucket(
    s3_bucket: str, rows: dict[str, FileManager], settings: Any, tmp_path: Path
) -> None:
    missing = f"{s3_bucket}-missing"
    settings.AWS_STORAGE_BUCKET_NAME = missing
    reset_storages()
    before = snapshot()
    report = tmp_path / "report.json"

    error, out, _ = run_failing("--to", "s3", "--report", str(report))

    assert error.returncode == 2
    assert repr(missing) in str(error)
    assert "--create-bucket" in str(error)
    assert "\n" not in str(error)
    assert out == ""
    assert json.loads(report.read_text())["error"] == str(error)  # the file says why
    assert snapshot() == before
    buckets = {b["Name"] for b in s3_client().list_buckets()["Buckets"]}
    assert missing not in buckets
    assert bucket_keys(s3_bucket) == []

    error, out, _ = run_failing("--to", "s3", "--create-bucket")
    assert error.returncode == 1  # the missing file; the three others are copied
    buckets = {b["Name"] for b in s3_client().list_buckets()["Buckets"]}
    assert missing in buckets
    assert len(bucket_keys(missing)) == 3
    assert_migrated(rows["a"], missing, b"a" * 100)
    assert out.startswith("local -> s3: Copied 3 files (1.0 kB), skipped 0, 1 problem (1 missing)")


def test_dry_run_with_create_bucket_creates_nothing(
    s3_bucket: str, rows: dict[str, FileManager], settings: Any
) -> None:
    missing = f"{s3_bucket}-dry"
    settings.AWS_STORAGE_BUCKET_NAME = missing
    reset_storages()
    before = snapshot()
    error, out, _ = run_failing("--to", "s3", "--create-bucket", "--dry-run", "--format", "json")
    assert error.returncode == 1
    assert json.loads(out)["totals"]["copied"] == 3
    buckets = {b["Name"] for b in s3_client().list_buckets()["Buckets"]}
    assert missing not in buckets
    assert snapshot() == before


# --- options ----------------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_predicts_the_real_run(
    s3_bucket: str, rows: dict[str, FileManager], media_root: Path
) -> None:
    before = snapshot()
    files = {p: p.read_bytes() for p in media_root.rglob("*") if p.is_file()}
    assert len(files) == 3

    error, out, _ = run_failing("--to", "s3", "--dry-run", "--format", "json")
    assert error.returncode == 1
    dry = json.loads(out)
    assert dry["dry_run"] is True
    assert bucket_keys(s3_bucket) == []
    assert snapshot() == before
    assert {p: p.read_bytes() for p in media_root.rglob("*") if p.is_file()} == files

    error, out, _ = run_failing("--to", "s3", "--format", "json")
    assert error.returncode == 1
    real = json.loads(out)
    assert real["dry_run"] is False
    assert dry["totals"] == real["totals"]
    assert dry["totals"]["copied"] == 3
    assert dry["totals"]["bytes_copied"] == 1000
    assert dry["problems"] == real["problems"]
    assert len(bucket_keys(s3_bucket)) == 3


def test_dry_run_text_summary(s3_bucket: str, rows: dict[str, FileManager]) -> None:
    error, out, _ = run_failing("--to", "s3", "--dry-run")
    assert error.returncode == 1
    assert re.match(
        rf"local -> s3: Dry run: would copy 3 files \(1\.0 kB\), skip 0, 1 problem \(1 missing\) "
        rf"in {SECONDS}\n",
        out,
    ), out


def test_dry_run_predicts_a_checksum_mismatch(s3_bucket: str) -> None:
    row = make_row("wrong.txt", b"bytes whose md5 is not stored")
    FileManager.objects.filter(pk=row.pk).update(checksum="0" * 32)
    _, dry_out, _ = run_failing("--to", "s3", "--dry-run", "--format", "json")
    _, real_out, _ = run_failing("--to", "s3", "--format", "json")
    assert json.loads(dry_out)["totals"] == json.loads(real_out)["totals"]


def test_limit_processes_that_many_rows(s3_bucket: str, rows: dict[str, FileManager]) -> None:
    out, _ = run("--to", "s3", "--limit", "2", "--format", "json")
    report = json.loads(out)
    assert report["totals"] == {
        "rows": 2,
        "copied": 2,
        "skipped": 0,
        "at_destination": 0,
        "failed": 0,
        "problems": 0,
        "bytes_copied": 300,
        "copied_server_side": 0,
        "deleted": 0,
        "bytes_deleted": 0,
    }
    assert bucket_keys(s3_bucket) == sorted([str(rows["a"].file.name), str(rows["b"].file.name)])
    for key in ("a", "b"):
        rows[key].refresh_from_db()
        assert rows[key].bucket == s3_bucket
    rows["c"].refresh_from_db()
    assert rows["c"].bucket == ""


def test_limit_across_batches(s3_bucket: str, rows: dict[str, FileManager]) -> None:
    out, _ = run("--to", "s3", "--limit", "3", "--batch-size", "2", "--format", "json")
    totals = json.loads(out)["totals"]
    assert (totals["rows"], totals["copied"]) == (3, 3)
    assert len(bucket_keys(s3_bucket)) == 3


def test_verbosity_two_prints_a_line_per_row(s3_bucket: str, rows: dict[str, FileManager]) -> None:
    error, out, err = run_failing("--to", "s3", "-v", "2")
    assert error.returncode == 1
    lines = err.splitlines()
    assert len(lines) == 4, err
    by_pk = {}
    for line in lines:
        match = re.fullmatch(r"(\w+) +core\.FileManager pk=(\d+) '([^']+)'( \(\d+ B\))?", line)
        assert match, line
        by_pk[int(match[2])] = (match[1], match[3], match[4])
    assert by_pk == {
        rows["a"].pk: ("copied", rows["a"].file.name, " (100 B)"),
        rows["b"].pk: ("copied", rows["b"].file.name, " (200 B)"),
        rows["c"].pk: ("copied", rows["c"].file.name, " (700 B)"),
        rows["gone"].pk: ("missing", rows["gone"].file.name, None),
    }
    assert out.startswith("local -> s3: Copied 3 files")


@pytest.mark.parametrize("value", ["0", "-1"])
def test_zero_workers_is_rejected(s3_bucket: str, rows: dict[str, FileManager], value: str) -> None:
    before = snapshot()
    error, out, _ = run_failing("--to", "s3", "--workers", value)
    assert "--workers" in str(error)
    assert "must be 1 or more" in str(error)
    assert out == ""
    assert snapshot() == before
    assert bucket_keys(s3_bucket) == []


def test_zero_workers_as_a_keyword_is_a_configuration_error(
    s3_bucket: str, rows: dict[str, FileManager]
) -> None:
    # call_command(workers=0) bypasses argparse's type check; the library must still refuse it.
    error, out, _ = run_failing("--to", "s3", workers=0)
    assert error.returncode == 2
    assert "WORKERS" in str(error)
    assert out == ""
    assert bucket_keys(s3_bucket) == []


def test_model_with_field(s3_bucket: str, rows: dict[str, FileManager]) -> None:
    error, out, _ = run_failing(
        "--to", "s3", "--model", "core.FileManager.file", "--format", "json"
    )
    assert error.returncode == 1
    totals = json.loads(out)["totals"]
    assert (totals["rows"], totals["copied"], totals["problems"]) == (4, 3, 1)
    assert len(bucket_keys(s3_bucket)) == 3


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("core.Nope", "Unknown model 'core.Nope'"),
        ("core.FileManager.nofield", "has no FileField 'nofield'"),
        ("FileManager", "Bad model 'FileManager'"),
    ],
)
def test_bad_model_is_a_configuration_error(
    s3_bucket: str, rows: dict[str, FileManager], spec: str, expected: str
) -> None:
    before = snapshot()
    error, out, _ = run_failing("--to", "s3", "--model", spec)
    assert error.returncode == 2
    assert expected in str(error)
    assert out == ""
    assert snapshot() == before
    assert bucket_keys(s3_bucket) == []


def test_stored_checksum_mismatch_is_kept_or_rewritten(s3_bucket: str) -> None:
    data = b"the bytes on disk"
    row = make_row("mismatch.txt", data)
    FileManager.objects.filter(pk=row.pk).update(checksum="0" * 32)

    error, out, _ = run_failing("--to", "s3", "--format", "json")
    assert error.returncode == 1
    [problem] = json.loads(out)["problems"]
    assert problem["kind"] == "checksum_mismatch"
    assert problem["expected"] == "0" * 32
    assert problem["actual"] == hashlib.md5(data).hexdigest()
    row.refresh_from_db()
    assert row.checksum == "0" * 32
    assert row.bucket == s3_bucket  # the copy is verified; only the stored checksum is wrong

    error, out, _ = run_failing("--to", "s3", "--format", "json", "--rewrite-checksums")
    assert error.returncode == 1
    assert "checksum rewritten" in json.loads(out)["problems"][0]["detail"]
    row.refresh_from_db()
    assert row.checksum == hashlib.md5(data).hexdigest()
    out, _ = run("--to", "s3", "--format", "json")
    assert json.loads(out)["totals"]["skipped"] == 1


def test_conflict_without_overwrite(s3_bucket: str) -> None:
    row = make_row("taken.txt", b"ours")
    s3_client().put_object(Bucket=s3_bucket, Key=str(row.file.name), Body=b"someone else's")

    error, out, _ = run_failing("--to", "s3", "--format", "json")
    assert error.returncode == 1
    [problem] = json.loads(out)["problems"]
    assert problem["kind"] == "conflict"
    assert (problem["expected"], problem["actual"]) == (4, 14)
    body = s3_client().get_object(Bucket=s3_bucket, Key=str(row.file.name))["Body"].read()
    assert body == b"someone else's"

    out, _ = run("--to", "s3", "--overwrite", "--format", "json")
    assert json.loads(out)["totals"]["copied"] == 1
    assert_migrated(row, s3_bucket, b"ours")


def test_report_as_a_keyword(s3_bucket: str, rows: dict[str, FileManager], tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    error, _, _ = run_failing("--to", "s3", report=str(path))
    assert error.returncode == 1
    assert json.loads(path.read_text(encoding="utf-8"))["totals"]["copied"] == 3


def test_unwritable_report_path_is_refused_before_anything_is_written(
    s3_bucket: str, rows: dict[str, FileManager], tmp_path: Path
) -> None:
    before = snapshot()
    error, _, _ = run_failing("--to", "s3", "--report", str(tmp_path / "no-such-dir" / "r.json"))
    assert error.returncode == 2
    assert bucket_keys(s3_bucket) == []
    assert snapshot() == before


@pytest.mark.django_db
def test_verbosity_3_shows_the_librarys_decisions(s3_bucket: str) -> None:
    FileManager.objects.create(file=ContentFile(b"debug me", name="debug.txt"))
    stdout, stderr = io.StringIO(), io.StringIO()

    call_command("migrate_storage", to="s3", verbosity=3, stdout=stdout, stderr=stderr)

    assert "DEBUG storage_migrate: copied core.FileManager pk=" in stderr.getvalue()
