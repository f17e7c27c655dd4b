"""The sample project as a user runs it: manage.py subprocesses, moto over HTTP, the switch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import BOTH_SERVERS, ManagePy

pytestmark = [pytest.mark.e2e, BOTH_SERVERS]


def test_uploads_go_to_s3_when_the_switch_is_on(
    manage_py: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path
) -> None:
    manage_py.env["USE_S3_STORAGE"] = "True"
    result = manage_py("make_sample_files", "--count", "12")
    assert result.returncode == 0, result.stderr
    assert "Created 12 files" in result.stdout

    rows = list(FileManager.objects.order_by("pk"))
    assert len(rows) == 12
    s3 = s3_client(s3_endpoint)
    for row in rows:
        assert row.bucket == http_bucket
        body = s3.get_object(Bucket=http_bucket, Key=row.object_key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == row.checksum
        assert len(body) == row.file_size
    assert not any(p.is_file() for p in media_root.rglob("*"))


def test_uploads_stay_on_disk_when_the_switch_is_off(
    manage_py: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path
) -> None:
    result = manage_py("make_sample_files", "--count", "5")
    assert result.returncode == 0, result.stderr
    for row in FileManager.objects.all():
        assert row.bucket == ""
        data = (media_root / row.object_key).read_bytes()
        assert hashlib.md5(data).hexdigest() == row.checksum
    assert "Contents" not in s3_client(s3_endpoint).list_objects_v2(Bucket=http_bucket)
