"""The files our users keep: one row per upload, with the metadata recorded on save."""

from __future__ import annotations

import hashlib
import mimetypes
import os
from typing import Any

from django.conf import settings
from django.core.files.storage import Storage
from django.db import models

HASH_CHUNK_SIZE = 1024 * 1024


def stored_key(storage: Storage, name: str) -> str:
    """The name as the storage keeps it: the S3 object key (with any AWS_LOCATION prefix), or the
    path relative to MEDIA_ROOT on local disk."""
    location = getattr(storage, "location", "") if hasattr(storage, "bucket_name") else ""
    location = str(location or "").strip("/")
    return f"{location}/{name}" if location else name


class FileManager(models.Model):
    class FileType(models.TextChoices):
        IMAGE = "IMAGE", "Image"
        DOCUMENT = "DOCUMENT", "Document"
        VIDEO = "VIDEO", "Video"
        AUDIO = "AUDIO", "Audio"
        OTHER = "OTHER", "Other"

    class Purpose(models.TextChoices):
        PROFILE_IMAGE = "PROFILE_IMAGE", "Profile image"
        ATTACHMENT = "ATTACHMENT", "Attachment"
        DOCUMENT = "DOCUMENT", "Document"
        OTHER = "OTHER", "Other"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="files",
    )
    file = models.FileField(upload_to="file_manager/%Y/%m/%d/", max_length=500)
    file_type = models.CharField(max_length=16, choices=FileType.choices, default=FileType.OTHER)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.OTHER)
    file_name = models.CharField(max_length=255, blank=True)
    file_size = models.BigIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=255, blank=True)
    bucket = models.CharField(max_length=255, blank=True)
    object_key = models.CharField(max_length=1024, blank=True)
    checksum = models.CharField(max_length=32, blank=True, help_text="MD5 of the content, hex.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "file"

    def __str__(self) -> str:
        return self.file_name or self.file.name or f"FileManager #{self.pk}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Store a new upload through the field's storage, then record what was stored."""
        if self.file and not getattr(self.file, "_committed", True):
            upload = self.file.file
            original_name = os.path.basename(self.file.name or "")
            size, md5 = _stream_md5(upload)
            # Let the storage choose the final name (upload_to, and an alternative name if taken).
            self.file.save(original_name, upload, save=False)
            storage = self.file.storage
            self.file_name = original_name
            self.file_size = size
            self.content_type = (
                getattr(upload, "content_type", None)
                or mimetypes.guess_type(original_name)[0]
                or "application/octet-stream"
            )
            self.object_key = stored_key(storage, self.file.name or "")
            self.bucket = getattr(storage, "bucket_name", "") or ""
            self.checksum = md5
        super().save(*args, **kwargs)


def _stream_md5(upload: Any) -> tuple[int, str]:
    """Size and MD5 of an upload, read chunk by chunk, leaving it rewound for the storage."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    if hasattr(upload, "seek"):
        upload.seek(0)
    for chunk in (
        upload.chunks(HASH_CHUNK_SIZE)
        if hasattr(upload, "chunks")
        else iter(lambda: upload.read(HASH_CHUNK_SIZE), b"")
    ):
        digest.update(chunk)
        size += len(chunk)
    if hasattr(upload, "seek"):
        upload.seek(0)
    return size, digest.hexdigest()
