"""Server-side copies between two S3 storages on one store: no byte through this process, the
destination's whole header set, the source pinned, no overwrite, and every copy proven (a
source replaced during the copy, a 200 answer with an error or without an ETag, a foreign
object under the name)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from core.models import FileManager
from storage_migrate import migrate_storage
from storage_migrate.endpoints import s3copy
from storage_migrate.endpoints.s3 import S3Endpoint
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages
from tests.helpers import MiB, kinds, make, md5, s3_bytes, s3_keys

NEW = "test-new-bucket"


def new_alias(
    settings: Any, endpoint_url: str | None = None, bucket: str = NEW, **options: Any
) -> None:
    """An `s3_new` alias: a second bucket on the same store (and keys) as `s3`."""
    storages = dict(settings.STORAGES)
    storages["s3_new"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": bucket, "endpoint_url": endpoint_url, **options},
    }
    settings.STORAGES = storages
    reset_storages()


@pytest.fixture
def two_buckets(s3_bucket: str, settings: Any) -> Iterator[str]:
    """Rows whose files are in the `s3` bucket (moved there by a streamed run), and an empty
    second bucket behind the `s3_new` alias."""
    s3_client().create_bucket(Bucket=NEW)
    new_alias(settings)
    yield s3_bucket


@pytest.fixture
def no_downloads() -> Iterator[mock.MagicMock]:
    """Fails the test if any object is read through this process."""
    with mock.patch.object(
        S3Endpoint, "open_info", side_effect=AssertionError("an object was downloaded")
    ) as spy:
        yield spy


def to_s3(*files: tuple[str, bytes]) -> list[FileManager]:
    rows = [make(name, data) for name, data in files]
    report = migrate_storage(to="s3")
    assert (report.copied, report.copied_server_side, list(report.problems)) == (len(rows), 0, [])
    return rows


FILES = (
    ("docs/a report + notes 100%.txt", b"quarterly figures\n" * 100),
    ("docs/caf\u00e9 & cr\u00e8me.csv", b"a,b\n1,2\n"),
    ("docs/empty.txt", b""),
    ("video/clip.mp4", os.urandom(3 * MiB)),
)


@pytest.mark.django_db
def test_copies_stay_inside_the_store(two_buckets: str, no_downloads: Any) -> None:
    rows = to_s3(*FILES)
    report = migrate_storage(to="s3_new", source="s3")
    assert list(report.problems) == []
    assert (report.copied, report.copied_server_side) == (4, 4)
    assert report.totals["copied_server_side"] == 4
    assert "4 server-side, 0 streamed" in report.summary()
    client = s3_client()
    for row, (_name, data) in zip(rows, FILES, strict=True):
        row.refresh_from_db()
        key = str(row.file.name)
        assert s3_bytes(NEW, key) == data
        assert (row.bucket, row.object_key, row.checksum) == (NEW, key, md5(data))
        head = client.head_object(Bucket=NEW, Key=key)
        # The destination storage's whole header set, not the source object's.
        assert head["CacheControl"] == "max-age=86400"
        assert head["ContentType"] == row.content_type
        assert head["Metadata"]["md5"] == md5(data)
    assert no_downloads.call_count == 0
    again = migrate_storage(to="s3_new", source="s3")
    assert (again.copied, again.skipped, list(again.problems)) == (0, 4, [])


@pytest.mark.django_db
def test_the_route_follows_the_settings_and_the_keys(two_buckets: str, settings: Any) -> None:
    to_s3(*FILES[:2])
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "SERVER_SIDE_COPY": "never"}
    streamed = migrate_storage(to="s3_new", source="s3", dry_run=True)
    assert (streamed.copied, streamed.copied_server_side) == (2, 0)
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "SERVER_SIDE_COPY": "auto"}
    predicted = migrate_storage(to="s3_new", source="s3", dry_run=True)
    assert (predicted.copied, predicted.copied_server_side) == (2, 2)
    assert "would copy 2 files" in predicted.summary()
    # Other keys for the destination: its client may not read the source's bucket.
    new_alias(settings, access_key="other", secret_key="other")
    other = migrate_storage(to="s3_new", source="s3")
    assert (other.copied, other.copied_server_side, list(other.problems)) == (2, 0, [])


def multipart_source(bucket: str, key: str, data: bytes, part: int = 5 * MiB) -> str:
    """Replace an object with an upload of ``data`` in parts (its ETag is not its MD5)."""
    client = s3_client()
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    parts: list[Any] = []
    for number, start in enumerate(range(0, len(data), part), 1):
        answer = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data[start : start + part],
        )
        parts.append({"ETag": answer["ETag"], "PartNumber": number})
    done = client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    return str(done["ETag"]).strip('"')


@pytest.mark.django_db
def test_a_multipart_source_is_proven_by_the_copy_etag(two_buckets: str, no_downloads: Any) -> None:
    data = os.urandom(12 * MiB)
    (row,) = to_s3(("video/parts.mp4", data))
    etag = multipart_source(two_buckets, str(row.file.name), data)
    assert etag.endswith("-3")
    report = migrate_storage(to="s3_new", source="s3")
    assert (report.copied_server_side, list(report.problems)) == (1, [])
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (NEW, md5(data))
    assert s3_bytes(NEW, str(row.file.name)) == data


@pytest.mark.django_db
def test_above_the_cutoff_parts_follow_the_source_layout(two_buckets: str, settings: Any) -> None:
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "COPY_CUTOFF": 5 * MiB}
    data = os.urandom(12 * MiB + 3)
    (row,) = to_s3(("video/big.mp4", data))
    etag = multipart_source(two_buckets, str(row.file.name), data)
    read: list[str] = []
    original = S3Endpoint.open_info

    def spy(endpoint: S3Endpoint, name: str) -> Any:
        read.append(endpoint.bucket)
        return original(endpoint, name)

    with mock.patch.object(S3Endpoint, "open_info", spy):
        report = migrate_storage(to="s3_new", source="s3")
    assert (report.copied_server_side, list(report.problems)) == (1, [])
    head = s3_client().head_object(Bucket=NEW, Key=str(row.file.name))
    # Parts of the source's size: the copy has the source's ETag, which proves the bytes
    # equal; their MD5, which the row's checksum is compared with, is read from the copy once
    # (never taken from the row: a stale checksum is reported, as a streamed copy reports it).
    assert read == [NEW]
    assert head["ETag"].strip('"') == etag
    assert head["CacheControl"] == "max-age=86400"
    assert s3_bytes(NEW, str(row.file.name)) == data


@pytest.mark.django_db
def test_above_the_cutoff_without_a_checksum_the_copy_is_read(
    two_buckets: str, settings: Any
) -> None:
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "COPY_CUTOFF": 5 * MiB}
    data = os.urandom(11 * MiB)
    (row,) = to_s3(("video/unknown.mp4", data))
    multipart_source(two_buckets, str(row.file.name), data)
    FileManager.objects.filter(pk=row.pk).update(checksum="")
    read: list[str] = []
    original = S3Endpoint.open_info

    def spy(endpoint: S3Endpoint, name: str) -> Any:
        read.append(endpoint.bucket)
        return original(endpoint, name)

    with mock.patch.object(S3Endpoint, "open_info", spy):
        report = migrate_storage(to="s3_new", source="s3")
    assert (report.copied_server_side, list(report.problems)) == (1, [])
    assert read == [NEW]  # the copy, in the source's layout: never the source
    row.refresh_from_db()
    assert row.checksum == md5(data)


@pytest.mark.django_db
def test_a_foreign_object_under_the_name_is_a_conflict(two_buckets: str) -> None:
    (row,) = to_s3(("docs/contract.pdf", b"the signed contract"))
    key = str(row.file.name)
    s3_client().put_object(Bucket=NEW, Key=key, Body=b"someone else's file")
    report = migrate_storage(to="s3_new", source="s3")
    assert (report.copied, kinds(report)) == (0, ["conflict"])
    assert s3_bytes(NEW, key) == b"someone else's file"
    row.refresh_from_db()
    assert row.bucket == two_buckets


def replacing_source_first(bucket: str, key: str, data: bytes, *, parts: bool) -> Any:
    """ServerCopy._call that replaces the source right before the first copy request (moto,
    like rclone serve s3, ignores x-amz-copy-source-if-match: the pin alone does not hold)."""
    original = s3copy.ServerCopy._call
    done: list[bool] = []

    def call(self: s3copy.ServerCopy, method: Any, **kwargs: Any) -> Any:
        if not done and "CopySource" in kwargs:
            done.append(True)
            if parts:
                multipart_source(bucket, key, data)
            else:
                s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return original(self, method, **kwargs)

    return mock.patch.object(s3copy.ServerCopy, "_call", call)


@pytest.mark.django_db
@pytest.mark.parametrize("parts", [False, True], ids=["single-part", "multipart"])
def test_a_source_replaced_during_the_copy_is_never_committed(
    two_buckets: str, parts: bool
) -> None:
    data = os.urandom(11 * MiB)
    (row,) = to_s3(("docs/photo.jpg", data))
    key = str(row.file.name)
    if parts:  # the source's ETag is not its MD5; the row keeps no checksum
        multipart_source(two_buckets, key, data)
        FileManager.objects.filter(pk=row.pk).update(checksum="")
    other = os.urandom(11 * MiB)
    with replacing_source_first(two_buckets, key, other, parts=parts):
        report = migrate_storage(to="s3_new", source="s3")
    assert report.copied == 0
    assert kinds(report) == ["error"], [p.detail for p in report.problems]
    assert s3_keys(NEW) == []  # the copy of other bytes was removed
    row.refresh_from_db()
    assert row.bucket == two_buckets


@pytest.mark.django_db
def test_a_copy_that_cannot_be_proven_is_unverifiable(two_buckets: str) -> None:
    """A multipart source whose layout the store does not tell, no checksum in the row, a store
    that does not pin copies: the copy is removed and the row says why."""
    data = os.urandom(11 * MiB)
    (row,) = to_s3(("docs/scan.tiff", data))
    key = str(row.file.name)
    multipart_source(two_buckets, key, data)
    FileManager.objects.filter(pk=row.pk).update(checksum="")
    with mock.patch.object(S3Endpoint, "part_size", return_value=None):
        report = migrate_storage(to="s3_new", source="s3")
    assert kinds(report) == ["unverifiable"]
    assert s3_keys(NEW) == []
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (two_buckets, "")


@pytest.mark.django_db
def test_a_pinned_store_proves_what_it_copied(two_buckets: str, no_downloads: Any) -> None:
    """Where the store honours x-amz-copy-source-if-match, the copy is of the version headed:
    its MD5 is proven without a read, and is the row's."""
    data = os.urandom(11 * MiB)
    (row,) = to_s3(("docs/plan.dwg", data))
    multipart_source(two_buckets, str(row.file.name), data)
    FileManager.objects.filter(pk=row.pk).update(checksum="")
    support = s3copy.CopySupport(pins_source=True, conditional_copy=False, part_copy=True)
    with mock.patch.object(s3copy, "_probe", return_value=support):
        report = migrate_storage(to="s3_new", source="s3")
    assert (report.copied_server_side, list(report.problems)) == (1, [])
    row.refresh_from_db()
    assert row.checksum == md5(data)


