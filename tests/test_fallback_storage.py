"""FallbackStorage while the files move: reads from the primary (S3) then the fallback (local
disk), writes to the primary only, deletes from both, and url() that costs no request on a hot
page. Through the storage API, the model and the admin (Django's test client)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage, storages
from django.test import Client

from core.models import FileManager
from storage_migrate.storage import FallbackStorage, file_url
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages

pytestmark = pytest.mark.django_db
NAME = "file_manager/2026/12/01/{}"


@pytest.fixture
def fallback(settings: Any, s3_bucket: str, media_root: Path) -> Iterator[FallbackStorage]:
    """`default` is a FallbackStorage: primary `s3` (moto), fallback `local` (MEDIA_ROOT)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storage_migrate.storage.FallbackStorage",
            "OPTIONS": {"primary": "s3", "fallback": "local"},
        },
    }
    reset_storages()
    storage = storages["default"]
    assert isinstance(storage, FallbackStorage)
    yield storage
    reset_storages()


@pytest.fixture
def s3_calls() -> Iterator[list[str]]:
    """Every S3 API call the `s3` storage's client makes from now on (HeadObject, ...)."""
    calls: list[str] = []
    events = storages["s3"].connection.meta.client.meta.events  # type: ignore[attr-defined]

    def record(event_name: str, **_: Any) -> None:
        calls.append(event_name.rsplit(".", 1)[-1])

    events.register("before-call.s3", record)
    yield calls
    events.unregister("before-call.s3", record)


def on_disk(media_root: Path, name: str, body: bytes) -> str:
    path = media_root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return name


def in_s3(bucket: str, name: str, body: bytes) -> str:
    s3_client().put_object(Bucket=bucket, Key=name, Body=body)
    return name


def test_a_file_only_on_disk_is_read_from_disk(fallback: FallbackStorage, media_root: Path) -> None:
    name = on_disk(media_root, NAME.format("disk.txt"), b"old bytes")

    assert fallback.exists(name)
    assert fallback.size(name) == 9
    with fallback.open(name) as f:
        assert f.read() == b"old bytes"
    assert fallback.url(name) == f"/media/{name}"


def test_a_file_only_in_s3_is_read_from_s3(fallback: FallbackStorage, s3_bucket: str) -> None:
    name = in_s3(s3_bucket, NAME.format("s3.txt"), b"new bytes!")

    assert fallback.exists(name)
    assert fallback.size(name) == 10
    with fallback.open(name) as f:
        assert f.read() == b"new bytes!"
    assert s3_bucket in fallback.url(name)


def test_a_file_in_both_is_read_from_the_primary(
    fallback: FallbackStorage, s3_bucket: str, media_root: Path
) -> None:
    name = on_disk(media_root, NAME.format("both.txt"), b"stale")
    in_s3(s3_bucket, name, b"the copy")

    with fallback.open(name) as f:
        assert f.read() == b"the copy"
    assert fallback.size(name) == 8
    assert s3_bucket in fallback.url(name)


def test_a_file_in_neither_is_missing_in_both(fallback: FallbackStorage) -> None:
    name = NAME.format("nowhere.txt")
    assert not fallback.exists(name)
    with pytest.raises(FileNotFoundError):
        fallback.open(name)


def test_an_upload_during_the_move_lands_in_the_primary_under_a_name_free_in_both(
    fallback: FallbackStorage, s3_bucket: str, media_root: Path
) -> None:
    field = FileManager._meta.get_field("file")
    taken = on_disk(media_root, field.generate_filename(None, "report.pdf"), b"not moved yet")

    row = FileManager.objects.create(file=ContentFile(b"a new upload", name="report.pdf"))

    assert row.file.name != taken  # the file not yet moved keeps its name
    assert (media_root / taken).read_bytes() == b"not moved yet"
    assert not (media_root / row.file.name).exists()  # nothing written to disk
    body = s3_client().get_object(Bucket=s3_bucket, Key=row.file.name)["Body"].read()
    assert body == b"a new upload"
    assert row.bucket == s3_bucket  # the model records where the upload went
    assert row.object_key == row.file.name


def test_a_delete_during_the_move_is_gone_from_both(
    fallback: FallbackStorage, s3_bucket: str, media_root: Path
) -> None:
    name = on_disk(media_root, NAME.format("gone.txt"), b"copied")
    in_s3(s3_bucket, name, b"copied")
    row = FileManager.objects.create(file=name)
    assert fallback.url(name)  # remembered as in the primary

    row.file.delete(save=False)

    assert not (media_root / name).exists()
    assert s3_client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert not fallback.exists(name)  # not back through the fallback, nor from memory


def test_url_asks_once_per_name_and_then_never(
    fallback: FallbackStorage, s3_bucket: str, media_root: Path, s3_calls: list[str]
) -> None:
    moved = in_s3(s3_bucket, NAME.format("moved.txt"), b"m")
    waiting = on_disk(media_root, NAME.format("waiting.txt"), b"w")

    first = [fallback.url(moved), fallback.url(waiting)]
    asked = len(s3_calls)
    again = [fallback.url(moved), fallback.url(waiting)]

    assert asked == 2  # one HEAD per name the storage did not know
    assert len(s3_calls) == asked  # none the second time
    assert s3_bucket in first[0] and first[1] == f"/media/{waiting}"
    assert [s3_bucket in again[0], again[1]] == [True, f"/media/{waiting}"]


