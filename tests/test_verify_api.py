"""storage_migrate.verify_files(): every outcome kind, on local disk and on S3 (moto)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage, verify_files
from storage_migrate.testing import s3_client
from storage_migrate.verify import run as verification_module
from tests.helpers import MiB, kinds, make, md5

pytestmark = pytest.mark.django_db


@pytest.fixture
def where(request: pytest.FixtureRequest, media_root: Path) -> Any:
    """Rows whose files are on local disk, or migrated to S3 (verified there with --storage s3),
    with a way to overwrite a row's stored bytes behind the tool's back."""

    class Where:
        storage = request.param

        def setup(self) -> None:
            if self.storage == "s3":
                request.getfixturevalue("s3_bucket")
                assert migrate_storage(to="s3").problems == []

        def overwrite(self, row: FileManager, data: bytes) -> None:
            if self.storage == "s3":
                s3_client().put_object(
                    Bucket=row.bucket, Key=row.object_key, Body=data, ContentType=row.content_type
                )
            else:
                (media_root / row.file.name).write_bytes(data)

        def remove(self, row: FileManager) -> None:
            if self.storage == "s3":
                s3_client().delete_object(Bucket=row.bucket, Key=row.object_key)
            else:
                (media_root / row.file.name).unlink()

        def add(self, name: str, data: bytes) -> None:
            if self.storage == "s3":
                bucket = FileManager.objects.exclude(bucket="").values_list("bucket", flat=True)[0]
                s3_client().put_object(Bucket=bucket, Key=name, Body=data)
            else:
                (media_root / name).parent.mkdir(parents=True, exist_ok=True)
                (media_root / name).write_bytes(data)

        def verify(self, **kwargs: Any) -> Any:
            return verify_files(storage=self.storage, **kwargs)

    return Where()


both = pytest.mark.parametrize("where", ["local", "s3"], indirect=True)


@both
def test_every_row_ok(where: Any) -> None:
    rows = [make(f"ok {i}.txt", os.urandom(100 + i)) for i in range(4)]
    where.setup()

    report = where.verify()

    assert (report.rows, report.ok, report.problems, report.exit_code) == (4, 4, [], 0)
    assert report.totals["unchecked"] == 0
    # S3 proves MD5s by ETag without reading; local files are read and hashed.
    assert report.downloaded == (0 if where.storage == "s3" else len(rows))


@both
def test_missing(where: Any) -> None:
    make("kept.txt", b"kept")
    gone = make("gone.txt", b"gone")
    where.setup()
    gone.refresh_from_db()
    where.remove(gone)

    report = where.verify()

    assert [(p.kind, p.pk) for p in report.problems] == [("missing", gone.pk)]
    assert report.exit_code == 1


@both
def test_same_size_corruption_is_caught_at_checksum_level(where: Any) -> None:
    row = make("doc.pdf", b"A" * 500)
    where.setup()
    row.refresh_from_db()
    where.overwrite(row, b"B" * 500)

    assert where.verify(level="size").problems == []
    report = where.verify(level="checksum")

    [problem] = report.problems
    assert (problem.kind, problem.pk) == ("checksum_mismatch", row.pk)
    assert (problem.expected, problem.actual) == (md5(b"A" * 500), md5(b"B" * 500))


@both
def test_size_mismatch_wins_over_checksum(where: Any) -> None:
    row = make("doc.pdf", b"A" * 500)
    where.setup()
    row.refresh_from_db()
    where.overwrite(row, b"B" * 499)

    assert where.verify(level="exists").problems == []
    report = where.verify(level="size")

    assert [(p.kind, p.expected, p.actual) for p in report.problems] == [
        ("size_mismatch", 500, 499)
    ]
    assert kinds(where.verify()) == ["size_mismatch"]


@both
def test_deep_reads_everything(where: Any) -> None:
    for i in range(3):
        make(f"d{i}.bin", os.urandom(64))
    where.setup()

    report = where.verify(level="deep")

    assert (report.ok, report.downloaded) == (3, 3)


@both
def test_rows_without_checksum_are_unchecked_or_unverifiable(where: Any) -> None:
    row = make("nosum.txt", b"no checksum stored")
    where.setup()
    FileManager.objects.filter(pk=row.pk).update(checksum="")

    report = where.verify()
    assert (report.ok, report.unchecked, report.problems) == (1, 1, [])

    strict = where.verify(strict=True)
    assert [(p.kind, p.pk) for p in strict.problems] == [("unverifiable", row.pk)]


@both
def test_metadata_mismatch(where: Any) -> None:
    row = make("meta.txt", b"meta")
    where.setup()
    FileManager.objects.filter(pk=row.pk).update(object_key="somewhere/else.txt")

    report = where.verify()

    [problem] = report.problems
    assert problem.kind == "metadata_mismatch"
    assert "object_key" in problem.detail


@both
def test_orphans_are_reported_never_deleted(where: Any, media_root: Path) -> None:
    make("owned.txt", b"owned")
    where.setup()
    where.add("file_manager/2020/01/01/nobody.txt", b"orphan")
    where.add("elsewhere/not-an-upload.txt", b"outside the upload folder")

    report = where.verify(orphans=True)

    orphans = [p for p in report.problems if p.kind == "orphan"]
    assert [(p.pk, p.name) for p in orphans] == [(None, "file_manager/2020/01/01/nobody.txt")]
    assert report.totals["orphans"] == 1
    assert report.exit_code == 0  # orphans alone do not fail by default
    assert verify_files(storage=where.storage, orphans=True, fail_on=["orphan"]).exit_code == 1
    assert len([p for p in where.verify(orphans=True).problems if p.kind == "orphan"]) == 1


@both
def test_error_is_reported_per_row(where: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage_migrate.endpoints.base import Endpoint
    from storage_migrate.endpoints.local import LocalEndpoint
    from storage_migrate.endpoints.s3 import S3Endpoint

    make("a.txt", b"a")
    where.setup()
    cls: type[Endpoint] = S3Endpoint if where.storage == "s3" else LocalEndpoint

    def broken(self: Any, name: str) -> Any:
        raise OSError("storage on fire")

    monkeypatch.setattr(cls, "stat", broken)

    report = where.verify()

    assert kinds(report) == ["error"]
    assert "storage on fire" in report.problems[0].detail


def test_unsafe_name(media_root: Path) -> None:
    row = make("fine.txt", b"x")
    FileManager.objects.filter(pk=row.pk).update(file="../../etc/passwd")

    report = verify_files()

    assert [(p.kind, p.pk) for p in report.problems] == [("unsafe_name", row.pk)]


def test_corruption_behind_a_multipart_etag_is_not_ok(s3_bucket: str, settings: Any) -> None:
    from boto3.s3.transfer import TransferConfig

    settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": 5 * MiB, "MULTIPART_CHUNKSIZE": 5 * MiB}
    data = os.urandom(6 * MiB)
    row = make("movie.mp4", data)
    assert migrate_storage(to="s3").problems == []
    ok = verify_files(storage="s3")
    assert (ok.ok, ok.downloaded) == (1, 0)  # our md5 metadata is bound to the multipart ETag

    # Someone replaces the bytes in parts, keeping the md5 metadata.
    s3_client().upload_fileobj(
        io.BytesIO(os.urandom(6 * MiB)),
        s3_bucket,
        row.file.name,
        ExtraArgs={"Metadata": {"md5": md5(data)}},
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )

    report = verify_files(storage="s3")

    assert kinds(report) == ["checksum_mismatch"]
    assert report.downloaded == 1


def test_fix_metadata_repairs_size_but_leaves_a_wrong_checksum(s3_bucket: str) -> None:
    sized = make("sized.txt", b"12345")
    summed = make("summed.txt", b"abcde")
    blank = make("blank.txt", b"fill me")
    assert migrate_storage(to="s3").problems == []
    FileManager.objects.filter(pk=sized.pk).update(file_size=999)
    FileManager.objects.filter(pk=summed.pk).update(checksum="0" * 32)
    FileManager.objects.filter(pk=blank.pk).update(checksum="", bucket="wrong-bucket")

    fixing = verify_files(storage="s3", fix_metadata=True)

    assert kinds(fixing) == ["checksum_mismatch", "metadata_mismatch", "size_mismatch"]
    after = verify_files(storage="s3")
    assert sorted((p.kind, p.pk) for p in after.problems) == [
        ("checksum_mismatch", summed.pk),
        ("metadata_mismatch", blank.pk),
    ]
    sized.refresh_from_db()
    summed.refresh_from_db()
    blank.refresh_from_db()
    assert sized.file_size == 5
    assert summed.checksum == "0" * 32  # never overwritten: a person must look
    # Nothing proves the object is the blank row's file (no checksum) and the row's bucket
    # contradicts it: nothing is written from it (a conflict's object would be adopted so).
    assert (blank.checksum, blank.bucket) == ("", "wrong-bucket")


def test_sample(s3_bucket: str) -> None:
    for i in range(10):
        make(f"s{i}.txt", b"s")

    report = verify_files(sample=3)

    assert (report.rows, report.sample, report.to_dict()["sample"]) == (3, 3, 3)


def test_default_is_each_fields_own_storage(s3_bucket: str, default_storage_is: Any) -> None:
    row = make("moved.txt", b"moved")
    assert verify_files().problems == []  # local: the app reads from disk
    default_storage_is("s3")

    report = verify_files()  # after the switch, the app reads S3, where nothing is yet

    assert report.storage == "each field's storage"
    assert [(p.kind, p.pk) for p in report.problems] == [("missing", row.pk)]
    migrate_storage(to="s3")
    assert verify_files().problems == []


@pytest.mark.parametrize("where", ["local", "s3"], indirect=True)
def test_listing_join_for_large_selections(
    where: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Above JOIN_MIN_ROWS, rows are joined with one listing: no HEAD per row."""
    from storage_migrate.endpoints.base import Endpoint
    from storage_migrate.endpoints.s3 import S3Endpoint

    monkeypatch.setattr(verification_module, "JOIN_MIN_ROWS", 5)
    names = ["b c.txt", "a.txt", "ä.txt", "z+1.txt", "100%.txt", "A.txt", "a b.txt", "é.txt"]
    rows = [make(name, name.encode() * 3) for name in names]
    shared = make("dup.txt", b"x")
    FileManager.objects.filter(pk=shared.pk).update(
        file=rows[0].file.name,
        object_key=rows[0].object_key,
        checksum=rows[0].checksum,
        file_size=rows[0].file_size,
    )
    where.setup()
    where.remove(FileManager.objects.get(pk=rows[3].pk))
    where.add("file_manager/zz-orphan.txt", b"orphan")
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "BATCH_SIZE": 3}
    stats: list[str] = []
    cls: type[Endpoint] = S3Endpoint if where.storage == "s3" else Endpoint
    real_stat = cls.stat

    def counting_stat(self: Any, name: str) -> Any:
        stats.append(name)
        return real_stat(self, name)

    monkeypatch.setattr(cls, "stat", counting_stat)

    report = where.verify()

    assert report.rows == len(rows) + 1
    assert [(p.kind, p.pk) for p in report.problems] == [("missing", rows[3].pk)]
    if where.storage == "s3":
        assert stats == []  # every answer came from the listing


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="Unknown level"):
        verify_files(level="paranoid")
    with pytest.raises(ConfigurationError, match="Unknown problem kind"):
        verify_files(fail_on=["nope"])
    with pytest.raises(ConfigurationError, match="not in STORAGES"):
        verify_files(storage="nowhere")
    with pytest.raises(ConfigurationError, match="sample"):
        verify_files(sample=0)


