"""verify_files where it can go wrong: found by review and fixed. A false `ok` or a false orphan
is the dangerous mistake; a crash is the embarrassing one."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import models

from core.models import FileManager
from storage_migrate import migrate_storage, verify_files
from storage_migrate.targets import Target, upload_prefix
from storage_migrate.verify import run as verification_module
from storage_migrate.verify.orphans import _outermost
from tests.helpers import kinds, make, md5
from tests.testapp.models import Attachment

pytestmark = pytest.mark.django_db


@pytest.fixture
def joined(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the listing-join path with a handful of rows."""
    monkeypatch.setattr(verification_module, "JOIN_MIN_ROWS", 3)


def test_an_unsafe_name_in_a_joined_selection_is_reported_not_fatal(joined: None) -> None:
    rows = [make(f"j{i}.txt", b"j") for i in range(4)]
    FileManager.objects.filter(pk=rows[0].pk).update(file="../../etc/passwd")

    report = verify_files()

    assert [(p.kind, p.pk) for p in report.problems] == [("unsafe_name", rows[0].pk)]
    assert report.ok == 3


@pytest.mark.parametrize(
    ("upload_to", "prefix"),
    [
        ("avatars", "avatars/"),
        ("avatars/", "avatars/"),
        ("file_manager/%Y/%m/%d/", "file_manager/"),
        ("uploads/%Y-x", "uploads/"),
        ("", ""),
    ],
)
def test_upload_prefix(upload_to: str, prefix: str) -> None:
    field = models.FileField(upload_to=upload_to)
    assert upload_prefix(Target(FileManager, field, {})) == prefix


def test_nested_upload_folders_are_listed_once() -> None:
    assert _outermost({"file_manager/", "file_manager/att/", "docs/"}) == [
        "docs/",
        "file_manager/",
    ]


def test_a_file_an_unwalked_model_points_to_is_no_orphan(media_root: Path) -> None:
    item = Attachment.objects.create(upload=ContentFile(b"attached", name="a.txt"))
    row = make("owned.txt", b"owned")
    # A FileManager row points into the attachments folder too.
    shared = media_root / "attachments" / "from-core.txt"
    shared.write_bytes(b"core's file")
    FileManager.objects.filter(pk=row.pk).update(file="attachments/from-core.txt")
    (media_root / "attachments" / "stray.txt").write_bytes(b"nobody's")

    report = verify_files(models=["testapp.Attachment"], orphans=True)

    orphans = sorted(p.name for p in report.problems if p.kind == "orphan")
    assert orphans == ["attachments/stray.txt"]
    assert item.upload.name != "attachments/stray.txt"


def test_junit_holds_names_with_control_characters() -> None:
    row = make("fine.txt", b"x")
    FileManager.objects.filter(pk=row.pk).update(file="file_manager/a\x01b.txt")

    report = verify_files()

    assert kinds(report) == ["unsafe_name"]
    suite = ET.fromstring(report.to_junit())
    assert suite.get("failures") == "1"


def test_a_listing_etag_that_is_no_md5_is_asked_again(
    s3_bucket: str, joined: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket encrypting with KMS by default, the settings silent: a listing's 32-hex ETag is
    not the MD5. A disagreement is checked with a HEAD; a checksum is never filled from it."""
    from storage_migrate.endpoints.base import ObjectInfo
    from storage_migrate.endpoints.s3 import S3Endpoint

    rows = [make(f"k{i}.txt", f"kms {i}".encode()) for i in range(4)]
    assert migrate_storage(to="s3").problems == []
    FileManager.objects.filter(pk=rows[0].pk).update(checksum="")
    real_iter = S3Endpoint.iter_objects

    def kms_listing(self: Any, prefix: str = "") -> Any:
        for name, info in real_iter(self, prefix):
            fake = "f" * 32
            yield name, ObjectInfo(size=info.size, md5=fake, etag=fake, etag_md5=fake)

    monkeypatch.setattr(S3Endpoint, "iter_objects", kms_listing)

    report = verify_files(storage="s3", fix_metadata=True)

    assert report.problems == []
    rows[0].refresh_from_db()
    assert rows[0].checksum == md5(b"kms 0")  # from a HEAD, not from the listing


def test_a_symlink_within_media_root_is_a_file(media_root: Path, joined: None) -> None:
    rows = [make(f"s{i}.txt", b"s") for i in range(3)]
    target = media_root / rows[0].file.name
    link = target.parent / "alias.txt"
    os.symlink(target, link)
    linked = make("placeholder.txt", b"s")
    FileManager.objects.filter(pk=linked.pk).update(
        file=str(link.relative_to(media_root)), object_key=str(link.relative_to(media_root))
    )

    report = verify_files()

    assert report.problems == []
    assert report.ok == 4
