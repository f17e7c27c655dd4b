"""A Wagtail site moved local -> S3 -> local with manage.py, against moto's HTTP server and
`rclone serve s3`: every object byte-equal under its name, no Wagtail column changed, the
site's pages and document views working after the flip, and a corrupted document caught by
Wagtail's own SHA-1 (``file_hash``), which the toolkit knows without configuration."""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from storage_migrate.testing import s3_client
from tests.conftest import BOTH_SERVERS, reset_storages
from tests.wagtail_site.conftest import Site, WagtailManagePy

pytestmark = [
    pytest.mark.e2e,
    BOTH_SERVERS,
    # Wagtail's own rendition code leaves a SpooledTemporaryFile to the garbage collector.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function SpooledTemporaryFile"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]


def files_of(site: Site) -> dict[str, bytes]:
    """Every file the site's rows point to, and its bytes as uploaded."""
    names = [str(obj.file.name) for obj in [*site.images, *site.renditions, *site.documents]]
    names.append(str(site.avatar.avatar.name))
    return {name: Path(site.images[0].file.storage.path(name)).read_bytes() for name in names}


def wagtail_columns() -> dict[str, Any]:
    from wagtail.documents.models import Document
    from wagtail.images.models import Image, Rendition

    return {
        "images": list(Image.objects.order_by("pk").values_list("file", "file_hash", "file_size")),
        "documents": list(
            Document.objects.order_by("pk").values_list("file", "file_hash", "file_size")
        ),
        "renditions": list(Rendition.objects.order_by("pk").values_list("file", "width")),
    }


def run_json(manage: WagtailManagePy, *args: str) -> tuple[int, dict[str, Any]]:
    result = manage(*args, "--format", "json", "--no-progress")
    assert "Traceback" not in result.stderr, result.stderr  # (verify_files: a summary line)
    return result.returncode, json.loads(result.stdout)


def test_a_wagtail_site_moves_to_s3_and_back(
    wagtail_site: Site,
    wagtail_manage_py: WagtailManagePy,
    point_s3_at: None,
    s3_endpoint: str,
    http_bucket: str,
    media_root: Path,
    settings: Any,
) -> None:
    site = wagtail_site
    files = files_of(site)
    before = wagtail_columns()
    # Wagtail's file_hash is the SHA-1 of the file (computed here, not by the toolkit).
    for obj in [*site.images, *site.documents]:
        assert obj.file_hash == hashlib.sha1(files[obj.file.name]).hexdigest()

    status, report = run_json(wagtail_manage_py, "migrate_storage", "--to", "s3")

    assert status == 0, report["problems"]
    assert report["totals"]["copied"] == len(files) == report["totals"]["rows"]
    s3 = s3_client(s3_endpoint)
    for name, data in files.items():
        assert s3.get_object(Bucket=http_bucket, Key=name)["Body"].read() == data, name
    assert wagtail_columns() == before  # no Wagtail column touched

    # Proven by content: at --level checksum, every image and document by its SHA-1 (read,
    # since no ETag is a SHA-1); renditions and the avatar have no digest to compare.
    status, verified = run_json(
        wagtail_manage_py, "verify_files", "--storage", "s3", "--level", "checksum"
    )
    assert status == 0, verified["problems"]
    hashed = len(site.images) + len(site.documents)
    assert verified["totals"]["ok"] == len(files)
    assert verified["totals"]["unchecked"] == len(files) - hashed

    # The flip: the site reads S3. Its page renders the image's rendition from the bucket,
    # and the document view sends the reader to the bucket's copy.
    settings.STORAGES = {**settings.STORAGES, "default": settings.STORAGES["s3"]}
    reset_storages()
    client = Client()
    page = client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    rendition = site.renditions[0]
    assert f"{s3_endpoint}/{http_bucket}/images/" in html
    served = client.get(f"/documents/{site.documents[1].pk}/{site.documents[1].filename}")
    assert served.status_code == 302, served
    with urllib.request.urlopen(served["Location"]) as response:  # the bucket's copy
        assert response.read() == files[site.documents[1].file.name]
    assert rendition.file.name in {n for n in files if n.startswith("images/")}

    # Someone corrupts a document in the bucket: same size, other bytes. Only its SHA-1 can
    # tell (the model has no MD5 column).
    victim = site.documents[0]
    original = files[victim.file.name]
    s3.put_object(Bucket=http_bucket, Key=victim.file.name, Body=bytes(b ^ 1 for b in original))
    status, caught = run_json(
        wagtail_manage_py, "verify_files", "--storage", "s3", "--level", "checksum"
    )
    assert status == 1
    (problem,) = caught["problems"]
    assert (problem["kind"], problem["pk"], problem["name"]) == (
        "checksum_mismatch",
        victim.pk,
        victim.file.name,
    )
    assert problem["expected"] == victim.file_hash
    assert problem["actual"] == hashlib.sha1(bytes(b ^ 1 for b in original)).hexdigest()
    s3.put_object(Bucket=http_bucket, Key=victim.file.name, Body=original)

    # The way back, after the disk copies are gone: every file comes back byte-exact.
    shutil.rmtree(media_root)
    media_root.mkdir()
    status, back = run_json(wagtail_manage_py, "migrate_storage", "--to", "local")
    assert status == 0, back["problems"]
    assert back["totals"]["copied"] == len(files)
    for name, data in files.items():
        assert (media_root / name).read_bytes() == data, name
    assert wagtail_columns() == before