def copy_requests(sent: list[dict[str, Any]]) -> Any:
    """Records the parameters of every copy request."""
    original = s3copy.ServerCopy._call

    def call(self: s3copy.ServerCopy, method: Any, **kwargs: Any) -> Any:
        sent.append({"operation": method.__name__, **kwargs})
        return original(self, method, **kwargs)

    return mock.patch.object(s3copy.ServerCopy, "_call", call)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("conditional_copy", "operations"),
    [
        (True, ["copy_object"]),
        (False, ["upload_part_copy", "complete_multipart_upload"]),
    ],
)
def test_every_request_pins_the_source_and_never_overwrites(
    two_buckets: str, conditional_copy: bool, operations: list[str]
) -> None:
    (row,) = to_s3(("docs/a.txt", b"pinned"))
    support = s3copy.CopySupport(
        pins_source=False, conditional_copy=conditional_copy, part_copy=True
    )
    sent: list[dict[str, Any]] = []
    with mock.patch.object(s3copy, "_probe", return_value=support), copy_requests(sent):
        report = migrate_storage(to="s3_new", source="s3")
    assert list(report.problems) == []
    assert [s["operation"] for s in sent] == operations
    source_etag = f'"{md5(b"pinned")}"'
    for request in sent:
        if "CopySource" in request:
            assert request["CopySourceIfMatch"] == source_etag
        else:
            assert request["IfNoneMatch"] == "*"  # the conditional completion
    if conditional_copy:
        assert sent[0]["IfNoneMatch"] == "*"
        assert sent[0]["MetadataDirective"] == "REPLACE"
        assert sent[0]["CacheControl"] == "max-age=86400"
    assert s3_bytes(NEW, str(row.file.name)) == b"pinned"


