"""Fixtures of the Wagtail site: its content made through Wagtail's own APIs (images with their
renditions, documents, an avatar, a page showing them), and its manage.py as a subprocess."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.images import ImageFile

from tests.conftest import database_url, reset_storages

MANAGE = Path(__file__).resolve().parent / "manage.py"
MiB = 1024 * 1024
# Names as editors upload them: spaces, accents, + & % # (Wagtail keeps images' names ASCII).
IMAGE_NAMES = ["façade photo + & % #.png", "plain.png", "Ünïcode café.png"]
DOCUMENT_NAMES = {"scan + copy & co %.pdf": 3000, "annual report #2.pdf": 6 * MiB + 17}


@dataclass
class Site:
    images: list[Any]
    renditions: list[Any]
    documents: list[Any]
    avatar: Any
    page: Any


def png(seed: int) -> bytes:
    """A real PNG image (Wagtail reads it with Willow), different for each seed."""
    from PIL import Image as PILImage

    rng = random.Random(seed)
    picture = PILImage.new("RGB", (160, 90), (rng.randrange(256), 80, 160))
    for x in range(0, 160, 4):
        picture.putpixel((x, rng.randrange(90)), (255, 255, rng.randrange(256)))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def wagtail_site(django_db_serialized_rollback: None, media_root: Path) -> Site:
    """Images, a rendition of each, documents (one above the multipart threshold), a user's
    avatar and a page showing an image and a document, all made by Wagtail's own code.
    Committed (manage.py sees them), on top of what Wagtail's migrations made (its root page,
    collection and locale), which a serialized rollback brings back for the next test."""
    from django.contrib.auth import get_user_model
    from django.core.cache import caches
    from wagtail.documents import get_document_model
    from wagtail.images import get_image_model
    from wagtail.models import Page
    from wagtail.models import Site as WagtailSite
    from wagtail.users.models import UserProfile

    from tests.wagtail_site.home.models import HomePage

    reset_storages()
    for cache in caches.all():  # Wagtail caches renditions: an earlier test's are gone
        cache.clear()
    Image, Document = get_image_model(), get_document_model()
    images, renditions = [], []
    for i, name in enumerate(IMAGE_NAMES):
        image = Image(title=f"Image {i}", file=ImageFile(io.BytesIO(png(i)), name=name))
        image._set_image_file_metadata()  # as Wagtail's admin does on upload
        image.save()
        images.append(image)
        renditions.append(image.get_rendition("width-120"))
    documents = []
    rng = random.Random(7)
    for name, size in DOCUMENT_NAMES.items():
        document = Document(title=name, file=ContentFile(rng.randbytes(size), name=name))
        document._set_document_file_metadata()
        document.save()
        documents.append(document)
    user = get_user_model().objects.create_superuser("editor", "editor@example.com", "pw")
    profile = UserProfile.get_for_user(user)
    profile.avatar = ImageFile(io.BytesIO(png(99)), name="me.png")
    profile.save()

    root = Page.get_first_root_node()
    page = root.add_child(
        instance=HomePage(
            title="Home", slug="proving-ground", photo=images[0], brochure=documents[1]
        )
    )
    WagtailSite.objects.update_or_create(
        is_default_site=True, defaults={"hostname": "testserver", "root_page": page}
    )
    assert type(renditions[0]).objects.count() == len(images)  # each made now, in this database
    return Site(images, renditions, documents, profile, page)


@dataclass
class WagtailManagePy:
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def wagtail_manage_py(
    transactional_db: None, media_root: Path, s3_endpoint: str, http_bucket: str
) -> WagtailManagePy:
    """The site's manage.py against the test database, this test's MEDIA_ROOT and a fresh
    bucket on the round's S3 server."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))},
        "DJANGO_SETTINGS_MODULE": "tests.wagtail_site.settings",
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(media_root),
        "AWS_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_STORAGE_BUCKET_NAME": http_bucket,
        "SITE_STORAGE": "local",
    }
    return WagtailManagePy(env)


@pytest.fixture
def point_s3_at(settings: Any, s3_endpoint: str, http_bucket: str) -> None:
    """This process's `s3` alias on the round's server and bucket, as manage.py's is."""
    s3 = settings.STORAGES["s3"]
    options = {**s3["OPTIONS"], "endpoint_url": s3_endpoint, "bucket_name": http_bucket}
    settings.STORAGES = {**settings.STORAGES, "s3": {**s3, "OPTIONS": options}}
    reset_storages()
