"""manage.py verify_files as a user runs it: subprocesses against moto's HTTP server and the test
database, after a real `migrate_storage --to s3`; then a corrupted object, a stray one, the switch
to USE_S3_STORAGE=True, a report file, and configuration errors."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import BOTH_SERVERS, ManagePy

pytestmark = [pytest.mark.e2e, BOTH_SERVERS]

MiB = 1024 * 1024
SECONDS = r"\d+\.\d s"
STRAY = "file_manager/stray.txt"
FAILED_ONE = "CommandError: 1 problem(s) of a --fail-on kind."
CONTENTS = {
    "alpha.txt": b"a" * 100,
    "bravo.bin": bytes(range(256)) * 4,
    "fa\u00e7ade.txt": "\u00fcn\u00efc\u00f6d\u00e9 text\n".encode() * 20,
    "empty.txt": b"",
    # Past the 16 MiB multipart threshold the manage_py fixture sets: its ETag is no MD5, and
    # the md5 metadata bound to that ETag must prove it without a read.
    "big.bin": bytes(range(256)) * (17 * MiB // 256),
}
CLEAN_TOTALS = {
    "rows": len(CONTENTS),
    "ok": len(CONTENTS),
    "problems": 0,
    "orphans": 0,
    "downloaded": 0,
    "bytes_read": 0,
    "unchecked": 0,
    "fixed": 0,
}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_row(name: str, data: bytes) -> FileManager:
    """A row saved through the default (local) storage, as the site saves uploads."""
    row = FileManager.objects.create(file=ContentFile(data, name=name))
    assert row.checksum == md5(data)
    assert row.file_size == len(data)
    return row


def verify(manage_py: ManagePy, *args: str) -> subprocess.CompletedProcess[str]:
    result = manage_py("verify_files", *args, "--no-progress")
    assert "Traceback" not in result.stderr, result.stderr
    return result


def verify_json(manage_py: ManagePy, *args: str) -> tuple[int, dict[str, Any], str]:
    """(exit status, the JSON report on stdout, stderr after its first line: the summary)."""
    result = verify(manage_py, *args, "--format", "json")
    try:
        report = json.loads(result.stdout)  # the whole of stdout is one document
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not one JSON document:\n{result.stdout}\n{result.stderr}")
    assert report["command"] == "verify_files"
    summary, _, rest = result.stderr.partition("\n")
    assert re.fullmatch(rf"Verified \d+ rows? [^\n]* in {SECONDS}( \(\d+\.\d MB/s\))?", summary)
    return result.returncode, report, rest


def junit_cases(path: Path) -> dict[str, str | None]:
    """A JUnit report file: each case's name -> its failure's type (None when it passed)."""
    suite = ET.parse(path).getroot()
    assert suite.tag == "testsuite"
    cases = suite.findall("testcase")
    failures = suite.findall("testcase/failure")
    assert suite.get("tests") == str(len(cases))
    assert suite.get("failures") == str(len(failures))
    found: dict[str, str | None] = {}
    for case in cases:
        failure = case.find("failure")
        found[str(case.get("name"))] = None if failure is None else failure.get("type")
    assert len(found) == len(cases)
    return found


def assert_config_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, one line on stderr, no traceback, nothing on stdout; the line."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("CommandError: ")
    return lines[0]


@pytest.mark.slow
def test_verify_after_migration_end_to_end(
    manage_py: ManagePy,
    http_bucket: str,
    s3_endpoint: str,
    media_root: Path,
    tmp_path: Path,
    s3_kind: str,
) -> None:
    rows = {name: make_row(name, data) for name, data in CONTENTS.items()}
    migrated = manage_py("migrate_storage", "--to", "s3", "--no-progress")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    s3 = s3_client(s3_endpoint)
    for row in rows.values():
        row.refresh_from_db()
        assert (row.bucket, row.object_key) == (http_bucket, row.file.name)
    big_etag = s3.head_object(Bucket=http_bucket, Key=rows["big.bin"].object_key)["ETag"]
    # moto gives the multipart ETag; rclone serve s3 keeps a file and gives its MD5.
    multipart = r'"[0-9a-f]{32}-\d+"' if s3_kind == "moto" else r'"[0-9a-f]{32}"'
    assert re.fullmatch(multipart, big_etag), big_etag

    # Clean: every MD5 proven by an ETag or by the metadata bound to one, nothing read.
    status, report, stderr = verify_json(manage_py, "--storage", "s3")
    assert status == 0, stderr
    assert stderr == ""
    assert report["storage"] == "s3"
    assert report["level"] == "checksum"
    assert report["sample"] is None
    assert report["totals"] == CLEAN_TOTALS
    assert report["problems"] == []

    # USE_S3_STORAGE is still False: without --storage the local disk is checked, where the
    # bytes are right (every file is read to hash it) and the rows' bucket now says S3.
    status, report, stderr = verify_json(manage_py, "--fail-on", "checksum_mismatch")
    assert status == 0, stderr
    assert report["storage"] == "each field's storage"
    assert report["totals"]["downloaded"] == len(CONTENTS)
    assert report["totals"]["bytes_read"] == sum(len(data) for data in CONTENTS.values())
    assert sorted((p["kind"], p["pk"]) for p in report["problems"]) == sorted(
        ("metadata_mismatch", row.pk) for row in rows.values()
    )

    # A JUnit report file of the clean bucket: one summary line on stderr, nothing on stdout.
    clean_xml = tmp_path / "clean.xml"
    result = verify(manage_py, "--storage", "s3", "--format", "junit", "--output", str(clean_xml))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert re.fullmatch(
        rf"Verified 5 rows at level checksum on s3: 5 ok, 0 problems in {SECONDS}\n",
        result.stderr,
    ), result.stderr
    assert junit_cases(clean_xml) == {f"pk={r.pk} {r.file.name}": None for r in rows.values()}

    # Someone rewrites one object: same size, other bytes.
    victim = rows["bravo.bin"]
    original = CONTENTS["bravo.bin"]
    corrupt = bytes(b ^ 0x5A for b in original)
    assert len(corrupt) == len(original) and corrupt != original
    s3.put_object(
        Bucket=http_bucket,
        Key=victim.object_key,
        Body=corrupt,
        ContentType=victim.content_type,
        CacheControl="max-age=86400",
    )
    head = s3.head_object(Bucket=http_bucket, Key=victim.object_key)
    assert head["ContentLength"] == victim.file_size

    status, report, stderr = verify_json(manage_py, "--storage", "s3")
    assert status == 1
    assert stderr.strip() == FAILED_ONE
    mismatch = {
        "kind": "checksum_mismatch",
        "model": "core.FileManager",
        "field": "file",
        "pk": victim.pk,
        "name": victim.file.name,
        "detail": "file bytes do not match the stored checksum",
        "expected": md5(original),
        "actual": md5(corrupt),
    }
    assert report["problems"] == [mismatch]
    assert report["totals"] == {**CLEAN_TOTALS, "ok": len(CONTENTS) - 1, "problems": 1}

    # A stray object below the upload folder: an orphan, which fails only when asked to.
    s3.put_object(Bucket=http_bucket, Key=STRAY, Body=b"nobody points here")
    orphan = {
        "kind": "orphan",
        "model": "core.FileManager",
        "field": "file",
        "pk": None,
        "name": STRAY,
        "detail": "no row points to this file",
    }
    status, report, stderr = verify_json(manage_py, "--storage", "s3", "--orphans")
    assert status == 1
    assert stderr.strip() == FAILED_ONE  # the checksum mismatch, not the orphan
    assert sorted(report["problems"], key=lambda p: p["kind"]) == [mismatch, orphan]
    assert report["totals"]["orphans"] == 1
    assert report["totals"]["problems"] == 2

    status, report, stderr = verify_json(
        manage_py, "--storage", "s3", "--orphans", "--fail-on", "missing"
    )
    assert status == 0, stderr
    assert stderr == ""
    assert len(report["problems"]) == 2  # listed all the same

    status, report, stderr = verify_json(
        manage_py, "--storage", "s3", "--orphans", "--fail-on", "orphan"
    )
    assert status == 1
    assert stderr.strip() == FAILED_ONE  # the orphan alone
    assert len(report["problems"]) == 2

    # The switch: the rows' field storage is S3 now, and that is where verify_files looks.
    manage_py.env["USE_S3_STORAGE"] = "True"
    status, report, stderr = verify_json(manage_py)
    assert status == 1
    assert stderr.strip() == FAILED_ONE
    assert report["storage"] == "each field's storage"
    assert report["problems"] == [mismatch]
    assert report["totals"] == {**CLEAN_TOTALS, "ok": len(CONTENTS) - 1, "problems": 1}

    # The same as a JUnit report file: the summary line on stderr, then the exit 1's reason.
    xml = tmp_path / "verify.xml"
    result = verify(manage_py, "--format", "junit", "--output", str(xml))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert re.fullmatch(
        rf"Verified 5 rows at level checksum on each field's storage: 4 ok, 1 problem "
        rf"\(1 checksum_mismatch\) in {SECONDS}",
        lines[0],
    ), lines[0]
    assert lines[1] == FAILED_ONE
    assert junit_cases(xml) == {
        f"pk={r.pk} {r.file.name}": ("checksum_mismatch" if r.pk == victim.pk else None)
        for r in rows.values()
    }

    # verify_files only reads: the rows and the objects are as they were.
    for name, row in rows.items():
        row.refresh_from_db()
        assert (row.bucket, row.checksum, row.file_size) == (
            http_bucket,
            md5(CONTENTS[name]),
            len(CONTENTS[name]),
        ), name
    body = s3.get_object(Bucket=http_bucket, Key=victim.object_key)["Body"].read()
    assert body == corrupt


@pytest.mark.parametrize("how", ["USE_S3_STORAGE", "--storage s3"])
def test_missing_bucket_exits_two(
    manage_py: ManagePy, http_bucket: str, s3_endpoint: str, how: str
) -> None:
    make_row("a.txt", b"a")
    missing = f"{http_bucket}-missing"
    manage_py.env["AWS_STORAGE_BUCKET_NAME"] = missing
    if how == "USE_S3_STORAGE":
        manage_py.env["USE_S3_STORAGE"] = "True"
        args: tuple[str, ...] = ()
    else:
        args = ("--storage", "s3")

    line = assert_config_error(verify(manage_py, *args, "--format", "json"))

    assert f"Bucket '{missing}'" in line
    assert "does not exist" in line
    s3 = s3_client(s3_endpoint)
    assert missing not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--storage", "nowhere"), "known: default, local, s3, staticfiles"),
        (("--fail-on", "bogus"), "Unknown problem kind(s) bogus (known: unsafe_name, missing,"),
    ],
)
def test_configuration_errors_exit_two(
    manage_py: ManagePy, args: tuple[str, ...], expected: str
) -> None:
    make_row("a.txt", b"a")
    line = assert_config_error(verify(manage_py, *args))
    assert expected in line


def test_bad_option_value_exits_two(manage_py: ManagePy) -> None:
    result = verify(manage_py, "--sample", "0")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "argument --sample: must be 1 or more, not 0" in result.stderr


def test_bad_option_value_is_one_line(manage_py: ManagePy) -> None:
    result = verify(manage_py, "--sample", "0")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