@pytest.mark.django_db
@pytest.mark.parametrize("answer", ["error_in_200", "no_etag"])
def test_a_200_answer_is_parsed(
    http_bucket: str, s3_endpoint: str, through_proxy: Any, settings: Any, answer: str
) -> None:
    """S3 can answer a copy with 200 and an error in the body, or a body without the ETag: the
    first is retried, the second never taken for a proof (a re-run proves what was copied)."""
    proxy = through_proxy(copy_answers=(answer,))
    new = f"new-{uuid.uuid4().hex[:12]}"  # moto's server outlives the test
    s3_client(s3_endpoint).create_bucket(Bucket=new)
    new_alias(settings, endpoint_url=proxy.url, bucket=new)
    data = b"an invoice"
    (row,) = to_s3(("docs/invoice.pdf", data))
    report = migrate_storage(to="s3_new", source="s3")
    key = str(row.file.name)
    if answer == "error_in_200":
        assert (report.copied_server_side, list(report.problems)) == (1, [])
        assert proxy.copies >= 2  # the error, then the retried copy
    else:
        assert kinds(report) == ["error"]
        row.refresh_from_db()
        assert row.bucket == http_bucket
        # The upload of that part was aborted (or, as one CopyObject, its copy is proven now).
        again = migrate_storage(to="s3_new", source="s3")
        assert (again.copied + again.skipped, list(again.problems)) == (1, [])
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (new, md5(data))
    assert bytes(s3_client(s3_endpoint).get_object(Bucket=new, Key=key)["Body"].read()) == data
