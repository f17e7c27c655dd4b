"""SIGTERM and SIGKILL a real `manage.py purge_source` (against moto's HTTP server) mid-run: every
file gone from the disk is in the bucket with its bytes (or, with --quarantine, in the
quarantine), a SIGTERM's report counts exactly what went, and the same command finishes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import ManagePy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FILES = 300
PURGE = ("purge_source", "--from", "local", "--verified-against", "s3", "--no-progress")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def migrated(manage_py: ManagePy) -> dict[str, str]:
    """FILES rows moved to S3 by a real migrate_storage: name -> checksum."""
    rows = [
        FileManager.objects.create(file=ContentFile(os.urandom(2000 + i), name=f"p {i}.bin"))
        for i in range(FILES)
    ]
    done = manage_py("migrate_storage", "--to", "s3", "--no-progress", "--workers", "8")
    assert done.returncode == 0, done.stdout + done.stderr
    return {str(r.file.name): str(r.checksum) for r in rows}


def gone(media_root: Path, sums: dict[str, str]) -> list[str]:
    return [n for n in sums if not (media_root / n).exists()]


def nothing_lost(
    media_root: Path, sums: dict[str, str], endpoint: str, bucket: str, quarantine: bool
) -> None:
    """Each name gone from its place is in the bucket with its bytes; with a quarantine, its
    bytes are there too (under its name, or under the name an interrupted move gave it)."""
    s3 = s3_client(endpoint)
    trash = media_root / "trash"
    aside = (
        {md5(p.read_bytes()) for p in trash.rglob("*.removing") if p.is_file()}
        if quarantine
        else set()
    )
    for name in gone(media_root, sums):
        body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        assert md5(body) == sums[name], f"{name} lost"
        if quarantine:
            moved = trash / name
            assert (moved.is_file() and md5(moved.read_bytes()) == sums[name]) or (
                sums[name] in aside
            ), f"{name} not in the quarantine"


def wait_until_gone(media_root: Path, sums: dict[str, str], count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(gone(media_root, sums)) < count:
        time.sleep(0.002)


@pytest.mark.parametrize("quarantine", [False, True])
def test_sigterm_mid_purge_reports_exactly_what_went_and_a_rerun_finishes(
    manage_py: ManagePy,
    moto_endpoint: str,
    http_bucket: str,
    media_root: Path,
    quarantine: bool,
) -> None:
    sums = migrated(manage_py)
    extra = ["--quarantine", "trash"] if quarantine else []
    process = manage_py.start(*PURGE, "--format", "json", "--workers", "2", *extra)
    wait_until_gone(media_root, sums, 20)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = manage_py.finish(process, 60)

    assert process.returncode == 143, stdout + stderr
    partial = json.loads(stdout)
    went = gone(media_root, sums)
    assert partial["interrupted"] is True
    assert 20 <= partial["totals"]["purged"] == len(went) < FILES
    nothing_lost(media_root, sums, moto_endpoint, http_bucket, quarantine)

    rest = manage_py(*PURGE, "--format", "json", *extra)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    totals = json.loads(rest.stdout)["totals"]
    assert (totals["purged"], totals["gone"]) == (FILES - len(went), len(went))
    assert gone(media_root, sums) == list(sums)
    nothing_lost(media_root, sums, moto_endpoint, http_bucket, quarantine)


@pytest.mark.parametrize("quarantine", [False, True])
def test_sigkill_mid_purge_loses_nothing_and_a_rerun_finishes(
    manage_py: ManagePy,
    moto_endpoint: str,
    http_bucket: str,
    media_root: Path,
    quarantine: bool,
) -> None:
    sums = migrated(manage_py)
    extra = ["--quarantine", "trash"] if quarantine else []
    for at_least in (10, 100, 200):
        process = manage_py.start(*PURGE, "--workers", "4", *extra)
        wait_until_gone(media_root, sums, at_least)
        process.send_signal(signal.SIGKILL)
        manage_py.finish(process, 60)
        assert process.returncode == -signal.SIGKILL
        nothing_lost(media_root, sums, moto_endpoint, http_bucket, quarantine)

    rest = manage_py(*PURGE, "--format", "json", *extra)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    totals = json.loads(rest.stdout)["totals"]
    assert totals["purged"] + totals["gone"] == FILES
    assert gone(media_root, sums) == list(sums)
    nothing_lost(media_root, sums, moto_endpoint, http_bucket, quarantine)
