"""manage.py migrate_storage between two buckets of one store, on moto's HTTP server and on
`rclone serve s3`: the copies stay server-side, keep every name and the destination's headers,
and the rows follow; a 64 MiB object moves with almost nothing read by this process."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate import migrate_storage
from storage_migrate.testing import s3_client
from tests.conftest import BOTH_SERVERS, ManagePy
from tests.test_migrate_e2e import make_row, md5
from tests.test_server_side import new_alias

pytestmark = [pytest.mark.e2e, pytest.mark.slow, BOTH_SERVERS]

MiB = 1024 * 1024


def run(manage_py: ManagePy, *args: str) -> tuple[int, dict[str, Any], str]:
    result = manage_py("migrate_storage", *args, "--format", "json", "--no-progress")
    return result.returncode, json.loads(result.stdout), result.stderr


def test_between_two_buckets(
    manage_py: ManagePy, media_root: Path, s3_endpoint: str, http_bucket: str, s3_kind: str
) -> None:
    contents = {
        "holiday photo.jpg": b"\xff\xd8\xff\xe0 not a jpeg " * 50,
        "façade ñandú 日本語.txt": "ünïcödé\n".encode() * 20,
        "100% done + more & less.txt": b"percent signs must not be decoded",
        "empty.txt": b"",
        "big.bin": os.urandom(17 * MiB),  # in two parts at the first bucket (moto)
    }
    rows = {name: make_row(media_root, name, data) for name, data in contents.items()}
    status, first, stderr = run(manage_py, "--to", "s3")
    assert (status, first["totals"]["copied"], first["totals"]["copied_server_side"]) == (0, 5, 0)

    new = f"new-{uuid.uuid4().hex[:12]}"
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=new)
    manage_py.env["NEW_AWS_STORAGE_BUCKET_NAME"] = new
    status, report, stderr = run(manage_py, "--from", "s3", "--to", "s3_new")
    assert status == 0, stderr
    assert report["problems"] == []
    totals = report["totals"]
    assert (totals["copied"], totals["copied_server_side"]) == (5, 5)
    for name, row in rows.items():
        row.refresh_from_db()
        key = str(row.file.name)
        data = contents[name]
        assert (row.bucket, row.object_key, row.checksum) == (new, key, md5(data)), name
        obj = client.get_object(Bucket=new, Key=key)
        assert obj["Body"].read() == data, name
        assert obj["CacheControl"] == "max-age=86400", name
        assert obj["ContentType"] == row.content_type, name
        # The source bucket is left as it was.
        assert client.get_object(Bucket=http_bucket, Key=key)["Body"].read() == data, name

    status, again, stderr = run(manage_py, "--from", "s3", "--to", "s3_new")
    assert status == 0, stderr
    assert (again["totals"]["copied"], again["totals"]["skipped"]) == (0, 5)
    verified = manage_py("verify_files", "--storage", "s3_new", "--no-progress")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.django_db
def test_a_64_mib_object_is_not_read(
    s3_endpoint: str, through_proxy: Any, settings: Any, s3_kind: str
) -> None:
    """The bytes stay in the store: the answers this process receives while it moves a 64 MiB
    object between buckets (counted by a proxy in front of the store) are well under 1 MiB."""
    proxy = through_proxy()
    new = f"new-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=new)
    new_alias(settings, endpoint_url=proxy.url, bucket=new)
    data = os.urandom(64 * MiB)
    row = FileManager.objects.create(file=ContentFile(data, name="video/large.mp4"))
    assert migrate_storage(to="s3").copied == 1
    before = proxy.answered
    report = migrate_storage(to="s3_new", source="s3")
    received = proxy.answered - before
    assert (report.copied_server_side, list(report.problems)) == (1, [])
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (new, md5(data))
    print(f"\n{s3_kind}: {received} bytes received while a 64 MiB object was copied")
    assert received < 1 * MiB, received
