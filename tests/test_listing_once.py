"""A run that walks many rows lists the destination's folder once, however its rows are spread
over folders, instead of listing each batch's key range (which, for rows spread over the date
folders of a busy site, lists the bucket again and again and falls back to a HEAD per row).
What the listing says is a hint: an object that appears or goes after it never makes the run
replace another writer's object or delete a source whose copy is gone."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import botocore.client
import pytest

from core.models import FileManager
from storage_migrate import migrate_storage
from storage_migrate.endpoints import s3index
from storage_migrate.migrate import plan
from storage_migrate.testing import s3_client
from tests.helpers import kinds, make, s3_keys

pytestmark = pytest.mark.django_db

FOLDERS = 12


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The S3 operations botocore sends (every client of the process), by name."""
    sent: Counter[str] = Counter()
    real = getattr(botocore.client.BaseClient, "_make_api_call")  # noqa: B009

    def counted(self: Any, operation: str, params: Any) -> Any:
        sent[operation] += 1
        if operation == "ListObjectsV2" and params.get("MaxKeys") != 1:
            sent["listing pages"] += 1  # not the one-key look of the emptiness check
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counted)
    return sent


def spread_rows(count: int) -> list[FileManager]:
    """Rows whose consecutive primary keys sit in different folders, as a busy site's uploads
    do (date folders of several upload fields, names made by several processes)."""
    return [make(f"{i % FOLDERS}/file {i}.txt", f"bytes of {i}".encode()) for i in range(count)]


def test_a_rerun_over_rows_spread_over_folders_lists_the_folder_once(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, requests: Counter[str]
) -> None:
    monkeypatch.setattr(plan, "INDEX_MIN_ROWS", 20)
    monkeypatch.setattr(s3index, "PAGE_SIZE", 50)  # 120 objects: 3 pages
    rows = spread_rows(120)
    assert migrate_storage(to="s3", batch_size=10).copied == 120
    requests.clear()

    again = migrate_storage(to="s3", batch_size=10)

    assert (again.rows, again.skipped, again.copied) == (120, 120, 0), again.problems
    # Three pages of the folder; no HEAD, no batch listing, no emptiness check.
    assert requests["ListObjectsV2"] == requests["listing pages"] == 3, requests
    assert requests["HeadObject"] <= 1, requests  # the native engine's look at the address
    assert len(s3_keys(s3_bucket)) == len(rows)


def test_batch_by_batch_the_same_rerun_lists_far_more(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, requests: Counter[str]
) -> None:
    """What the index saves: below INDEX_MIN_ROWS each batch lists its own key range, which
    for spread rows is most of the folder each time (the case the index exists for)."""
    monkeypatch.setattr(s3index, "PAGE_SIZE", 50)
    spread_rows(120)
    migrate_storage(to="s3", batch_size=10)
    requests.clear()

    again = migrate_storage(to="s3", batch_size=10)

    assert again.skipped == 120
    assert requests["listing pages"] + requests["HeadObject"] >= 12, requests


def test_a_small_catch_up_in_a_crowded_folder_does_not_list_it_all(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, requests: Counter[str]
) -> None:
    monkeypatch.setattr(plan, "INDEX_MIN_ROWS", 5)
    monkeypatch.setattr(s3index, "PAGE_SIZE", 10)
    client = s3_client()
    row = make("first.txt", b"first")
    folder = str(row.file.name).rsplit("/", 1)[0]
    for i in range(300):  # another process's objects under the same folder
        client.put_object(Bucket=s3_bucket, Key=f"{folder}/theirs {i}.txt", Body=b"x")
    new = [make(f"new {i}.txt", f"new {i}".encode()) for i in range(6)]
    requests.clear()

    report = migrate_storage(to="s3", batch_size=100)

    assert (report.rows, report.copied, report.problems) == (7, 7, [])
    # The index is given up once it holds more than 5 + 4 x 7 objects: 4 pages, not 31.
    assert requests["listing pages"] <= 5, requests
    for r in [row, *new]:
        r.refresh_from_db()
        assert r.bucket == s3_bucket


@pytest.mark.parametrize("behaviour", ["honour", "refuse", "ignore"])
def test_an_object_written_after_the_listing_is_never_replaced(
    through_proxy: Any,
    moto_endpoint: str,
    http_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    behaviour: str,
) -> None:
    """Another writer puts an object under a row's name after the folder was listed once: a
    store with conditional writes refuses our write; on one without them the run asks again
    for each name the listing did not hold. Either way the object stays theirs."""
    monkeypatch.setattr(plan, "INDEX_MIN_ROWS", 5)
    rows = spread_rows(30)
    client = s3_client(moto_endpoint)
    client.put_object(Bucket=http_bucket, Key="unrelated.txt", Body=b"not empty")
    through_proxy(conditional=behaviour)
    theirs = str(rows[17].file.name)
    real = s3index.list_once
    listed: list[Any] = []

    def then_another_writer(*args: Any, **kwargs: Any) -> Any:
        index = real(*args, **kwargs)
        listed.append(index)
        client.put_object(Bucket=http_bucket, Key=theirs, Body=b"theirs")
        return index

    monkeypatch.setattr(plan, "list_once", then_another_writer)

    report = migrate_storage(to="s3", batch_size=5)

    assert listed and listed[0] is not None  # the folder was listed once
    assert kinds(report) == ["conflict"], report.problems
    assert report.copied == 29
    assert client.get_object(Bucket=http_bucket, Key=theirs)["Body"].read() == b"theirs"
    rows[17].refresh_from_db()
    assert rows[17].bucket != http_bucket  # the row still points at its own file


def test_a_copy_gone_after_the_listing_keeps_its_source(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, media_root: Path
) -> None:
    """The listing says a row's copy is there; it is deleted before the row's turn. With
    --delete-source the source is deleted only where the copy is found again."""
    monkeypatch.setattr(plan, "INDEX_MIN_ROWS", 5)
    rows = spread_rows(30)
    client = s3_client()
    for r in rows:  # copies made earlier (by hand, or a run that was killed before commits)
        client.put_object(Bucket=s3_bucket, Key=str(r.file.name), Body=r.file.read())
        r.file.close()
    gone = str(rows[11].file.name)
    real = s3index.list_once

    def then_deleted(*args: Any, **kwargs: Any) -> Any:
        index = real(*args, **kwargs)
        client.delete_object(Bucket=s3_bucket, Key=gone)
        return index

    monkeypatch.setattr(plan, "list_once", then_deleted)

    report = migrate_storage(to="s3", batch_size=5, delete_source=True)

    assert (media_root / gone).read_bytes() == b"bytes of 11"
    assert report.problems, "the run must say that one copy is not where it was listed"
    kept = [r for r in rows if (media_root / str(r.file.name)).exists()]
    assert [str(r.file.name) for r in kept] == [gone]


def test_the_index_is_a_file_that_is_removed(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan, "INDEX_MIN_ROWS", 5)
    spread_rows(10)
    migrate_storage(to="s3")
    made: list[Any] = []
    real = s3index.list_once

    def kept(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(plan, "list_once", kept)
    assert migrate_storage(to="s3").skipped == 10
    assert made and made[0] is not None
    assert not Path(made[0].path).exists()
