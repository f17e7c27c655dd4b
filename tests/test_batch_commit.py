"""Committing verified rows in batches: one UPDATE statement per group of rows (batch_update), row
by row only to find the rows that changed meanwhile, the ORM for multi-table inheritance, and the
values stored as the columns' types, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import wait
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from core.models import FileManager
from storage_migrate import migrate_storage
from storage_migrate.conf import get_conf
from storage_migrate.migrate import commit
from storage_migrate.migrate import run as mig
from storage_migrate.report import COPIED
from storage_migrate.rows import RowResult, rows_by_pk
from storage_migrate.targets import parse_target
from tests.conftest import reset_storages
from tests.helpers import kinds, make, md5, s3_bytes
from tests.testapp.models import Clip, Document, Media

pytestmark = pytest.mark.django_db


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each commit wrote. Every copy of the run finishes before the first commit
    (the loop waits for all of them where it would wait for the first), so that the rows of
    a small run are committed together, in one batch."""
    sizes: list[int] = []
    real_drain, real_write = mig.Migration._drain, mig.Migration._write_rows

    def drain(self: mig.Migration, return_when: str) -> None:
        self._flush()  # the rows gathered for a worker go now, as real_drain would send them
        wait(self._futures)
        real_drain(self, return_when)

    def write_rows(self: mig.Migration, pending: list[RowResult]) -> list[RowResult]:
        sizes.append(len(pending))
        return real_write(self, pending)

    monkeypatch.setattr(mig.Migration, "_drain", drain)
    monkeypatch.setattr(mig.Migration, "_write_rows", write_rows)
    return sizes


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Each batch_update call: (rows in the group, what it returned); the real function runs."""
    calls: list[tuple[int, bool]] = []
    real = commit.batch_update

    def batch_update(group: list[RowResult]) -> bool:
        done = real(group)
        calls.append((len(group), done))
        return done

    monkeypatch.setattr(commit, "batch_update", batch_update)
    return calls


@pytest.fixture(params=["in-process", "http"])
def bucket(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    """The `s3` storage on moto in-process (boto3 sends), or on moto's HTTP server (the native
    engine sends, several rows to a worker)."""
    if request.param == "in-process":
        yield request.getfixturevalue("s3_bucket")
        return
    settings.AWS_S3_ENDPOINT_URL = request.getfixturevalue("moto_endpoint")
    settings.AWS_STORAGE_BUCKET_NAME = request.getfixturevalue("http_bucket")
    reset_storages()
    yield settings.AWS_STORAGE_BUCKET_NAME
    reset_storages()


def updates_of(table: str, queries: CaptureQueriesContext) -> list[str]:
    """The UPDATE statements run on a table ("N times: UPDATE ..." for an executemany)."""
    return [q["sql"] for q in queries.captured_queries if f'UPDATE "{table}"' in q["sql"]]


def bare(*rows: FileManager) -> None:
    """Forget what the upload recorded: the migration has every column to fill."""
    FileManager.objects.filter(pk__in=[r.pk for r in rows]).update(
        checksum="", file_size=None, content_type="", bucket="", object_key=""
    )


# --- through migrate_storage --------------------------------------------------------------------


def test_a_batch_is_one_update_statement(
    s3_bucket: str, commits: list[int], batches: list[tuple[int, bool]]
) -> None:
    contents = [os.urandom(100 + i) for i in range(6)]
    rows = [make(f"f{i}.txt", data) for i, data in enumerate(contents)]
    bare(*rows)

    with CaptureQueriesContext(connection) as queries:
        report = migrate_storage(to="s3")

    assert (report.copied, report.problems) == (6, [])
    assert commits == [6]
    assert batches == [(6, True)]
    [statement] = updates_of("core_filemanager", queries)
    if connection.vendor == "postgresql":  # one statement joined with the rows' values
        assert "FROM (VALUES" in statement and statement.count("), (") == 5
    else:  # one statement run for each row
        assert statement.startswith("6 times: ")
    for row, data in zip(rows, contents, strict=True):
        row.refresh_from_db()
        assert (row.bucket, row.object_key) == (s3_bucket, row.file.name)
        assert (row.checksum, row.file_size, row.content_type) == (
            md5(data),
            len(data),
            "text/plain",
        )


@pytest.mark.parametrize("meanwhile", ["file_changed", "deleted"])
def test_a_row_that_changes_mid_batch_is_the_only_error(
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    commits: list[int],
    batches: list[tuple[int, bool]],
    meanwhile: str,
) -> None:
    contents = [f"bytes {i}".encode() * (i + 1) for i in range(5)]
    rows = [make(f"r{i}.txt", data) for i, data in enumerate(contents)]
    bare(*rows)
    victim = rows[2]
    real_finish = mig.Migration._finish

    def finish(self: Any, result: RowResult) -> None:
        if result.row.pk == victim.pk:
            victims = FileManager.objects.filter(pk=victim.pk)
            if meanwhile == "deleted":
                victims.delete()
            else:
                victims.update(file="file_manager/elsewhere.txt")
        real_finish(self, result)

    monkeypatch.setattr(mig.Migration, "_finish", finish)

    report = migrate_storage(to="s3")

    assert commits == [5]
    assert batches == [(5, False)]  # the batch was tried, and came up one row short
    assert (report.copied, report.failed, kinds(report)) == (4, 1, ["error"])
    assert [p.pk for p in report.problems] == [victim.pk]
    for row, data in zip(rows, contents, strict=True):
        if row is victim:
            continue
        row.refresh_from_db()
        assert (row.bucket, row.object_key) == (bucket, row.file.name)
        assert (row.checksum, row.file_size) == (md5(data), len(data))
    if meanwhile == "deleted":
        assert not FileManager.objects.filter(pk=victim.pk).exists()
    else:
        kept = FileManager.objects.get(pk=victim.pk)
        assert kept.file.name == "file_manager/elsewhere.txt"
        assert (kept.bucket, kept.object_key, kept.checksum, kept.file_size) == ("", "", "", None)


def test_rows_with_different_columns_to_fill_each_get_their_own(
    s3_bucket: str, commits: list[int], batches: list[tuple[int, bool]]
) -> None:
    empty = make("empty.txt", b"every column to fill")
    typed = make("typed.txt", b"its content type is kept")
    wrong = make("wrong.txt", b"its wrong checksum is kept")
    bare(empty, typed, wrong)
    FileManager.objects.filter(pk=typed.pk).update(content_type="text/x-custom")
    FileManager.objects.filter(pk=wrong.pk).update(checksum="0" * 32)

    report = migrate_storage(to="s3")

    assert kinds(report) == ["checksum_mismatch"]
    assert commits == [3]
    assert sorted(batches) == [(1, True), (1, True), (1, True)]  # three sets of columns
    values = {
        r["pk"]: r
        for r in FileManager.objects.values(
            "pk", "bucket", "object_key", "checksum", "file_size", "content_type"
        )
    }
    assert values[empty.pk]["checksum"] == md5(b"every column to fill")
    assert values[empty.pk]["content_type"] == "text/plain"
    assert values[typed.pk]["content_type"] == "text/x-custom"
    assert values[typed.pk]["checksum"] == md5(b"its content type is kept")
    assert values[wrong.pk]["checksum"] == "0" * 32
    assert values[wrong.pk]["file_size"] == len(b"its wrong checksum is kept")
    assert {v["bucket"] for v in values.values()} == {s3_bucket}


def test_values_are_stored_as_the_columns_types(s3_bucket: str) -> None:
    data = b"typed bytes" * 1000
    row = make("types.bin", data)
    bare(row)

    assert migrate_storage(to="s3").problems == []

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT file_size, checksum, bucket, object_key, content_type "
            "FROM core_filemanager WHERE id = %s",
            [row.pk],
        )
        [(file_size, checksum, bucket, object_key, content_type)] = cursor.fetchall()
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT typeof(file_size), typeof(checksum) FROM core_filemanager WHERE id = %s",
                [row.pk],
            )
            assert cursor.fetchall() == [("integer", "text")]
    assert type(file_size) is int and file_size == len(data)
    assert type(checksum) is str and checksum == md5(data)
    assert (bucket, object_key, content_type) == (
        s3_bucket,
        row.file.name,
        "application/octet-stream",
    )
    # and the ORM reads back the same
    assert FileManager.objects.filter(file_size=len(data), checksum=md5(data)).count() == 1


def test_metadata_under_other_column_names(
    s3_bucket: str, settings: Any, batches: list[tuple[int, bool]]
) -> None:
    settings.STORAGE_MIGRATE = {
        "METADATA_FIELDS": {"testapp.Document.scan": {"checksum": "md5_hex", "file_size": "bytes"}}
    }
    docs = [
        Document.objects.create(scan=ContentFile(b"scan %d" % i, name=f"s{i}.pdf")) for i in (1, 2)
    ]

    report = migrate_storage(to="s3", models=["testapp.Document.scan"])

    assert (report.copied, report.problems) == (2, [])
    assert batches and all(done for _, done in batches)
    for i, doc in zip((1, 2), docs, strict=True):
        doc.refresh_from_db()
        assert (doc.md5_hex, doc.bytes, doc.bucket) == (md5(b"scan %d" % i), 6, s3_bucket)


# --- multi-table inheritance -------------------------------------------------------------------


def results(label: str, **updates: Any) -> list[RowResult]:
    """A RowResult for every row of the model with a file, with these updates."""
    [target] = parse_target(label, get_conf())
    return [
        RowResult(row, COPIED, updates=dict(updates))
        for batch in rows_by_pk(target, 100)
        for row in batch
    ]


def test_batch_update_declines_columns_in_a_parent_table() -> None:
    clips = [Clip.objects.create(video=ContentFile(b"clip", name=f"c{i}.mp4")) for i in range(3)]
    before = list(Media.objects.order_by("pk").values())
    before_clips = list(Clip.objects.order_by("pk").values())

    done = commit.batch_update(results("testapp.Clip", bucket="b", file_size=4, object_key="k"))

    assert done is False
    assert list(Media.objects.order_by("pk").values()) == before
    assert list(Clip.objects.order_by("pk").values()) == before_clips
    assert len(before_clips) == len(clips)


def test_batch_update_updates_rows_that_still_hold_their_file() -> None:
    rows = [make(f"b{i}.txt", b"b") for i in range(3)]
    group = results("core.FileManager", bucket="the-bucket")

    assert commit.batch_update(group) is True
    assert set(FileManager.objects.values_list("bucket", flat=True)) == {"the-bucket"}

    FileManager.objects.filter(pk=rows[1].pk).update(file="file_manager/other.txt")
    assert commit.batch_update(results("core.FileManager", bucket="later")) is True  # re-read rows
    stale = results("core.FileManager", bucket="stale")
    FileManager.objects.filter(pk=rows[0].pk).update(file="file_manager/moved.txt")

    assert commit.batch_update(stale) is False
    assert dict(FileManager.objects.values_list("pk", "bucket")) == {
        rows[0].pk: "later",  # its file changed: left as it is
        rows[1].pk: "stale",
        rows[2].pk: "stale",
    }


@pytest.mark.parametrize("child_columns", [True, False], ids=["both-tables", "parent-only"])
def test_migrate_storage_commits_multi_table_inheritance_rows(
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    commits: list[int],
    batches: list[tuple[int, bool]],
    child_columns: bool,
) -> None:
    """Columns to fill in both tables, or only in the parent's (object_key already right)."""
    contents = [f"clip {i}".encode() * 50 for i in range(4)]
    clips = [
        Clip.objects.create(video=ContentFile(data, name=f"clip {i}.mp4"))
        for i, data in enumerate(contents)
    ]
    if not child_columns:
        for clip in clips:
            Clip.objects.filter(pk=clip.pk).update(object_key=clip.video.name)
    victim = clips[1]
    victim_key = Clip.objects.get(pk=victim.pk).object_key
    real_finish = mig.Migration._finish

    def finish(self: Any, result: RowResult) -> None:
        if result.row.pk == victim.pk:
            Clip.objects.filter(pk=victim.pk).update(video="clips/elsewhere.mp4")
        real_finish(self, result)

    monkeypatch.setattr(mig.Migration, "_finish", finish)

    report = migrate_storage(to="s3", models=["testapp.Clip"])

    assert commits == [4]
    assert batches == [(4, False)]  # the ORM's job
    assert (report.copied, [p.pk for p in report.problems]) == (3, [victim.pk])
    for clip, data in zip(clips, contents, strict=True):
        clip.refresh_from_db()
        if clip.pk == victim.pk:
            assert (clip.bucket, clip.checksum, clip.file_size) == ("", "", None)
            assert clip.object_key == victim_key
            continue
        assert (clip.bucket, clip.object_key) == (s3_bucket, clip.video.name)
        assert (clip.checksum, clip.file_size) == (md5(data), len(data))
        assert s3_bytes(s3_bucket, clip.object_key) == data
        parent = Media.objects.get(pk=clip.pk)
        assert (parent.checksum, parent.file_size, parent.bucket) == (
            md5(data),
            len(data),
            s3_bucket,
        )


