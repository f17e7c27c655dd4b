"""purge_source against the attacks that once lost a file or told a lie: a file's names (a
symlink, a hard link, another spelling) proven and kept together, rows of fields not walked
found by identity (another spelling, a symlink, a storage rooted inside the source, a fallback
storage), rows changed during the purge, a new upload racing the delete or the quarantine, a
quarantine copy that is not the source's bytes, an interrupted quarantine finished by a re-run,
a contradicted checksum behind equal multipart ETags, and input that must be refused."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, models

from core.models import FileManager
from storage_migrate import migrate_storage
from storage_migrate.errors import ConfigurationError
from storage_migrate.migrate.purge import purge_source
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages
from tests.helpers import make, s3_bytes, s3_keys
from tests.testapp.models import Attachment

pytestmark = pytest.mark.django_db
MiB = 1024 * 1024


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def on_disk(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )


def purge(**options: Any) -> Any:
    options.setdefault("models", ["core.FileManager"])
    options.setdefault("workers", 1)
    return purge_source(source="local", verified_against="s3", **options)


def problems(report: Any) -> list[tuple[str, str]]:
    return sorted((p.name, p.kind) for p in report.problems)


def recorded(
    bucket: str,
    media_root: Path,
    name: str,
    data: bytes,
    *,
    upload: bytes | None = None,
    checksum: str | None = None,
    write_local: bool = True,
) -> FileManager:
    """A FileManager row that records its file at S3 (bucket and object key), the file on disk
    under ``name`` and an object at S3 under its key (``upload``: other bytes there)."""
    if write_local:
        path = media_root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    key = os.path.normpath(name).replace(os.sep, "/")
    s3_client().put_object(Bucket=bucket, Key=key, Body=data if upload is None else upload)
    return FileManager.objects.create(
        file=name,
        bucket=bucket,
        object_key=key,
        checksum=checksum if checksum is not None else md5(data),
        file_size=len(data),
    )


def migrated(count: int = 2) -> list[FileManager]:
    rows = [make(f"photo {i}.jpg", b"photo %d " % i * (i + 1)) for i in range(count)]
    report = migrate_storage(to="s3", models=["core.FileManager"])
    assert (report.copied, report.problems) == (count, [])
    return [FileManager.objects.get(pk=r.pk) for r in rows]


def way_back(count: int = 2) -> list[FileManager]:
    rows = migrated(count)
    back = migrate_storage(to="local", models=["core.FileManager"])
    assert (back.skipped, back.problems) == (count, [])
    return rows


def purge_the_bucket(**options: Any) -> Any:
    return purge_source(
        source="s3", verified_against="local", models=["core.FileManager"], **options
    )


def replace_file(path: Path, data: bytes) -> None:
    """A new upload under the old name (written aside, renamed over: a new inode)."""
    aside = path.with_name(path.name + ".new")
    aside.write_bytes(data)
    os.replace(aside, path)


def replaced_before_the_rename(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """A new upload takes the file's name right before the purge renames it aside."""
    real_rename = os.rename

    def replaced_then_renamed(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if str(dst).endswith(".removing"):
            replace_file(path, b"a new upload, nowhere else")
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", replaced_then_renamed)


def refused(*options: str) -> str:
    with pytest.raises(CommandError) as failed:
        call_command("purge_source", *options, "--no-progress", stdout=io.StringIO())
    assert failed.value.returncode == 2, str(failed.value)
    message = str(failed.value)
    assert "\n" not in message.strip(), message
    return message


# --- one file, several names ------------------------------------------------------------------


def test_a_symlink_row_whose_copy_is_foreign_keeps_the_file_it_reads(
    s3_bucket: str, media_root: Path
) -> None:
    """Two rows share one file, one by its name, one through a symlink; both record S3, but the
    object under the symlink row's key holds someone else's bytes: the file stays, for both."""
    data = b"the only copy of row B's bytes" * 10
    recorded(s3_bucket, media_root, "file_manager/a.jpg", data)
    (media_root / "b.jpg").symlink_to(media_root / "file_manager" / "a.jpg")
    recorded(s3_bucket, media_root, "b.jpg", data, upload=bytes(reversed(data)), write_local=False)

    report = purge()

    assert problems(report) == [("b.jpg", "not_proven"), ("file_manager/a.jpg", "not_proven")]
    assert "one file with 'b.jpg'" in next(p.detail for p in report.problems if p.name != "b.jpg")
    assert (media_root / "b.jpg").read_bytes() == data
    assert report.purged == 0


def test_two_spellings_one_with_a_contradicting_checksum_keep_the_file(
    s3_bucket: str, media_root: Path
) -> None:
    recorded(s3_bucket, media_root, "file_manager/y.txt", b"the bytes on disk")
    FileManager.objects.create(
        file="file_manager//y.txt",
        bucket=s3_bucket,
        object_key="file_manager/y.txt",
        checksum=md5(b"other bytes"),
    )

    report = purge()

    assert {k for _, k in problems(report)} == {"checksum_mismatch"}
    assert (media_root / "file_manager/y.txt").is_file()


def test_a_symlink_and_its_target_both_proven_free_the_bytes_once(
    s3_bucket: str, media_root: Path
) -> None:
    data = b"a" * 1000
    recorded(s3_bucket, media_root, "file_manager/a.jpg", data)
    (media_root / "b.jpg").symlink_to(media_root / "file_manager" / "a.jpg")
    recorded(s3_bucket, media_root, "b.jpg", data, write_local=False)

    report = purge()

    assert on_disk(media_root) == []
    assert (report.purged, report.bytes_purged, report.problems) == (2, 1000, [])


def test_hard_links_both_recorded_go_together_and_count_once(
    s3_bucket: str, media_root: Path
) -> None:
    data = b"h" * 1000
    recorded(s3_bucket, media_root, "file_manager/h.txt", data)
    os.link(media_root / "file_manager/h.txt", media_root / "file_manager/h2.txt")
    recorded(s3_bucket, media_root, "file_manager/h2.txt", data, write_local=False)

    report = purge()

    assert on_disk(media_root) == []
    assert (report.purged, report.bytes_purged, report.problems) == (2, 1000, [])


# --- rows of fields not walked ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["double slash", "dot", "symlink"])
def test_another_model_not_walked_sharing_under_another_name_keeps_the_file(
    s3_bucket: str, media_root: Path, how: str
) -> None:
    (row,) = migrated(1)
    name = str(row.file.name)
    folder, base = name.rsplit("/", 1)
    if how == "double slash":
        other = f"{folder}//{base}"
    elif how == "dot":
        other = f"{folder}/./{base}"
    else:
        other = "attachments/same.jpg"
        (media_root / "attachments").mkdir()
        (media_root / other).symlink_to(media_root / name)
    Attachment.objects.create(upload=other)

    report = purge()

    assert report.purged == 0
    assert (media_root / name).is_file()


def test_another_model_on_the_fallback_storage_keeps_the_file(
    s3_bucket: str, media_root: Path, settings: Any
) -> None:
    (row,) = migrated(1)
    name = str(row.file.name)
    Attachment.objects.create(upload=name)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storage_migrate.storage.FallbackStorage",
            "OPTIONS": {"primary": "s3", "fallback": "local"},
        },
    }
    reset_storages()

    report = purge()

    assert report.purged == 0
    assert (media_root / name).is_file()


