"""SIGKILL a real migrate_storage at several moments; after each kill every row that points at the
bucket points at an object holding its bytes, and a final run converges."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import MANAGE, ManagePy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024


def rows_pointing_at(bucket: str) -> dict[int, str]:
    """Checked with plain SQL, not the project's code."""
    table = FileManager._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, file FROM {table} WHERE bucket = %s", [bucket])
        return {int(pk): str(name) for pk, name in cursor.fetchall()}


def run_until(env: dict[str, str], args: list[str], moment: Callable[[], bool]) -> bool:
    """Start manage.py, SIGKILL it as soon as `moment()` holds; False if it finished first."""
    process = subprocess.Popen(
        [sys.executable, str(MANAGE), *args],
        env=env,
        cwd=MANAGE.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if moment():
                process.send_signal(signal.SIGKILL)
                return True
            time.sleep(0.01)
        return False
    finally:
        process.wait(timeout=30)


def test_killed_at_any_moment_then_converges(
    manage_py: ManagePy, http_bucket: str, moto_endpoint: str, media_root: Path
) -> None:
    big = FileManager.objects.create(file=ContentFile(os.urandom(24 * MiB), name="big.mp4"))
    rows = [big] + [
        FileManager.objects.create(file=ContentFile(os.urandom(2000 + i * 37), name=f"k {i}.bin"))
        for i in range(400)
    ]
    sources = {r.pk: hashlib.md5((media_root / r.file.name).read_bytes()).hexdigest() for r in rows}
    s3 = s3_client(moto_endpoint)

    def multipart_in_flight() -> bool:
        return bool(s3.list_multipart_uploads(Bucket=http_bucket).get("Uploads"))

    def first_commit() -> bool:
        return len(rows_pointing_at(http_bucket)) > 0

    def half_way() -> bool:
        return len(rows_pointing_at(http_bucket)) > len(rows) // 2

    args = ["migrate_storage", "--to", "s3", "--no-progress"]
    args += ["--workers", "4", "--batch-size", "25"]
    killed = []
    for moment in (multipart_in_flight, first_commit, half_way):
        killed.append(run_until(manage_py.env, args, moment))
        for pk, name in rows_pointing_at(http_bucket).items():
            body = s3.get_object(Bucket=http_bucket, Key=name)["Body"].read()
            assert hashlib.md5(body).hexdigest() == sources[pk], f"row {pk} points at bad bytes"
    assert killed == [True, True, True]
    assert len(rows_pointing_at(http_bucket)) < len(rows)

    final = manage_py(*args)
    assert final.returncode == 0, final.stderr
    assert set(rows_pointing_at(http_bucket)) == set(sources)
    for row in FileManager.objects.all():
        assert hashlib.md5((media_root / row.file.name).read_bytes()).hexdigest() == sources[row.pk]
        assert row.checksum == sources[row.pk]
    again = manage_py(*args)
    assert "Copied 0 files" in again.stdout, again.stdout
    # The multipart upload the first kill interrupted was aborted when the file was copied again.
    assert s3.list_multipart_uploads(Bucket=http_bucket).get("Uploads", []) == []


def test_ctrl_c_commits_what_was_verified_and_exits_130(
    manage_py: ManagePy, http_bucket: str, moto_endpoint: str, media_root: Path
) -> None:
    rows = [
        FileManager.objects.create(file=ContentFile(os.urandom(3000), name=f"i {i}.bin"))
        for i in range(400)
    ]
    args = ["migrate_storage", "--to", "s3", "--no-progress", "--workers", "2"]
    s3 = s3_client(moto_endpoint)
    process = manage_py.start(*args)
    deadline = time.monotonic() + 60
    # Interrupt once some copies are finished (not merely started).
    while time.monotonic() < deadline and s3.list_objects_v2(Bucket=http_bucket)["KeyCount"] < 20:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = manage_py.finish(process, 60)

    assert process.returncode == 130, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr
    committed = rows_pointing_at(http_bucket)
    assert 0 < len(committed) < len(rows)
    for pk, name in committed.items():
        body = s3.get_object(Bucket=http_bucket, Key=name)["Body"].read()
        assert hashlib.md5(body).hexdigest() == FileManager.objects.get(pk=pk).checksum
    assert manage_py(*args).returncode == 0
    assert len(rows_pointing_at(http_bucket)) == len(rows)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_killed_while_writing_local_files_never_leaves_a_half_file_under_its_name(
    manage_py: ManagePy, http_bucket: str, moto_endpoint: str, media_root: Path
) -> None:
    big = FileManager.objects.create(file=ContentFile(os.urandom(30 * MiB), name="big.mp4"))
    rows = [big] + [
        FileManager.objects.create(file=ContentFile(os.urandom(3000 + i), name=f"l {i}.bin"))
        for i in range(300)
    ]
    sums = {r.pk: r.checksum for r in rows}
    assert manage_py("migrate_storage", "--to", "s3", "--no-progress").returncode == 0
    for row in rows:
        (media_root / row.file.name).unlink()
    args = ["migrate_storage", "--to", "local", "--no-progress", "--workers", "4"]

    def big_file_being_written() -> bool:
        return any(
            p.name.endswith(".partial") for p in (media_root / big.file.name).parent.iterdir()
        )

    def half_way() -> bool:
        return len(rows_pointing_at("")) > len(rows) // 2

    killed = [run_until(manage_py.env, args, m) for m in (big_file_being_written, half_way)]
    assert killed == [True, True]

    # Every file under its final name is whole; every row pointing at local disk has its file.
    for row in FileManager.objects.all():
        path = media_root / row.file.name
        if path.exists():
            assert md5_of(path) == sums[row.pk], f"{path} is not whole"
        if row.bucket == "":
            assert path.exists() and md5_of(path) == sums[row.pk]

    final = manage_py(*args)
    assert final.returncode == 0, final.stderr
    for row in FileManager.objects.all():
        assert row.bucket == "" and md5_of(media_root / row.file.name) == sums[row.pk]


def test_killed_while_deleting_sources_loses_nothing(
    manage_py: ManagePy, http_bucket: str, moto_endpoint: str, media_root: Path
) -> None:
    rows = [
        FileManager.objects.create(file=ContentFile(os.urandom(2000 + i), name=f"d {i}.bin"))
        for i in range(400)
    ]
    sums = {r.pk: r.checksum for r in rows}
    s3 = s3_client(moto_endpoint)
    args = ["migrate_storage", "--to", "s3", "--delete-source", "--no-progress", "--workers", "4"]

    def some_sources_deleted() -> bool:
        return len([r for r in rows[:50] if not (media_root / r.file.name).exists()]) > 5

    def half_deleted() -> bool:
        gone = [r for r in rows if not (media_root / r.file.name).exists()]
        return len(gone) > len(rows) // 2

    for moment in (some_sources_deleted, half_deleted):
        assert run_until(manage_py.env, args, moment)
        pointing = rows_pointing_at(http_bucket)
        for row in rows:
            if not (media_root / row.file.name).exists():
                # A source is gone only if its row points at a verified copy.
                assert row.pk in pointing, f"row {row.pk} lost its file"
                body = s3.get_object(Bucket=http_bucket, Key=pointing[row.pk])["Body"].read()
                assert hashlib.md5(body).hexdigest() == sums[row.pk]

    final = manage_py(*args)
    assert final.returncode == 0, final.stderr
    assert set(rows_pointing_at(http_bucket)) == set(sums)
    assert not any((media_root / r.file.name).exists() for r in rows)
    for pk, key in rows_pointing_at(http_bucket).items():
        body = s3.get_object(Bucket=http_bucket, Key=key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == sums[pk]


def test_two_runs_at_once_corrupt_nothing(
    manage_py: ManagePy, http_bucket: str, moto_endpoint: str, media_root: Path
) -> None:
    """Two runs on the same rows at the same moment: conditional writes let one write each
    object; the other finds those very bytes (or reports a conflict). Nothing is corrupted, and a
    third run has nothing left to do."""
    rows = [
        FileManager.objects.create(file=ContentFile(os.urandom(1500 + i), name=f"t {i}.bin"))
        for i in range(300)
    ]
    sums = {r.pk: r.checksum for r in rows}
    args = ["migrate_storage", "--to", "s3", "--no-progress", "--format", "json"]
    runs = [manage_py.start(*args) for _ in range(2)]
    reports = []
    for process in runs:
        stdout, stderr = manage_py.finish(process, 300)
        assert process.returncode in (0, 1), stderr
        assert stdout, stderr[-3000:]
        reports.append(json.loads(stdout))
    for report in reports:
        assert {p["kind"] for p in report["problems"]} <= {"conflict"}, report["problems"]

    s3 = s3_client(moto_endpoint)
    for pk, key in rows_pointing_at(http_bucket).items():
        body = s3.get_object(Bucket=http_bucket, Key=key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == sums[pk]
    third = manage_py(*args)
    assert third.returncode == 0, third.stdout
    assert json.loads(third.stdout)["totals"]["copied"] == 0
    assert set(rows_pointing_at(http_bucket)) == set(sums)
