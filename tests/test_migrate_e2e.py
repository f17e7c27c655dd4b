"""manage.py migrate_storage as a user runs it: a subprocess against moto's HTTP server and the
test database, with awkward names, an empty file and a multipart-sized one, there and back."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import BOTH_SERVERS, ManagePy

pytestmark = [pytest.mark.e2e, BOTH_SERVERS]

MiB = 1024 * 1024
JSON_ARGS = ("--format", "json", "--no-progress")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_row(media_root: Path, name: str, data: bytes) -> FileManager:
    """A row saved through the default (local) storage. Django's get_valid_name() would turn
    spaces into '_' and drop '+', '%' and '&', so the file is then renamed on disk and in the row,
    as names stored by older code or other tools look."""
    row = FileManager.objects.create(file=ContentFile(data, name="upload.bin"))
    stored = str(row.file.name)
    wanted = f"{stored.rsplit('/', 1)[0]}/{name}"
    if wanted != stored:
        (media_root / stored).rename(media_root / wanted)
        FileManager.objects.filter(pk=row.pk).update(file=wanted, object_key=wanted, file_name=name)
        row.refresh_from_db()
    assert row.file.name == wanted
    assert row.checksum == md5(data)
    assert row.file_size == len(data)
    assert (media_root / wanted).read_bytes() == data
    return row


def run_json(manage_py: ManagePy, *args: str) -> tuple[int, dict[str, Any], str]:
    """(exit status, the JSON report on stdout, stderr)."""
    result = manage_py("migrate_storage", *args, *JSON_ARGS)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not one JSON document:\n{result.stdout}\n{result.stderr}")
    return result.returncode, report, result.stderr


def sources(media_root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under MEDIA_ROOT: its bytes and modification time."""
    return {
        p.relative_to(media_root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in media_root.rglob("*")
        if p.is_file()
    }


def bucket_keys(client: Any, bucket: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket)
    return sorted(entry["Key"] for entry in listing.get("Contents", []))


def test_to_s3_skip_and_back_to_local(
    manage_py: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path, s3_kind: str
) -> None:
    contents = {
        "holiday photo.jpg": b"\xff\xd8\xff\xe0 not really a jpeg " * 50,
        "façade ñandú 日本語.txt": "ünïcödé text\n".encode() * 20,
        "scan+copy.pdf": b"%PDF-1.7 plus sign\n" * 30,
        "100% done %41.txt": b"percent signs must not be decoded",
        "tom & jerry.csv": b"cat,mouse\n" * 40,
        "empty.txt": b"",
        "big.bin": bytes(range(256)) * (17 * MiB // 256),
    }
    rows = {name: make_row(media_root, name, data) for name, data in contents.items()}
    before = sources(media_root)
    assert len(before) == len(contents)

    status, report, stderr = run_json(manage_py, "--to", "s3")

    assert status == 0, stderr
    assert stderr == ""
    assert report["source"] == "local"
    assert report["destination"] == "s3"
    assert report["problems"] == []
    assert report["totals"] == {
        "rows": 7,
        "copied": 7,
        "skipped": 0,
        "at_destination": 0,
        "failed": 0,
        "problems": 0,
        "bytes_copied": sum(len(d) for d in contents.values()),
        "copied_server_side": 0,
        "deleted": 0,
        "bytes_deleted": 0,
    }
    s3 = s3_client(s3_endpoint)
    assert bucket_keys(s3, http_bucket) == sorted(str(r.file.name) for r in rows.values())
    for name, row in rows.items():
        row.refresh_from_db()
        data = contents[name]
        assert row.bucket == http_bucket, name
        assert row.object_key == row.file.name, name
        assert row.checksum == md5(data), name
        assert row.file_size == len(data), name
        obj = s3.get_object(Bucket=http_bucket, Key=row.object_key)
        body = obj["Body"].read()
        assert md5(body) == row.checksum, name
        assert len(body) == row.file_size, name
        assert obj["ContentType"] == row.content_type, name
        assert obj["CacheControl"] == "max-age=86400", name  # AWS_S3_OBJECT_PARAMETERS

    big = rows["big.bin"]
    head = s3.head_object(Bucket=http_bucket, Key=big.object_key)
    assert head["ContentLength"] == 17 * MiB
    if s3_kind == "rclone":
        # rclone serve s3 keeps a file: its HEAD gives the whole file's MD5, never a part count.
        assert head["ETag"].strip('"') == md5(contents["big.bin"])
        # It answers the listing of unfinished uploads with NoSuchUpload when there are none:
        # the clean-up before the multipart upload was skipped, said once, and failed nothing.
        (note,) = report["notes"]
        assert "unfinished multipart uploads" in note and "NoSuchUpload" in note, note
    else:
        assert head["ETag"].strip('"').endswith("-2"), head["ETag"]  # two 16 MiB parts at most
        assert "notes" not in report
        assert head["Metadata"]["md5"] == md5(contents["big.bin"])
    small = s3.head_object(Bucket=http_bucket, Key=rows["scan+copy.pdf"].object_key)
    assert small["ETag"].strip('"') == md5(contents["scan+copy.pdf"])
    if s3_kind == "moto":  # rclone serve s3 (without --metadata) keeps no user metadata: a
        assert small["Metadata"]["md5"] == small["ETag"].strip('"')  # hint, never needed

    assert sources(media_root) == before  # the sources were read, never touched

    status, report, stderr = run_json(manage_py, "--to", "s3")
    assert status == 0, stderr
    assert report["totals"] == {
        "rows": 7,
        "copied": 0,
        "skipped": 7,
        "at_destination": 0,
        "failed": 0,
        "problems": 0,
        "bytes_copied": 0,
        "copied_server_side": 0,
        "deleted": 0,
        "bytes_deleted": 0,
    }
    assert sources(media_root) == before

    # And back: the local files are gone, S3 holds the only copies.
    for path in list(media_root.rglob("*")):
        if path.is_file():
            path.unlink()
    status, report, stderr = run_json(manage_py, "--to", "local")
    assert status == 0, stderr
    assert report["source"] == "s3"
    assert report["destination"] == "local"
    assert report["totals"]["copied"] == 7
    assert report["totals"]["problems"] == 0
    after = sources(media_root)
    assert {key: data for key, (data, _) in after.items()} == {
        key: data for key, (data, _) in before.items()
    }
    for name, row in rows.items():
        row.refresh_from_db()
        assert row.bucket == "", name
        assert row.object_key == row.file.name, name
        assert row.checksum == md5(contents[name]), name
        assert row.file_size == len(contents[name]), name
    assert not [p for p in media_root.rglob("*") if ".partial" in p.name]


def test_missing_source_file_exits_one(
    manage_py: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path
) -> None:
    kept = make_row(media_root, "kept.txt", b"still here")
    gone = make_row(media_root, "gone.txt", b"deleted by hand")
    (media_root / str(gone.file.name)).unlink()

    status, report, stderr = run_json(manage_py, "--to", "s3")

    assert status == 1
    assert stderr.strip() == "CommandError: 1 problem(s)."  # no report was written
    assert "Traceback" not in stderr
    assert report["totals"] == {
        "rows": 2,
        "copied": 1,
        "skipped": 0,
        "at_destination": 0,
        "failed": 1,
        "problems": 1,
        "bytes_copied": len(b"still here"),
        "copied_server_side": 0,
        "deleted": 0,
        "bytes_deleted": 0,
    }
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
    assert bucket_keys(s3_client(s3_endpoint), http_bucket) == [kept.file.name]
    gone.refresh_from_db()
    assert gone.bucket == ""
    kept.refresh_from_db()
    assert kept.bucket == http_bucket


def assert_config_error(result: Any) -> str:
    """Exit 2, one line on stderr, no traceback, nothing on stdout; the line."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("CommandError: ")
    return str(lines[0])


def test_unknown_alias_exits_two(
    manage_py: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path
) -> None:
    row = make_row(media_root, "a.txt", b"a")
    line = assert_config_error(manage_py("migrate_storage", "--to", "nowhere", "--no-progress"))
    assert "'nowhere'" in line
    assert "known: default, local, s3, staticfiles" in line
    row.refresh_from_db()
    assert row.bucket == ""
    assert bucket_keys(s3_client(s3_endpoint), http_bucket) == []


def test_bad_option_value_exits_two(manage_py: ManagePy, http_bucket: str) -> None:
    result = manage_py("migrate_storage", "--to", "s3", "--workers", "0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "argument --workers: must be 1 or more, not 0" in result.stderr


def test_missing_bucket_exits_two_and_writes_nothing(
    manage_py: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path
) -> None:
    row = make_row(media_root, "a.txt", b"a")
    missing = f"{http_bucket}-missing"
    manage_py.env["AWS_STORAGE_BUCKET_NAME"] = missing

    line = assert_config_error(manage_py("migrate_storage", "--to", "s3", "--no-progress"))

    assert f"'{missing}'" in line
    assert "--create-bucket" in line
    s3 = s3_client(s3_endpoint)
    assert missing not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert bucket_keys(s3, http_bucket) == []
    row.refresh_from_db()
    assert (row.bucket, row.object_key) == ("", row.file.name)


def test_delete_source_only_for_clean_rows(
    manage_py: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path
) -> None:
    contents = {"one.txt": b"first file", "two.txt": b"second file", "bad.txt": b"stored md5 lies"}
    rows = {name: make_row(media_root, name, data) for name, data in contents.items()}
    bad = rows["bad.txt"]
    FileManager.objects.filter(pk=bad.pk).update(checksum="0" * 32)

    status, report, stderr = run_json(manage_py, "--to", "s3", "--delete-source")

    assert status == 1, stderr
    assert report["totals"]["copied"] == 3
    assert [(p["kind"], p["pk"], p["name"]) for p in report["problems"]] == [
        ("checksum_mismatch", bad.pk, bad.file.name)
    ]
    assert report["problems"][0]["expected"] == "0" * 32
    assert report["problems"][0]["actual"] == md5(contents["bad.txt"])
    s3 = s3_client(s3_endpoint)
    for name, row in rows.items():
        body = s3.get_object(Bucket=http_bucket, Key=str(row.file.name))["Body"].read()
        assert body == contents[name], name
    assert not (media_root / str(rows["one.txt"].file.name)).exists()
    assert not (media_root / str(rows["two.txt"].file.name)).exists()
    assert (media_root / str(bad.file.name)).read_bytes() == contents["bad.txt"]
    bad.refresh_from_db()
    assert bad.checksum == "0" * 32  # kept without --rewrite-checksums
    for name in ("one.txt", "two.txt"):
        rows[name].refresh_from_db()
        assert rows[name].bucket == http_bucket


def test_unreachable_endpoint_exits_2_quickly(manage_py: ManagePy) -> None:
    from storage_migrate.testing import free_port

    FileManager.objects.create(file=ContentFile(b"x", name="x.txt"))
    manage_py.env["AWS_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()

    result = manage_py("migrate_storage", "--to", "s3", "--no-progress", timeout=60)

    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Cannot reach S3" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert FileManager.objects.get().bucket == ""
