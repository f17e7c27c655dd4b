"""Models that are not FileManager: a bare FileField, metadata under other column names, and
metadata split across the tables of a multi-table inheritance."""

from django.db import models


class Attachment(models.Model):
    """A plain FileField and no metadata columns: only the file moves."""

    upload = models.FileField(upload_to="attachments/", blank=True)

    def __str__(self) -> str:
        return str(self.upload.name)


class Document(models.Model):
    """Two file fields; metadata under names that STORAGE_MIGRATE['METADATA_FIELDS'] maps."""

    scan = models.FileField(upload_to="docs/")
    preview = models.FileField(upload_to="previews/", blank=True, null=True)
    md5_hex = models.CharField(max_length=32, blank=True)
    bytes = models.BigIntegerField(null=True)
    bucket = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return str(self.scan.name)


class Media(models.Model):
    """The parent table of Clip (multi-table inheritance): most metadata columns live here."""

    checksum = models.CharField(max_length=32, blank=True)
    file_size = models.BigIntegerField(null=True)
    bucket = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return f"Media #{self.pk}"


class Clip(Media):
    """A FileField in the child's table, its metadata split between the child and Media."""

    video = models.FileField(upload_to="clips/")
    object_key = models.CharField(max_length=1024, blank=True)

    def __str__(self) -> str:
        return str(self.video.name)


def hashed_upload_to(instance: "HashedFile", filename: str) -> str:
    """A function, as Wagtail's are: --orphans knows its folder only from the settings."""
    return f"hashed/{filename}"


class HashedFile(models.Model):
    """Digests other than MD5, found by their column names: a SHA-1 (as Wagtail's file_hash)
    and a SHA-256, and no MD5 column at all."""

    file = models.FileField(upload_to=hashed_upload_to)
    sha1 = models.CharField(max_length=40, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    file_size = models.BigIntegerField(null=True)
    bucket = models.CharField(max_length=255, blank=True)
    object_key = models.CharField(max_length=1024, blank=True)

    def __str__(self) -> str:
        return str(self.file.name)