@pytest.fixture
def nested_model(media_root: Path) -> Any:
    """A model whose storage keeps its files in a folder inside MEDIA_ROOT (its names relative
    to that folder); unregistered afterwards."""
    from django.apps import apps
    from django.core.files.storage import FileSystemStorage

    storage = FileSystemStorage(location=str(media_root / "file_manager"))

    class Nested(models.Model):
        upload = models.FileField(upload_to="", storage=storage, blank=True)

        class Meta:
            app_label = "testapp"
            db_table = "testapp_zz_nested"

        def __str__(self) -> str:
            return str(self.upload.name)

    key = "serial PRIMARY KEY" if connection.vendor == "postgresql" else "integer PRIMARY KEY"
    with connection.cursor() as cursor:  # in the test's transaction: gone with it
        cursor.execute(f"CREATE TABLE testapp_zz_nested (id {key}, upload varchar(100) NOT NULL)")
    yield Nested
    apps.all_models["testapp"].pop("nested", None)
    apps.clear_cache()


def test_a_model_on_a_storage_nested_in_the_source_keeps_the_file(
    s3_bucket: str, media_root: Path, nested_model: Any
) -> None:
    (row,) = migrated(1)
    name = str(row.file.name)
    nested_model.objects.create(upload=name.split("/", 1)[1])  # the same file, named there

    report = purge()

    assert report.purged == 0
    assert (media_root / name).is_file()


