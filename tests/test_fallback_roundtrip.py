"""The way back: a site serving through FallbackStorage moves its files to S3 (moto's HTTP server),
takes uploads into the bucket, then rolls back to local disk with migrate_storage --to local (a
manage.py subprocess). Every file, old or uploaded in between, is served at every moment, ends on
disk with the bytes that were written and a row that records the disk, and the bucket keeps its
objects. A foreign object that replaced an upload in the bucket is never committed as local."""

from __future__ import annotations

import hashlib
import html
import json
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import BOTH_SERVERS, ManagePy, reset_storages
from tests.test_migrate_e2e import make_row

pytestmark = [pytest.mark.e2e, BOTH_SERVERS]

OLD_FILES = {
    "holiday photo.jpg": b"\xff\xd8\xff\xe0 not really a jpeg " * 40,
    "façade ñandú été.txt": "ünïcödé text\n".encode() * 30,
    "plain.txt": b"plain old bytes\n" * 25,
}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def use_default(settings: Any, default: dict[str, Any]) -> None:
    settings.STORAGES = {**settings.STORAGES, "default": default}
    reset_storages()


def fallback(primary: str, fallback: str) -> dict[str, Any]:
    return {
        "BACKEND": "storage_migrate.storage.FallbackStorage",
        "OPTIONS": {"primary": primary, "fallback": fallback},
    }


def point_s3_at(settings: Any, s3_endpoint: str, http_bucket: str) -> None:
    """The `s3` alias of this process at the bucket that the manage.py subprocesses use."""
    settings.AWS_STORAGE_BUCKET_NAME = http_bucket
    settings.AWS_S3_ENDPOINT_URL = s3_endpoint
    reset_storages()


def every_file_is_served(written: dict[int, bytes]) -> None:
    """Through default_storage.open(), each row's file reads back as the bytes written for it."""
    rows = FileManager.objects.filter(pk__in=written)
    assert sorted(r.pk for r in rows) == sorted(written)
    for row in rows:
        with default_storage.open(row.file.name) as f:
            assert md5(f.read()) == md5(written[row.pk]), row.file.name


def admin_links(client: Client, s3_endpoint: str, http_bucket: str) -> dict[str, str]:
    """The admin list page's file links, by the name each one serves: /media/<name> on disk,
    <endpoint>/<bucket>/<key>?<signature> in the bucket."""
    response = client.get("/admin/core/filemanager/")
    assert response.status_code == 200
    page = response.content.decode()
    links: dict[str, str] = {}
    for url in (html.unescape(u) for u in re.findall(r'<a href="([^"]+)">', page)):
        if url.startswith("/media/"):
            name = unquote(url.removeprefix("/media/"))
        elif url.startswith(f"{s3_endpoint}/{http_bucket}/"):
            name = unquote(urlsplit(url).path.removeprefix(f"/{http_bucket}/"))
        else:
            continue
        assert name not in links, (name, url, links[name])
        links[name] = url
    return links


def fetch(url: str, media_root: Path) -> bytes:
    """What a browser following the link gets: the file under MEDIA_ROOT that /media/ serves,
    or the presigned object fetched over HTTP."""
    if url.startswith("/media/"):
        return (media_root / unquote(url.removeprefix("/media/"))).read_bytes()
    with urllib.request.urlopen(url, timeout=10) as answer:
        return bytes(answer.read())


def every_link_is_served(
    client: Client,
    written: dict[int, bytes],
    media_root: Path,
    s3_endpoint: str,
    http_bucket: str,
) -> dict[str, str]:
    links = admin_links(client, s3_endpoint, http_bucket)
    names = {str(r.file.name): r.pk for r in FileManager.objects.filter(pk__in=written)}
    assert sorted(links) == sorted(names), links
    for name, url in links.items():
        assert md5(fetch(url, media_root)) == md5(written[names[name]]), (name, url)
    return links


def bucket_objects(s3_endpoint: str, http_bucket: str) -> dict[str, bytes]:
    s3 = s3_client(s3_endpoint)
    listing = s3.list_objects_v2(Bucket=http_bucket)
    return {
        o["Key"]: bytes(s3.get_object(Bucket=http_bucket, Key=o["Key"])["Body"].read())
        for o in listing.get("Contents", [])
    }


def move_to_s3(
    manage_py: ManagePy,
    settings: Any,
    media_root: Path,
    s3_endpoint: str,
    http_bucket: str,
) -> dict[int, bytes]:
    """Old rows on disk, the site switched to FallbackStorage(s3, local), everything moved."""
    written = {make_row(media_root, name, data).pk: data for name, data in OLD_FILES.items()}
    point_s3_at(settings, s3_endpoint, http_bucket)
    use_default(settings, fallback("s3", "local"))
    every_file_is_served(written)

    moved = manage_py("migrate_storage", "--to", "s3", "--no-progress")

    assert moved.returncode == 0, moved.stdout + moved.stderr
    for row in FileManager.objects.filter(pk__in=written):
        assert row.bucket == http_bucket, row.file.name
    return written


