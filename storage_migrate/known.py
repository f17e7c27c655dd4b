"""What we know of third-party apps' models without being told: Wagtail keeps a SHA-1 of each
image and document (``file_hash``) and their size (``file_size``), and uploads under folders its
callable ``upload_to`` functions name. Settings always win over what is known here."""

from __future__ import annotations

from django.apps import apps
from django.db import models


def _wagtail_bases() -> dict[str, type[models.Model]]:
    """Wagtail's abstract models that an installed Wagtail app defines, by what they hold."""
    bases: dict[str, type[models.Model]] = {}
    if apps.is_installed("wagtail.images"):
        from wagtail.images.models import AbstractImage, AbstractRendition

        bases["image"], bases["rendition"] = AbstractImage, AbstractRendition
    if apps.is_installed("wagtail.documents"):
        from wagtail.documents.models import AbstractDocument

        bases["document"] = AbstractDocument
    if apps.is_installed("wagtail.users"):
        from wagtail.users.models import UserProfile

        bases["avatar"] = UserProfile
    return bases


def _kind(model: type[models.Model]) -> str | None:
    for kind, base in _wagtail_bases().items():
        if issubclass(model, base):
            return kind
    return None


def known_columns(model: type[models.Model], field: models.FileField) -> dict[str, str]:
    """Role -> column of a model we know (Wagtail's images and documents, custom ones
    included): their ``file_hash`` is a SHA-1 of the file, ``file_size`` its size."""
    if _kind(model) in ("image", "document") and field.name == "file":
        return {"sha1": "file_hash", "file_size": "file_size"}
    return {}


# Where Wagtail's upload_to functions put files (wagtail.images.models.get_upload_to and
# get_rendition_upload_to, wagtail.users.models.upload_avatar_to).
_FOLDERS = {
    ("image", "file"): ["original_images/"],
    ("rendition", "file"): ["images/"],
    ("avatar", "avatar"): ["avatar_images/"],
}


def known_folders(model: type[models.Model], field: models.FileField) -> list[str] | None:
    """The folders a known model's callable upload_to writes under, or None when unknown."""
    kind = _kind(model)
    return None if kind is None else _FOLDERS.get((kind, str(field.name)))