def test_batch_update_in_chunks_with_empty_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "VALUES_ROWS", 2)
    rows = [make(f"c{i}.txt", b"c") for i in range(5)]
    group = results("core.FileManager", bucket="chunked", file_size=None, checksum="")

    assert commit.batch_update(group) is True
    assert {(r.bucket, r.file_size, r.checksum) for r in FileManager.objects.all()} == {
        ("chunked", None, "")
    }
    assert len(rows) == 5


def test_a_value_too_long_for_its_column_is_refused_never_cut() -> None:
    """PostgreSQL's VALUES carry the columns' types without their lengths: a value longer than
    its column fails the statement (the caller then commits row by row and names the row), as
    a plain UPDATE does; it is never cut to fit."""
    from django.db import DataError

    make("long.txt", b"long")
    limit = FileManager._meta.get_field("object_key").max_length
    assert limit is not None
    long_key = "k" * (limit + 10)
    group = results("core.FileManager", object_key=long_key)
    try:
        with transaction.atomic():
            done = commit.batch_update(group)
    except DataError:
        assert connection.vendor == "postgresql"
        assert FileManager.objects.get().object_key != long_key[:limit]
    else:  # SQLite keeps whatever it is given, whole
        assert done is True
        assert FileManager.objects.get().object_key == long_key


def test_a_row_refused_by_its_column_is_named_and_the_others_committed(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [make(f"ok {i}.txt", b"ok") for i in range(3)]
    bare(*rows)
    real = commit._columns

    def too_long_for_one(result: RowResult) -> dict[str, Any]:
        columns = real(result)
        if result.row.pk == rows[1].pk and "object_key" in columns:
            columns["object_key"] = "k" * 2000  # over the column's 1024
        return columns

    monkeypatch.setattr(commit, "_columns", too_long_for_one)
    report = migrate_storage(to="s3")

    stored = {r.pk: r.object_key for r in FileManager.objects.all()}
    if connection.vendor == "postgresql":
        assert kinds(report) == ["error"] and f"pk={rows[1].pk}" in str(report.problems[0])
        assert stored[rows[1].pk] == ""
    assert stored[rows[0].pk] == rows[0].file.name and stored[rows[2].pk] == rows[2].file.name