def test_not_in_the_primary_yet_is_believed_only_for_the_miss_ttl(
    settings: Any, s3_bucket: str, media_root: Path
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storage_migrate.storage.FallbackStorage",
            "OPTIONS": {"primary": "s3", "fallback": "local", "miss_ttl": 1.0},
        },
    }
    reset_storages()
    storage = storages["default"]
    name = on_disk(media_root, NAME.format("later.txt"), b"x")
    assert storage.url(name) == f"/media/{name}"

    in_s3(s3_bucket, name, b"x")  # migrate_storage copies it
    assert storage.url(name) == f"/media/{name}"  # still believed: the disk copy still serves
    time.sleep(1.1)
    assert s3_bucket in storage.url(name)


def test_the_cache_is_bounded(s3_bucket: str, media_root: Path, settings: Any) -> None:
    storage = FallbackStorage(primary="s3", fallback="local", cache_size=3)
    for i in range(10):
        storage.url(NAME.format(f"{i}.txt"))
    assert len(storage._places._known) == 3


def test_the_admin_list_of_100_files_sends_no_request_with_a_warm_cache(
    fallback: FallbackStorage,
    s3_bucket: str,
    media_root: Path,
    admin_client: Client,
    s3_calls: list[str],
) -> None:
    for i in range(100):
        name = NAME.format(f"row {i}.txt")
        if i % 2:
            in_s3(s3_bucket, name, b"moved")
        else:
            on_disk(media_root, name, b"not yet")
        FileManager.objects.create(file=name, file_name=f"row {i}.txt")

    cold = admin_client.get("/admin/core/filemanager/?all=")
    asked = list(s3_calls)
    warm = admin_client.get("/admin/core/filemanager/?all=")

    assert cold.status_code == warm.status_code == 200
    links = re.findall(r'href="([^"]*row%20[^"]*)"', warm.content.decode())
    assert len([u for u in links if s3_bucket in u]) == 50  # the moved ones, from S3
    assert len([u for u in links if u.startswith("/media/file_manager/")]) == 50  # from disk
    assert 0 < len(asked) <= 100  # the cold page: one HEAD per file at most
    assert s3_calls == asked  # the warm page: none


def test_file_url_decides_from_the_row_with_no_request(
    fallback: FallbackStorage, s3_bucket: str, media_root: Path, s3_calls: list[str]
) -> None:
    moved = FileManager.objects.create(
        file=in_s3(s3_bucket, NAME.format("m.txt"), b"m"), bucket=s3_bucket, object_key="x"
    )
    waiting = FileManager.objects.create(file=on_disk(media_root, NAME.format("w.txt"), b"w"))

    urls = [file_url(moved), file_url(waiting)]

    assert s3_bucket in urls[0] and urls[1] == f"/media/{waiting.file.name}"
    assert s3_calls == []


def test_file_url_on_the_way_back_follows_the_bucket_column(
    settings: Any, s3_bucket: str, media_root: Path, s3_calls: list[str]
) -> None:
    """Rolling back, the primary is `local`: a row still recorded in the bucket is linked to
    S3 (not to a /media/ path with no file yet), a row back on disk to /media/."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storage_migrate.storage.FallbackStorage",
            "OPTIONS": {"primary": "local", "fallback": "s3"},
        },
    }
    reset_storages()
    still = FileManager.objects.create(
        file=in_s3(s3_bucket, NAME.format("s.txt"), b"s"), bucket=s3_bucket, object_key="k"
    )
    back = FileManager.objects.create(
        file=on_disk(media_root, NAME.format("b.txt"), b"b"), object_key="k"
    )
    elsewhere = FileManager.objects.create(
        file=on_disk(media_root, NAME.format("e.txt"), b"e"), bucket="another-bucket"
    )

    urls = [file_url(still), file_url(back)]
    asked = list(s3_calls)
    guessed = file_url(elsewhere)  # neither storage's bucket: the storage finds out
    reset_storages()

    assert s3_bucket in urls[0] and urls[1] == f"/media/{back.file.name}"
    assert asked == []
    assert guessed == f"/media/{elsewhere.file.name}" and len(s3_calls) <= 1


def test_two_aliases_that_are_one_are_refused() -> None:
    with pytest.raises(ValueError, match="two storages"):
        FallbackStorage(primary="s3", fallback="s3")


def test_default_storage_is_the_fallback(fallback: FallbackStorage) -> None:
    assert default_storage.exists("nothing") is False
    assert isinstance(default_storage._wrapped, FallbackStorage)  # type: ignore[attr-defined]


def test_listdir_is_what_either_storage_holds(
    fallback: FallbackStorage, s3_bucket: str, media_root: Path, settings: Any, tmp_path: Path
) -> None:
    on_disk(media_root, "only-here/disk.txt", b"d")
    in_s3(s3_bucket, "only-here/s3.txt", b"s")
    in_s3(s3_bucket, "s3-folder/x.txt", b"x")

    assert fallback.listdir("only-here") == ([], ["disk.txt", "s3.txt"])
    assert fallback.listdir("s3-folder") == ([], ["x.txt"])  # no such folder on disk
    attic = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    settings.STORAGES = {**settings.STORAGES, "attic": {**attic, "OPTIONS": {"location": tmp_path}}}
    reset_storages()
    with pytest.raises(FileNotFoundError):  # two disks, neither has the folder
        FallbackStorage(primary="local", fallback="attic").listdir("nowhere")
