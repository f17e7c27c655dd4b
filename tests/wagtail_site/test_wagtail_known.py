"""What the toolkit knows of Wagtail without configuration: file_hash is a SHA-1 (checked, and
filled only with SHA-1s), file_size a size, and the folders of its upload_to functions; and a
mapping of the MD5 `checksum` role onto file_hash is refused before anything is written."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from storage_migrate import verify_files
from storage_migrate.conf import get_conf
from storage_migrate.errors import ConfigurationError
from storage_migrate.targets import resolve_targets
from tests.wagtail_site.conftest import Site

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function SpooledTemporaryFile"
    ":pytest.PytestUnraisableExceptionWarning"
)
WAGTAIL_MODELS = ["wagtailimages.Image", "wagtaildocs.Document", "wagtailimages.Rendition"]


def test_wagtails_columns_are_known(wagtail_site: Site) -> None:
    columns = {str(t): t.columns for t in resolve_targets(WAGTAIL_MODELS, get_conf())}
    assert columns["wagtailimages.Image.file"] == {"sha1": "file_hash", "file_size": "file_size"}
    assert columns["wagtaildocs.Document.file"] == {"sha1": "file_hash", "file_size": "file_size"}
    assert "sha1" not in columns["wagtailimages.Rendition.file"]  # renditions keep no hash


def test_a_document_corrupted_on_disk_is_caught_by_its_sha1(
    wagtail_site: Site, media_root: Path
) -> None:
    document = wagtail_site.documents[0]
    path = media_root / document.file.name
    original = path.read_bytes()
    path.write_bytes(bytes(b ^ 0x20 for b in original))  # same size, other bytes

    report = verify_files(storage="local", level="checksum")

    (problem,) = report.problems
    assert (problem.kind, problem.pk, problem.model) == (
        "checksum_mismatch",
        document.pk,
        "wagtaildocs.Document",
    )
    assert problem.detail == "file bytes do not match the stored SHA-1 (file_hash)"
    assert problem.expected == hashlib.sha1(original).hexdigest()
    # Images and documents checked by content; renditions and the avatar keep no digest.
    assert report.unchecked == len(wagtail_site.renditions) + 1


def test_fix_metadata_fills_an_empty_file_hash_with_its_sha1(
    wagtail_site: Site, media_root: Path
) -> None:
    from wagtail.images.models import Image

    image = wagtail_site.images[1]
    Image.objects.filter(pk=image.pk).update(file_hash="")

    report = verify_files(storage="local", level="deep", fix_metadata=True)

    assert report.problems == [] and report.fixed == 1
    image.refresh_from_db()
    assert image.file_hash == hashlib.sha1((media_root / image.file.name).read_bytes()).hexdigest()


def test_the_md5_role_mapped_onto_file_hash_is_refused(wagtail_site: Site, settings: Any) -> None:
    from wagtail.documents.models import Document

    settings.STORAGE_MIGRATE = {
        "METADATA_FIELDS": {"wagtaildocs.Document": {"checksum": "file_hash"}}
    }
    before = list(Document.objects.values_list("pk", "file_hash"))

    with pytest.raises(ConfigurationError, match=r"holds wagtaildocs\.Document's SHA-1 digests"):
        verify_files(storage="local", fix_metadata=True)
    assert list(Document.objects.values_list("pk", "file_hash")) == before

    # Refused even where every file_hash is still blank (no value to tell the algorithm by):
    # no MD5 is ever written into Wagtail's SHA-1 column.
    Document.objects.update(file_hash="")
    with pytest.raises(ConfigurationError, match="map it as 'sha1'"):
        verify_files(storage="local", fix_metadata=True)
    assert set(Document.objects.values_list("file_hash", flat=True)) == {""}


def test_orphans_are_found_under_wagtails_folders(wagtail_site: Site, media_root: Path) -> None:
    strays = ["original_images/stray.png", "images/stray.width-9.png", "documents/stray.pdf"]
    strays.append("avatar_images/stray.png")
    for name in strays:
        (media_root / name).parent.mkdir(parents=True, exist_ok=True)
        (media_root / name).write_bytes(b"nobody's")

    report = verify_files(storage="local", level="exists", orphans=True)

    assert sorted(p.name for p in report.problems if p.kind == "orphan") == sorted(strays)
    assert [p for p in report.problems if p.kind != "orphan"] == []