def test_missing_bucket_is_a_configuration_error(s3_bucket: str, settings: Any) -> None:
    from tests.conftest import reset_storages

    make("x.txt", b"x")
    settings.AWS_STORAGE_BUCKET_NAME = "no-such-bucket"
    reset_storages()
    with pytest.raises(ConfigurationError, match="does not exist"):
        verify_files(storage="s3")


@both
def test_interrupted_mid_join_counts_each_row_once_and_stops_the_listing_thread(
    where: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Ctrl-C in the middle of a joined verification, a second one landing while finished
    checks are being counted: the partial report counts every row checked exactly once, and
    the thread reading the listing ahead is stopped at once, while the caller still holds the
    interruption and its traceback."""
    import signal
    import threading
    import time

    from storage_migrate import stopping

    monkeypatch.setattr(verification_module, "JOIN_MIN_ROWS", 5)
    monkeypatch.setattr("storage_migrate.verify.joins.JOIN_PAGE", 1)
    monkeypatch.setattr("storage_migrate.readahead.CHUNK", 2)
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "BATCH_SIZE": 4, "WORKERS": 4}
    rows = [make(f"stop/{i:03d}.txt", os.urandom(50 + i)) for i in range(60)]
    where.setup()
    seen: list[Any] = []

    def on_row(result: Any) -> None:
        seen.append(result.row.pk)
        if len(seen) == 15:
            stopping._requested.append(signal.SIGINT)
            raise KeyboardInterrupt  # the second Ctrl-C: raised at once, wherever the run is

    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            where.verify(on_row=on_row)
    finally:
        stopping._requested.clear()
    report = raised.value.report  # type: ignore[attr-defined]

    assert report.interrupted
    assert 15 <= report.rows < len(rows)
    assert len(seen) == len(set(seen)) == report.rows  # each row counted once
    assert report.ok == report.rows and report.problems == []
    end = time.monotonic() + 3
    while time.monotonic() < end and any(
        t.name == "storage-migrate-read-ahead" for t in threading.enumerate()
    ):
        time.sleep(0.02)
    assert not [t for t in threading.enumerate() if t.name == "storage-migrate-read-ahead"]
