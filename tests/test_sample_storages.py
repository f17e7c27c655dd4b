"""The storage behaviours that django-storages' S3 documentation promises, on `local` and `s3`."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import Storage

from core.models import FileManager


def test_exists_open_write_read_delete(storage: Storage) -> None:
    name = "storage_test.txt"  # open("wb") on local disk does not create folders
    assert not storage.exists(name)
    with storage.open(name, "wb") as f:
        f.write(b"storage contents")
    assert storage.exists(name)
    with storage.open(name, "rb") as f:
        assert f.read() == b"storage contents"
    storage.delete(name)
    assert not storage.exists(name)


def test_saving_under_a_taken_name_gives_an_alternative_name(storage: Storage) -> None:
    first = storage.save("dupes/report.txt", ContentFile(b"first"))
    second = storage.save("dupes/report.txt", ContentFile(b"second"))
    assert first == "dupes/report.txt"
    assert second != first
    assert second.startswith("dupes/report_") and second.endswith(".txt")
    with storage.open(first) as f:
        assert f.read() == b"first"
    with storage.open(second) as f:
        assert f.read() == b"second"


def test_size(storage: Storage) -> None:
    name = storage.save("sizes/blob.bin", ContentFile(b"x" * 12345))
    assert storage.size(name) == 12345


def test_reading_in_pieces_and_chunks(storage: Storage) -> None:
    data = bytes(range(256)) * 4000  # 1 024 000 bytes
    name = storage.save("pieces/data.bin", ContentFile(data))
    with storage.open(name, "rb") as f:
        assert f.read(10) == data[:10]
        assert f.read(1000) == data[10:1010]
        assert f.read() == data[1010:]
    with storage.open(name, "rb") as f:
        chunks = list(f.chunks(chunk_size=64 * 1024))
    assert len(chunks) == 16
    assert b"".join(chunks) == data


@pytest.mark.django_db
def test_model_instance_with_file_survives_the_cache(
    storage_alias: str, default_storage_is: Any
) -> None:
    default_storage_is(storage_alias)
    row = FileManager.objects.create(file=ContentFile(b"cached bytes", name="cache-me.txt"))
    cache.set("file-row", row)
    restored = cache.get("file-row")
    assert restored is not row
    assert restored.pk == row.pk
    assert restored.file.name == row.file.name
    with restored.file.open("rb") as f:
        assert f.read() == b"cached bytes"


@pytest.mark.django_db
def test_deleting_one_rows_file_leaves_the_others(
    storage_alias: str, default_storage_is: Any
) -> None:
    default_storage_is(storage_alias)
    keep = FileManager.objects.create(file=ContentFile(b"keep", name="a.txt"))
    drop = FileManager.objects.create(file=ContentFile(b"drop", name="a.txt"))
    storage, dropped_name = drop.file.storage, str(drop.file.name)
    assert dropped_name != keep.file.name
    drop.file.delete(save=False)
    drop.delete()
    assert not storage.exists(dropped_name)
    assert storage.exists(str(keep.file.name))
    with keep.file.open("rb") as f:
        assert f.read() == b"keep"
