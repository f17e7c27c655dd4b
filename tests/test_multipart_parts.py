"""Multipart uploads: each part's Content-MD5 comes from the read that hashed the file (no second
pass over its bytes), and whatever happens between that read and the upload (the file changed,
a completion answer that names another ETag, connections dropped mid-upload), no row is
committed unless the object holds the bytes that were hashed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from core.models import FileManager
from storage_migrate import migrate_storage
from storage_migrate.endpoints import s3write
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages
from tests.faults import faulty_proxy
from tests.helpers import MiB, kinds, md5

pytestmark = pytest.mark.django_db

NAME = "file_manager/2024/01/01/video.bin"


def big_file(media_root: Path, size: int = 11 * MiB) -> bytes:
    data = os.urandom(size)
    path = media_root / NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    FileManager.objects.create(file=NAME)
    return data


def through(settings: Any, bucket: str, url: str) -> None:
    settings.AWS_STORAGE_BUCKET_NAME = bucket
    settings.AWS_S3_ENDPOINT_URL = url
    settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": 5 * MiB, "MULTIPART_CHUNKSIZE": 5 * MiB}
    reset_storages()


def rehashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the parts whose Content-MD5 was computed from their body as they were sent."""
    calls: list[int] = []
    real = s3write._add_content_md5

    def counting(params: dict[str, Any], **kw: Any) -> None:
        calls.append(1)
        real(params, **kw)

    monkeypatch.setattr(s3write, "_add_content_md5", counting)
    return calls


def test_each_part_carries_the_md5_of_the_read_that_hashed_it(
    moto_endpoint: str,
    http_bucket: str,
    settings: Any,
    media_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = big_file(media_root)
    calls = rehashed(monkeypatch)
    with faulty_proxy(moto_endpoint, rate=0, check_md5=True) as proxy:
        through(settings, http_bucket, proxy.url)

        report = migrate_storage(to="s3")

    assert (report.copied, list(report.problems)) == (1, [])
    assert calls == []  # no part was read a second time to be hashed
    body = s3_client(moto_endpoint).get_object(Bucket=http_bucket, Key=NAME)["Body"].read()
    assert body == data
    assert FileManager.objects.get().checksum == md5(data)


@pytest.mark.parametrize("check_md5", [True, False], ids=["store-checks-md5", "store-does-not"])
def test_a_file_changed_between_its_hash_and_its_upload_is_never_committed(
    moto_endpoint: str,
    http_bucket: str,
    settings: Any,
    media_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    check_md5: bool,
) -> None:
    data = big_file(media_root)
    real = s3write.S3Engine.abort_leftovers

    def changing(self: Any, key: str) -> int:
        # After the read that hashed it, before the parts are sent: same size, other bytes.
        with open(media_root / NAME, "r+b") as f:
            f.seek(6 * MiB)
            f.write(b"x" * 1000)
        return real(self, key)

    monkeypatch.setattr(s3write.S3Engine, "abort_leftovers", changing)
    with faulty_proxy(moto_endpoint, rate=0, check_md5=check_md5) as proxy:
        through(settings, http_bucket, proxy.url)

        report = migrate_storage(to="s3")

    assert report.copied == 0
    assert len(report.problems) == 1
    row = FileManager.objects.get()
    assert row.bucket in ("", None)  # still recorded on local disk
    assert row.checksum in ("", None, md5(data))
    # No object that holds other bytes than the ones hashed stays under the name.
    listed = s3_client(moto_endpoint).list_objects_v2(Bucket=http_bucket).get("Contents", [])
    assert [o["Key"] for o in listed if o["Key"] == NAME] == []


def test_a_completion_answer_naming_another_etag_is_not_taken_for_the_object(
    moto_endpoint: str,
    http_bucket: str,
    settings: Any,
    media_root: Path,
) -> None:
    data = big_file(media_root)
    with faulty_proxy(
        moto_endpoint, rate=0, check_md5=True, complete_answers=("wrong_etag",)
    ) as proxy:
        through(settings, http_bucket, proxy.url)

        report = migrate_storage(to="s3")

    # Proven by what the store says of the object itself (its part layout), not by the answer.
    assert (report.copied, list(report.problems)) == (1, [])
    assert FileManager.objects.get().checksum == md5(data)
    s3 = s3_client(moto_endpoint)
    assert s3.get_object(Bucket=http_bucket, Key=NAME)["Body"].read() == data


@pytest.mark.parametrize("fault", ["drop", "lost_answer"])
def test_connections_dropped_mid_upload_leave_a_proven_object_or_none(
    moto_endpoint: str,
    http_bucket: str,
    settings: Any,
    media_root: Path,
    fault: str,
) -> None:
    data = big_file(media_root, 16 * MiB)
    with faulty_proxy(moto_endpoint, rate=0.3, seed=3, check_md5=True) as proxy:
        proxy.draw = lambda: (  # type: ignore[method-assign]
            fault if proxy.random.random() < proxy.rate else None
        )
        through(settings, http_bucket, proxy.url)

        report = migrate_storage(to="s3")

    row = FileManager.objects.get()
    if report.copied:
        body = s3_client(moto_endpoint).get_object(Bucket=http_bucket, Key=NAME)["Body"].read()
        assert body == data
        assert row.checksum == md5(data)
    else:
        assert kinds(report) == ["error"], list(report.problems)
        assert row.bucket in ("", None)
    # A re-run on a store that no longer fails finishes it.
    through(settings, http_bucket, moto_endpoint)
    again = migrate_storage(to="s3")
    assert again.copied + again.skipped == 1, list(again.problems)
    body = s3_client(moto_endpoint).get_object(Bucket=http_bucket, Key=NAME)["Body"].read()
    assert body == data