def upload_after_the_switch(
    admin_client: Client, media_root: Path, s3_endpoint: str, http_bucket: str
) -> dict[int, bytes]:
    """Two uploads through the site while it serves from S3 first: both land in the bucket only."""
    data = b"uploaded through the admin after the switch\n" * 20
    upload = SimpleUploadedFile("après le switch.txt", data, "text/plain")
    added = admin_client.post(
        "/admin/core/filemanager/add/",
        {"file": upload, "file_type": "DOCUMENT", "purpose": "ATTACHMENT"},
    )
    assert added.status_code == 302, added.content.decode()[:2000]
    by_admin = FileManager.objects.get(file_name="après le switch.txt")
    by_code = FileManager.objects.create(
        file=ContentFile(b"saved by the site's code in S3\n" * 15, name="report 2026.csv")
    )
    new = {by_admin.pk: data, by_code.pk: b"saved by the site's code in S3\n" * 15}
    objects = bucket_objects(s3_endpoint, http_bucket)
    for row in FileManager.objects.filter(pk__in=new):
        name = str(row.file.name)
        assert not (media_root / name).exists(), name
        assert objects[name] == new[row.pk], name
        assert (row.bucket, row.object_key) == (http_bucket, name)
        assert (row.checksum, row.file_size) == (md5(new[row.pk]), len(new[row.pk]))
    return new


def test_the_way_back_serves_every_file_and_ends_with_every_row_on_disk(
    manage_py: ManagePy,
    s3_endpoint: str,
    http_bucket: str,
    media_root: Path,
    settings: Any,
    admin_client: Client,
) -> None:
    written = move_to_s3(manage_py, settings, media_root, s3_endpoint, http_bucket)
    written |= upload_after_the_switch(admin_client, media_root, s3_endpoint, http_bucket)
    every_file_is_served(written)
    every_link_is_served(admin_client, written, media_root, s3_endpoint, http_bucket)
    in_bucket = bucket_objects(s3_endpoint, http_bucket)
    assert len(in_bucket) == len(written) == 5

    # The way back: disk first, then the bucket.
    use_default(settings, fallback("local", "s3"))
    every_file_is_served(written)
    every_link_is_served(admin_client, written, media_root, s3_endpoint, http_bucket)

    # Rows are walked in primary-key order: the three old ones (still on disk), then the first
    # upload made after the switch; the last upload stays in the bucket only.
    half = manage_py("migrate_storage", "--to", "local", "--no-progress", "--limit", "4")

    assert half.returncode == 0, half.stdout + half.stderr
    *back, waiting = FileManager.objects.filter(pk__in=written).order_by("pk")
    assert [r.bucket for r in back] == [""] * 4
    assert waiting.bucket == http_bucket
    assert (media_root / str(back[-1].file.name)).read_bytes() == written[back[-1].pk]
    assert not (media_root / str(waiting.file.name)).exists()
    every_file_is_served(written)
    links = every_link_is_served(admin_client, written, media_root, s3_endpoint, http_bucket)
    assert links[str(waiting.file.name)].startswith(f"{s3_endpoint}/{http_bucket}/")

    # An upload in the middle of the way back goes to the disk, and records it.
    during = FileManager.objects.create(
        file=ContentFile(b"uploaded on the way back\n" * 10, name="on the way back.txt")
    )
    written[during.pk] = b"uploaded on the way back\n" * 10
    assert during.bucket == ""
    assert (media_root / str(during.file.name)).read_bytes() == written[during.pk]
    every_file_is_served(written)

    done = manage_py("migrate_storage", "--to", "local", "--no-progress")

    assert done.returncode == 0, done.stdout + done.stderr
    for row in FileManager.objects.filter(pk__in=written):
        name = str(row.file.name)
        on_disk = (media_root / name).read_bytes()
        assert md5(on_disk) == md5(written[row.pk]), name
        assert row.bucket == "", name
        assert row.object_key == name
        assert row.checksum == md5(written[row.pk]), name
        assert row.file_size == len(written[row.pk]), name
    assert not [p for p in media_root.rglob("*") if ".partial" in p.name]
    every_file_is_served(written)
    every_link_is_served(admin_client, written, media_root, s3_endpoint, http_bucket)
    assert bucket_objects(s3_endpoint, http_bucket) == in_bucket  # nothing deleted

    verified = manage_py("verify_files", "--storage", "local", "--no-progress")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # Plain local disk again: every link is a /media/ one, and every file is there.
    use_default(settings, settings.STORAGES["local"])
    every_file_is_served(written)
    links = every_link_is_served(admin_client, written, media_root, s3_endpoint, http_bucket)
    assert all(url.startswith("/media/") for url in links.values()), links


