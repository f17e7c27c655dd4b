"""A site serving through FallbackStorage while migrate_storage (a manage.py subprocess) moves
its files to moto's HTTP server: every file is readable at every moment, the admin links each
one where it is, an upload during the move goes to S3, a delete removes both copies."""

from __future__ import annotations

import hashlib
import html
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from core.models import FileManager
from storage_migrate.storage import file_url
from storage_migrate.testing import s3_client
from tests.conftest import BOTH_SERVERS, ManagePy, reset_storages

pytestmark = [pytest.mark.e2e, BOTH_SERVERS]


def admin_links(client: Client) -> list[str]:
    page = client.get("/admin/core/filemanager/").content.decode()
    return [html.unescape(u) for u in re.findall(r'href="([^"]*/f_\d\.txt[^"]*)"', page)]


def every_file_is_served(rows: list[FileManager]) -> None:
    for row in FileManager.objects.filter(pk__in=[r.pk for r in rows]):
        with default_storage.open(row.file.name) as f:
            assert hashlib.md5(f.read()).hexdigest() == row.checksum, row.file.name


def test_every_file_is_served_during_a_half_finished_move(
    manage_py: ManagePy,
    s3_endpoint: str,
    http_bucket: str,
    media_root: Path,
    settings: Any,
    admin_client: Client,
) -> None:
    rows = [
        FileManager.objects.create(file=ContentFile(f"file {i}".encode() * 50, name=f"f {i}.txt"))
        for i in range(6)
    ]
    settings.AWS_STORAGE_BUCKET_NAME = http_bucket
    settings.AWS_S3_ENDPOINT_URL = s3_endpoint
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storage_migrate.storage.FallbackStorage",
            "OPTIONS": {"primary": "s3", "fallback": "local"},
        },
    }
    reset_storages()
    every_file_is_served(rows)  # nothing moved yet: all from disk

    half = manage_py("migrate_storage", "--to", "s3", "--no-progress", "--limit", "3")
    assert half.returncode == 0, half.stderr
    every_file_is_served(rows)  # 3 from S3, 3 from disk

    links = admin_links(admin_client)
    remote = [u for u in links if u.startswith(f"{s3_endpoint}/{http_bucket}/")]
    local = [u for u in links if u.startswith("/media/")]
    assert (len(remote), len(local)) == (3, 3), links
    assert all((media_root / unquote(u.removeprefix("/media/"))).is_file() for u in local)
    for url in remote:  # presigned: the bytes cross the socket as a browser would fetch them
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.read().startswith(b"file ")

    upload = SimpleUploadedFile("during the move.txt", b"uploaded mid-move", "text/plain")
    added = admin_client.post(
        "/admin/core/filemanager/add/",
        {"file": upload, "file_type": "DOCUMENT", "purpose": "ATTACHMENT"},
    )
    assert added.status_code == 302
    new = FileManager.objects.get(file_name="during the move.txt")
    assert not (media_root / new.file.name).exists()
    body = s3_client(s3_endpoint).get_object(Bucket=http_bucket, Key=new.file.name)["Body"]
    assert body.read() == b"uploaded mid-move"

    moved_row = FileManager.objects.filter(pk__in=[r.pk for r in rows]).exclude(bucket="")[0]
    name = str(moved_row.file.name)
    assert (media_root / name).exists()
    moved_row.file.delete(save=False)  # the site deletes a file that exists in both places
    assert not (media_root / name).exists()
    assert not default_storage.exists(name)
    listing = s3_client(s3_endpoint).list_objects_v2(Bucket=http_bucket, Prefix=name)
    assert "Contents" not in listing  # (rclone serve s3 gives no KeyCount of an empty one)
    FileManager.objects.filter(pk=moved_row.pk).delete()
    rest = [r for r in rows if r.pk != moved_row.pk]

    done = manage_py("migrate_storage", "--to", "s3", "--no-progress")
    assert done.returncode == 0, done.stderr
    every_file_is_served(rest)
    for row in FileManager.objects.filter(pk__in=[r.pk for r in rest]):
        assert file_url(row).startswith(f"{s3_endpoint}/{http_bucket}/")  # from the row
