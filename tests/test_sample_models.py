"""FileManager.save() records the stored file's metadata, on local disk and on S3."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile, File
from django.core.files.uploadedfile import SimpleUploadedFile

from core.models import FileManager
from storage_migrate.testing import s3_client

pytestmark = pytest.mark.django_db


def test_save_records_metadata(storage_alias: str, default_storage_is: Any, settings: Any) -> None:
    default_storage_is(storage_alias)
    data = b"%PDF-1.7 not really a pdf\n" * 100
    upload = SimpleUploadedFile("Contract 2026.pdf", data, content_type="application/pdf")

    row = FileManager.objects.create(file=upload, purpose=FileManager.Purpose.DOCUMENT)

    row.refresh_from_db()
    assert str(row.file.name).startswith("file_manager/")
    assert str(row.file.name).endswith(".pdf")
    assert row.file_name == "Contract 2026.pdf"
    assert row.file_size == len(data)
    assert row.content_type == "application/pdf"
    assert row.checksum == hashlib.md5(data).hexdigest()
    assert row.object_key == row.file.name
    if storage_alias == "s3":
        assert row.bucket == settings.AWS_STORAGE_BUCKET_NAME
        head = s3_client().head_object(Bucket=row.bucket, Key=row.object_key)
        assert head["ContentLength"] == len(data)
    else:
        assert row.bucket == ""
        assert (Path(settings.MEDIA_ROOT) / row.object_key).read_bytes() == data
    with row.file.open("rb") as f:
        assert f.read() == data


def test_content_type_guessed_from_name_when_upload_has_none(
    storage_alias: str, default_storage_is: Any
) -> None:
    default_storage_is(storage_alias)
    row = FileManager.objects.create(file=ContentFile(b"\x89PNG....", name="photo.png"))
    assert row.content_type == "image/png"
    odd = FileManager.objects.create(file=ContentFile(b"??", name="blob.unknownext"))
    assert odd.content_type == "application/octet-stream"


def test_object_key_includes_the_aws_location_prefix(
    s3_bucket: str, default_storage_is: Any, settings: Any
) -> None:
    settings.AWS_LOCATION = "media/uploads"
    default_storage_is("s3")
    row = FileManager.objects.create(file=ContentFile(b"hello", name="a.txt"))
    assert row.object_key == f"media/uploads/{row.file.name}"
    body = s3_client().get_object(Bucket=s3_bucket, Key=row.object_key)["Body"].read()
    assert body == b"hello"


def test_taken_name_gets_an_alternative_name(storage_alias: str, default_storage_is: Any) -> None:
    default_storage_is(storage_alias)
    first = FileManager.objects.create(file=ContentFile(b"one", name="same.txt"))
    second = FileManager.objects.create(file=ContentFile(b"two", name="same.txt"))
    assert first.file.name != second.file.name
    assert first.object_key != second.object_key
    assert first.file_name == second.file_name == "same.txt"
    for row, data in ((first, b"one"), (second, b"two")):
        with row.file.open("rb") as f:
            assert f.read() == data


def test_zero_byte_file(storage_alias: str, default_storage_is: Any) -> None:
    default_storage_is(storage_alias)
    row = FileManager.objects.create(file=ContentFile(b"", name="empty.txt"))
    assert row.file_size == 0
    assert row.checksum == hashlib.md5(b"").hexdigest()


class NoWholeReads:
    """A file object that refuses to be read whole, as a 5 GB video would be if it were."""

    def __init__(self, data: bytes) -> None:
        self._file = __import__("io").BytesIO(data)
        self.largest_read = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("the whole file was read into memory")
        self.largest_read = max(self.largest_read, size)
        return bytes(self._file.read(size))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def test_checksum_is_computed_by_streaming(storage_alias: str, default_storage_is: Any) -> None:
    default_storage_is(storage_alias)
    data = bytes(range(256)) * 12_000  # about 3 MB
    raw = NoWholeReads(data)
    row = FileManager.objects.create(file=File(raw, name="video.mp4"))
    assert row.checksum == hashlib.md5(data).hexdigest()
    assert row.file_size == len(data)
    assert 0 < raw.largest_read < len(data)


def test_saving_again_keeps_metadata(storage_alias: str, default_storage_is: Any) -> None:
    default_storage_is(storage_alias)
    row = FileManager.objects.create(file=ContentFile(b"abc", name="x.txt"))
    before = (row.file.name, row.checksum, row.file_size, row.object_key)
    row.purpose = FileManager.Purpose.ATTACHMENT
    row.save()
    row.refresh_from_db()
    assert (row.file.name, row.checksum, row.file_size, row.object_key) == before