@pytest.mark.parametrize("change", ["new row", "row moved back"])
def test_a_row_changed_during_the_purge_keeps_its_file(
    s3_bucket: str, media_root: Path, change: str
) -> None:
    """After the walk, a row comes to name a file about to go without recording it at S3 (a
    new row re-attaching an old file; a concurrent move back): the rows are read again before
    the deletes."""
    rows = migrated(3)

    def meanwhile(total: int) -> None:  # right after the walk and the check of shared files
        if change == "new row":
            FileManager.objects.create(file=rows[2].file.name)
        else:
            FileManager.objects.filter(pk=rows[2].pk).update(bucket="")

    report = purge(on_start=meanwhile)

    assert [(p.pk, p.kind) for p in report.problems] == [(rows[2].pk, "not_recorded")]
    assert "changed during the purge" in report.problems[0].detail or change == "new row"
    assert (media_root / str(rows[2].file.name)).is_file()
    assert report.purged == 2


# --- races with a new upload ------------------------------------------------------------------


def test_a_new_upload_between_the_last_check_and_the_unlink_survives(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (row,) = migrated(1)
    path = media_root / str(row.file.name)
    from storage_migrate.endpoints.local import LocalEndpoint

    original = LocalEndpoint.open_folder_checked

    def then_replaced(self: Any, name: str, **kwargs: Any) -> Any:
        if name == row.file.name and path.read_bytes() != b"a new upload, nowhere else":
            replace_file(path, b"a new upload, nowhere else")
        return original(self, name, **kwargs)

    monkeypatch.setattr(LocalEndpoint, "open_folder_checked", then_replaced)

    report = purge()

    assert path.read_bytes() == b"a new upload, nowhere else"
    assert [p.kind for p in report.problems] == ["error"]
    assert "source changed" in report.problems[0].detail


def test_a_new_upload_during_the_quarantine_move_survives(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (row,) = migrated(1)
    path = media_root / str(row.file.name)
    real_link = os.link

    def link_then_replaced(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_link(src, dst, *args, **kwargs)
        replace_file(path, b"a new upload, nowhere else")

    monkeypatch.setattr(os, "link", link_then_replaced)

    report = purge(quarantine="trash")

    assert report.purged == 1
    assert path.read_bytes() == b"a new upload, nowhere else"
    assert (media_root / "trash" / str(row.file.name)).read_bytes() == s3_bytes(
        s3_bucket, str(row.file.name)
    )


class _ClientProxy:
    """The endpoint's S3 client with one method replaced."""

    def __init__(self, client: Any, **methods: Any) -> None:
        self._client, self._methods = client, methods

    def __getattr__(self, name: str) -> Any:
        if name in self._methods:
            return lambda *a, **k: self._methods[name](self._client, *a, **k)
        return getattr(self._client, name)


def _patch_client(monkeypatch: pytest.MonkeyPatch, **methods: Any) -> None:
    from storage_migrate.endpoints.s3 import S3Endpoint

    real = S3Endpoint.client.func  # type: ignore[attr-defined]
    monkeypatch.setattr(
        S3Endpoint, "client", property(lambda self: _ClientProxy(real(self), **methods))
    )


def test_a_new_upload_during_the_s3_quarantine_copy_survives(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (row,) = way_back(1)
    key = str(row.file.name)

    def copy_then_upload(client: Any, *args: Any, **kwargs: Any) -> Any:
        result = client.copy(*args, **kwargs)
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"new upload, only here")
        return result

    _patch_client(monkeypatch, copy=copy_then_upload)

    report = purge_the_bucket(quarantine="trash", workers=1)

    assert [p.kind for p in report.problems] == ["error"]
    assert s3_bytes(s3_bucket, key) == b"new upload, only here"


def test_the_s3_delete_is_pinned_to_the_proven_etag(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the store honours If-Match on DELETE, a new upload in the last instant is not
    deleted either: the header goes with the proven ETag."""
    (row,) = way_back(1)
    etag = s3_client().head_object(Bucket=s3_bucket, Key=str(row.file.name))["ETag"]
    sent: list[dict[str, Any]] = []

    def delete_object(client: Any, **kwargs: Any) -> Any:
        sent.append(kwargs)
        return client.delete_object(**kwargs)

    _patch_client(monkeypatch, delete_object=delete_object)

    report = purge_the_bucket()

    assert report.purged == 1
    assert [(k["Key"], k.get("IfMatch")) for k in sent] == [(str(row.file.name), etag)]


def test_a_store_that_refuses_if_match_on_delete_still_purges(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    way_back(1)

    def delete_object(client: Any, **kwargs: Any) -> Any:
        if "IfMatch" in kwargs:
            error = {
                "Error": {"Code": "NotImplemented"},
                "ResponseMetadata": {"HTTPStatusCode": 501},
            }
            raise ClientError(error, "DeleteObject")
        return client.delete_object(**kwargs)

    _patch_client(monkeypatch, delete_object=delete_object)

    report = purge_the_bucket()

    assert (report.purged, report.problems, s3_keys(s3_bucket)) == (1, [], [])


# --- the quarantine ---------------------------------------------------------------------------


def test_an_s3_quarantine_copy_that_is_not_the_source_keeps_the_source(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (row,) = way_back(1)
    name = str(row.file.name)

    def faulty_copy(client: Any, source: Any, bucket: str, key: str, **kwargs: Any) -> None:
        size = client.head_object(**source)["ContentLength"]
        client.put_object(Bucket=bucket, Key=key, Body=b"?" * size)

    _patch_client(monkeypatch, copy=faulty_copy)

    report = purge_the_bucket(quarantine="trash")

    assert [p.kind for p in report.problems] == ["error"]
    assert md5(s3_bytes(s3_bucket, name)) == row.checksum


def test_a_local_quarantine_interrupted_after_its_link_is_finished_by_a_rerun(
    s3_bucket: str, media_root: Path
) -> None:
    rows = migrated(2)
    name = str(rows[0].file.name)
    (media_root / "trash" / name).parent.mkdir(parents=True)
    os.link(media_root / name, media_root / "trash" / name)  # what the killed run did

    report = purge(quarantine="trash")

    assert (report.purged, report.problems) == (2, [])
    assert on_disk(media_root) == sorted(f"trash/{r.file.name}" for r in rows)


def test_an_s3_quarantine_interrupted_after_its_copy_is_finished_by_a_rerun(
    s3_bucket: str, media_root: Path
) -> None:
    rows = way_back(2)
    name = str(rows[0].file.name)
    s3_client().copy_object(
        Bucket=s3_bucket, Key=f"trash/{name}", CopySource={"Bucket": s3_bucket, "Key": name}
    )  # what the killed run did

    report = purge_the_bucket(quarantine="trash")

    assert report.problems == []
    assert s3_keys(s3_bucket) == sorted(f"trash/{r.file.name}" for r in rows)


def test_a_quarantine_in_the_upload_folder_of_a_model_not_walked_is_refused(
    s3_bucket: str, media_root: Path
) -> None:
    migrated(1)
    message = refused(
        "--from", "local", "--verified-against", "s3", "--model", "core.FileManager",
        "--quarantine", "attachments",
    )  # fmt: skip
    assert "overlaps the upload folder of testapp.Attachment" in message
    assert len(on_disk(media_root)) == 1


@pytest.mark.parametrize("prefix", ["trash\x00", "x" * 2000])
def test_a_quarantine_no_storage_can_hold_is_refused(
    s3_bucket: str, media_root: Path, prefix: str
) -> None:
    migrated(1)
    refused("--from", "local", "--verified-against", "s3", "--quarantine", prefix)
    with pytest.raises(ConfigurationError):
        purge(quarantine=prefix)
    assert len(on_disk(media_root)) == 1


# --- ages, proofs ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1.0, float("-inf"), float("nan"), float("inf")])
def test_a_bad_min_age_through_the_api_is_refused(
    s3_bucket: str, media_root: Path, value: float
) -> None:
    migrated(1)
    with pytest.raises(ConfigurationError, match="min_age"):
        purge(min_age=value)
    assert len(on_disk(media_root)) == 1


def test_min_age_on_the_way_back_is_when_the_local_copy_was_written(
    s3_bucket: str, media_root: Path
) -> None:
    """Copies restored with an old mtime (cp -p, rsync -a, touch) are as young as their write."""
    import time

    rows = way_back(2)
    month_ago = time.time() - 30 * 86400
    for row in rows:
        os.utime(media_root / str(row.file.name), (month_ago, month_ago))

    report = purge_the_bucket(min_age=7 * 86400)

    assert (report.purged, report.too_young) == (0, 2)
    assert len(s3_keys(s3_bucket)) == 2


def multipart_upload(bucket: str, key: str, parts: list[bytes]) -> None:
    client = s3_client()
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    done: list[Any] = []
    for number, body in enumerate(parts, 1):
        answer = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=body
        )
        done.append({"ETag": answer["ETag"], "PartNumber": number})
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )


def test_equal_multipart_etags_still_check_the_rows_checksum(
    s3_bucket: str, media_root: Path, settings: Any
) -> None:
    """--from s3 --verified-against s3b: both hold the same bytes in the same parts, but not the
    bytes the row's checksum records (both rewritten since the copy)."""
    other = f"{s3_bucket}-b"
    s3_client().create_bucket(Bucket=other)
    s3b = {**settings.STORAGES["s3"]}
    s3b["OPTIONS"] = {**s3b.get("OPTIONS", {}), "bucket_name": other}
    settings.STORAGES = {**settings.STORAGES, "s3b": s3b}
    reset_storages()
    data = os.urandom(11 * MiB)
    parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    for bucket in (s3_bucket, other):
        multipart_upload(bucket, "file_manager/m.bin", parts)
    FileManager.objects.create(
        file="file_manager/m.bin",
        bucket=other,
        object_key="file_manager/m.bin",
        checksum=md5(b"what was copied, long ago"),
        file_size=len(data),
    )

    report = purge_source(source="s3", verified_against="s3b", models=["core.FileManager"])

    assert problems(report) == [("file_manager/m.bin", "checksum_mismatch")]
    assert "file_manager/m.bin" in s3_keys(s3_bucket)


def test_a_new_upload_between_the_check_and_the_rename_is_put_back(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is checked, then a new upload replaces it, then the name is renamed aside: what
    was renamed is not what was checked, and it goes back under its name."""
    (row,) = migrated(1)
    path = media_root / str(row.file.name)
    replaced_before_the_rename(monkeypatch, path)

    report = purge()

    assert [p.kind for p in report.problems] == ["error"]
    assert path.read_bytes() == b"a new upload, nowhere else"
    assert on_disk(media_root) == [str(row.file.name)]  # nothing left aside


def test_a_relative_symlink_and_its_target_go_to_the_quarantine_together(
    s3_bucket: str, media_root: Path
) -> None:
    data = b"r" * 500
    recorded(s3_bucket, media_root, "file_manager/a.jpg", data)
    (media_root / "b.jpg").symlink_to("file_manager/a.jpg")  # relative: broken once moved
    recorded(s3_bucket, media_root, "b.jpg", data, write_local=False)

    report = purge(quarantine="trash")

    assert (report.purged, report.bytes_purged, report.problems) == (2, 500, [])
    assert (media_root / "trash/file_manager/a.jpg").read_bytes() == data
    assert (media_root / "trash/b.jpg").is_symlink()
    assert sorted(on_disk(media_root)) == ["trash/b.jpg", "trash/file_manager/a.jpg"]


@pytest.mark.parametrize("quarantine", [None, "trash"])
def test_a_name_at_the_file_name_limit_is_purged(
    s3_bucket: str, media_root: Path, quarantine: str | None
) -> None:
    """62 four-byte characters: 252 bytes, near the 255 a file name may have; the name it is
    renamed aside to must fit too."""
    name = "file_manager/" + "𝄞" * 62 + ".txt"
    recorded(s3_bucket, media_root, name, b"long name")

    report = purge(quarantine=quarantine)

    assert (report.purged, report.problems) == (1, [])
    assert on_disk(media_root) == ([] if quarantine is None else [f"trash/{name}"])
