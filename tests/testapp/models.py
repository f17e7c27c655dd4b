"""Models that are not FileManager: a bare FileField, and metadata under other column names."""

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