def test_a_foreign_object_in_place_of_an_upload_is_reported_and_its_record_kept(
    manage_py: ManagePy,
    s3_endpoint: str,
    http_bucket: str,
    media_root: Path,
    settings: Any,
    admin_client: Client,
) -> None:
    """Someone replaced the S3 object of a file uploaded after the switch (its only copy):
    the way back copies the bytes as they are, faithfully, but says they are not the row's
    file (exit 1, the row named), keeps the row's checksum and size, and deletes nothing."""
    written = move_to_s3(manage_py, settings, media_root, s3_endpoint, http_bucket)
    new = upload_after_the_switch(admin_client, media_root, s3_endpoint, http_bucket)
    victim = FileManager.objects.get(file_name="après le switch.txt")
    recorded = (victim.checksum, victim.file_size)
    foreign = b"someone else's bytes, same length?\n" * 30
    assert md5(foreign) != victim.checksum and len(foreign) != victim.file_size
    s3_client(s3_endpoint).put_object(Bucket=http_bucket, Key=victim.object_key, Body=foreign)
    use_default(settings, fallback("local", "s3"))

    back = manage_py("migrate_storage", "--to", "local", "--no-progress", "--format", "json")

    assert back.returncode == 1, back.stdout + back.stderr
    report = json.loads(back.stdout)
    named = sorted(p["kind"] for p in report["problems"] if p["pk"] == victim.pk)
    assert named == ["checksum_mismatch", "size_mismatch"], report["problems"]
    assert all(p["pk"] == victim.pk for p in report["problems"]), report["problems"]
    assert all(p["name"] == victim.file.name for p in report["problems"])
    victim.refresh_from_db()
    assert (
        (victim.checksum, victim.file_size)
        == recorded
        == (md5(new[victim.pk]), len(new[victim.pk]))
    )
    assert (media_root / str(victim.file.name)).read_bytes() == foreign  # as it was, no more
    kept = s3_client(s3_endpoint).get_object(Bucket=http_bucket, Key=str(victim.file.name))
    assert kept["Body"].read() == foreign  # nothing deleted
    # The other rows were moved back, with the bytes written for them.
    for row in FileManager.objects.filter(pk__in=[*written, *new]).exclude(pk=victim.pk):
        data = written.get(row.pk, new.get(row.pk))
        assert data is not None
        assert row.bucket == "", row.file.name
        assert md5((media_root / str(row.file.name)).read_bytes()) == md5(data)


def test_purge_days_later_deletes_only_proven_copies_and_the_site_still_serves_everything(
    manage_py: ManagePy,
    s3_endpoint: str,
    http_bucket: str,
    media_root: Path,
    settings: Any,
    admin_client: Client,
) -> None:
    """The runbook's last steps as manage.py subprocesses against moto's HTTP server: a dry run
    lists, --min-age 7d keeps the fresh copies, the purge deletes the disk copies (a row not
    migrated yet keeps its file, exit 1) and the site serves every file from S3 alone."""
    written = move_to_s3(manage_py, settings, media_root, s3_endpoint, http_bucket)
    new = upload_after_the_switch(admin_client, media_root, s3_endpoint, http_bucket)
    # A process of the old release, still running, wrote to disk after the move.
    (media_root / "file_manager" / "late upload.txt").write_bytes(b"an old process wrote this")
    late = FileManager.objects.create(file="file_manager/late upload.txt")
    in_bucket = bucket_objects(s3_endpoint, http_bucket)
    purge = ("purge_source", "--from", "local", "--verified-against", "s3", "--no-progress")

    dry = manage_py(*purge, "--dry-run", "--format", "json")
    young = manage_py(*purge, "--min-age", "7d", "--format", "json")
    assert sorted(p.relative_to(media_root).as_posix() for p in media_root.rglob("*.*")) == sorted(
        [
            *(str(r.file.name) for r in FileManager.objects.filter(pk__in=written)),
            str(late.file.name),
        ]
    )
    real = manage_py(*purge, "--format", "json")

    for run in (dry, young, real):
        assert run.returncode == 1, run.stdout + run.stderr  # the late row keeps its file
        report = json.loads(run.stdout)
        assert [(p["pk"], p["kind"]) for p in report["problems"]] == [(late.pk, "not_recorded")]
    totals = [json.loads(run.stdout)["totals"] for run in (dry, young, real)]
    assert [(t["purged"], t["too_young"], t["gone"]) for t in totals] == [
        (len(written), 0, len(new)),
        (0, len(written), len(new)),
        (len(written), 0, len(new)),
    ]
    assert [p for p in media_root.rglob("*") if p.is_file()] == [media_root / str(late.file.name)]
    assert bucket_objects(s3_endpoint, http_bucket) == in_bucket  # nothing touched there
    everything = {**written, **new}
    every_file_is_served(everything)
    use_default(settings, settings.STORAGES["s3"])
    every_file_is_served(everything)
    checked = manage_py("verify_files", "--storage", "s3", "--no-progress", "--format", "json")
    problems = json.loads(checked.stdout)["problems"]
    assert [(p["pk"], p["kind"]) for p in problems] == [(late.pk, "missing")], checked.stdout
    assert checked.returncode == 1  # the late row: only on disk until a --pending pass
