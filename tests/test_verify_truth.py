"""verify_files --fix-metadata writes only what describes the row's own file, all of it from one
response of the storage, and a value or a row the database refuses stays that row's problem."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from django.db import connection

from core.models import FileManager
from storage_migrate import verify_files
from storage_migrate.endpoints.s3 import S3Endpoint
from storage_migrate.testing import s3_client
from storage_migrate.verify import run as verification_module
from tests.helpers import MiB, kinds, md5

pytestmark = pytest.mark.django_db

KEY = "file_manager/2024/05/01/photo.jpg"
ORIGINAL = (bytes(range(256)) * 206)[:52648]  # the row's own file, 52648 bytes
INTRUDER = b"another writer"  # 14 bytes someone else wrote under the row's key
NOT_CORRECTED = "not corrected: the object may not be the row's file"
CORRECTED = "; corrected (--fix-metadata)"
LONG_TYPE = "x/" + "y" * 312  # 314 characters; FileManager.content_type holds 255


def put(bucket: str, key: str, body: bytes, content_type: str = "text/plain") -> None:
    s3_client().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def row(name: str = KEY, **columns: Any) -> FileManager:
    """A row pointing at ``name``, its columns as given (nothing is stored by the model)."""
    values: dict[str, Any] = {
        "file_size": None,
        "checksum": "",
        "content_type": "",
        "bucket": "",
        "object_key": "",
        **columns,
    }
    return FileManager.objects.create(file=name, **values)


def state(item: FileManager) -> dict[str, Any]:
    item.refresh_from_db()
    return {
        "file_size": item.file_size,
        "checksum": item.checksum,
        "content_type": item.content_type,
        "bucket": item.bucket,
        "object_key": item.object_key,
    }


def problem_of(report: Any, item: FileManager) -> Any:
    [problem] = [p for p in report.problems if p.pk == item.pk]
    return problem


@pytest.fixture(params=["head", "listing"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """One HEAD per row (a small selection), or the rows joined with one listing."""
    if request.param == "listing":
        monkeypatch.setattr(verification_module, "JOIN_MIN_ROWS", 1)
    return str(request.param)


def on_request(monkeypatch: pytest.MonkeyPatch, operation: str, hook: Callable[[], None]) -> None:
    """Run ``hook`` once, just before the tool's first ``operation`` (HeadObject, GetObject)
    request is sent: another writer replacing an object at the worst moment."""
    real_client = S3Endpoint._client
    fired: list[bool] = []

    def before_call(**kwargs: Any) -> None:
        if not fired:
            fired.append(True)
            hook()

    def client(self: S3Endpoint, **config: Any) -> Any:
        made = real_client(self, **config)
        made.meta.events.register(f"before-call.s3.{operation}", before_call)
        return made

    monkeypatch.setattr(S3Endpoint, "_client", client)


# --- (1) a conflict: another writer's object under the row's key ------------------------------


@pytest.mark.parametrize("intruder", [INTRUDER, bytes(b ^ 0xFF for b in ORIGINAL)])
def test_a_conflicting_object_corrects_nothing(s3_bucket: str, path: str, intruder: bytes) -> None:
    mine = row(
        file_size=len(ORIGINAL),
        checksum=md5(ORIGINAL),
        content_type="image/jpeg",
        bucket="old-bucket",
        object_key=KEY,
    )
    before = state(mine)
    put(s3_bucket, KEY, intruder)

    report = verify_files(storage="s3", fix_metadata=True)

    assert state(mine) == before
    assert report.fixed == 0
    problem = problem_of(report, mine)
    if len(intruder) != len(ORIGINAL):
        assert (problem.kind, problem.expected, problem.actual) == ("size_mismatch", 52648, 14)
        assert problem.detail == (
            f"stored size disagrees with the file; {NOT_CORRECTED} "
            "(its MD5 is not the stored checksum)"
        )
    else:
        assert problem.kind == "checksum_mismatch"
        assert problem.detail == "file bytes do not match the stored checksum"


# --- (2) no stored checksum, and a stored size the object contradicts -------------------------


def test_a_contradicted_size_without_checksum_writes_nothing(s3_bucket: str, path: str) -> None:
    mine = row(file_size=len(ORIGINAL))
    put(s3_bucket, KEY, INTRUDER)

    report = verify_files(storage="s3", fix_metadata=True)

    assert state(mine) == {
        "file_size": len(ORIGINAL),
        "checksum": "",
        "content_type": "",
        "bucket": "",
        "object_key": "",
    }
    assert report.fixed == 0
    problem = problem_of(report, mine)
    assert problem.kind == "size_mismatch"
    assert NOT_CORRECTED in problem.detail


# --- (3) blanks are filled; without proof, nothing known is overwritten -----------------------


def test_blank_columns_are_filled_but_known_ones_kept_without_proof(
    s3_bucket: str, path: str
) -> None:
    blank = row()
    elsewhere = row("file_manager/other.csv", bucket="old-bucket")
    put(s3_bucket, KEY, ORIGINAL, "image/jpeg")
    put(s3_bucket, "file_manager/other.csv", b"a,b\n", "text/csv")

    report = verify_files(storage="s3", fix_metadata=True)

    assert state(blank) == {
        "file_size": len(ORIGINAL),
        "checksum": md5(ORIGINAL),
        "content_type": "image/jpeg",
        "bucket": s3_bucket,
        "object_key": KEY,
    }
    # Its bucket says the file is elsewhere: this object may be another one.
    assert state(elsewhere) == {
        "file_size": None,
        "checksum": "",
        "content_type": "",
        "bucket": "old-bucket",
        "object_key": "",
    }
    problem = problem_of(report, elsewhere)
    assert problem.kind == "metadata_mismatch"
    assert problem.detail == (
        f"bucket is 'old-bucket', the storage says {s3_bucket!r}; object_key is '', the "
        f"storage says 'file_manager/other.csv'; {NOT_CORRECTED} (the row has no checksum to "
        "prove it is)"
    )
    # A blank bucket is a mismatch the fix fills.
    assert problem_of(report, blank).detail.endswith(CORRECTED)
    assert (report.rows, report.ok, report.fixed) == (2, 0, 1)


# --- (4) the row's own file (its checksum proves it): every column is corrected ---------------


def test_the_rows_own_file_corrects_every_column(s3_bucket: str, path: str) -> None:
    mine = row(
        file_size=999,
        checksum=md5(ORIGINAL),
        content_type="image/png",
        bucket="old-bucket",
        object_key="old/key.jpg",
    )
    put(s3_bucket, KEY, ORIGINAL, "image/jpeg")

    report = verify_files(storage="s3", fix_metadata=True)

    problem = problem_of(report, mine)
    assert problem.kind == "size_mismatch"
    assert problem.detail.endswith(CORRECTED)
    after = state(mine)
    assert after["file_size"] == len(ORIGINAL)
    assert after["checksum"] == md5(ORIGINAL)
    assert (after["bucket"], after["object_key"]) == (s3_bucket, KEY)
    if path == "head":  # a listing does not say the content type
        assert after["content_type"] == "image/jpeg"
    assert report.fixed == 1
    assert verify_files(storage="s3").problems == []


# --- (5) an object replaced while it is being checked: one response's values ------------------


def test_an_object_replaced_before_the_head_gives_one_versions_values(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verification_module, "JOIN_MIN_ROWS", 1)  # a listing, then a HEAD
    mine = row()
    first, second = b"version one", b"the second version, longer"
    put(s3_bucket, KEY, first, "text/plain")
    on_request(monkeypatch, "HeadObject", lambda: put(s3_bucket, KEY, second, "text/csv"))

    verify_files(storage="s3", fix_metadata=True)

    after = state(mine)
    assert (after["file_size"], after["checksum"], after["content_type"]) == (
        len(second),
        md5(second),
        "text/csv",
    )


def test_an_object_replaced_before_it_is_read_gives_one_versions_values(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multipart ETag is no MD5: the object is read, and replaced just before the read."""
    mine = row()
    first, second = os.urandom(6 * MiB), b"replaced"
    s3_client().upload_fileobj(
        io.BytesIO(first),
        s3_bucket,
        KEY,
        ExtraArgs={"ContentType": "video/mp4"},
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )
    on_request(monkeypatch, "GetObject", lambda: put(s3_bucket, KEY, second, "text/csv"))

    report = verify_files(storage="s3", fix_metadata=True)

    assert report.downloaded == 1
    after = state(mine)
    assert (after["file_size"], after["checksum"], after["content_type"]) == (
        len(second),
        md5(second),
        "text/csv",
    )


# --- (6) a value the column cannot hold -------------------------------------------------------


def test_a_content_type_too_long_for_its_column_is_not_written(s3_bucket: str) -> None:
    blank = row(checksum=md5(b"blank"), file_size=5, bucket=s3_bucket, object_key=KEY)
    typed = row(
        "file_manager/typed.bin",
        checksum=md5(b"typed"),
        file_size=5,
        content_type="text/plain",
        bucket=s3_bucket,
        object_key="file_manager/typed.bin",
    )
    filled = row(
        "file_manager/filled.txt",
        checksum=md5(b"filled"),
        bucket=s3_bucket,
        object_key="file_manager/filled.txt",
    )
    put(s3_bucket, KEY, b"blank", LONG_TYPE)
    put(s3_bucket, "file_manager/typed.bin", b"typed", LONG_TYPE)
    put(s3_bucket, "file_manager/filled.txt", b"filled", "text/plain")

    for _ in range(2):  # and a re-run does the same
        report = verify_files(storage="s3", fix_metadata=True)

        assert state(blank)["content_type"] == ""
        assert state(typed)["content_type"] == "text/plain"
        assert state(filled) == {
            "file_size": 6,
            "checksum": md5(b"filled"),
            "content_type": "text/plain",
            "bucket": s3_bucket,
            "object_key": "file_manager/filled.txt",
        }
        assert [p.pk for p in report.problems] == [typed.pk]
        problem = report.problems[0]
        assert problem.kind == "metadata_mismatch"
        assert "content_type not corrected" in problem.detail
        assert "255" in problem.detail
        assert (report.rows, report.ok, len(report.problems)) == (3, 2, 1)


# --- (7) the database refuses one row's update ------------------------------------------------


@pytest.fixture
def refuse_content_type() -> str:
    """A trigger that makes the database refuse to store one content type (a constraint the
    tool cannot know of). Created inside the test's transaction: rolled back with it."""
    refused = "x/refused"
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "CREATE TRIGGER refuse_type BEFORE UPDATE OF content_type ON core_filemanager "
                f"WHEN NEW.content_type = '{refused}' "
                "BEGIN SELECT RAISE(ABORT, 'this content type is refused'); END"
            )
        elif connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_type() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'this content type is refused' USING ERRCODE = '22000'; "
                "END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_type BEFORE UPDATE ON core_filemanager FOR EACH ROW "
                f"WHEN (NEW.content_type = '{refused}') EXECUTE FUNCTION refuse_type()"
            )
        else:  # pragma: no cover
            pytest.skip(f"no trigger for {connection.vendor}")
    return refused


def test_a_row_the_database_refuses_is_that_rows_error(
    s3_bucket: str, refuse_content_type: str
) -> None:
    names = ["file_manager/a.txt", "file_manager/refused.txt", "file_manager/c.txt"]
    where = [{"bucket": s3_bucket, "object_key": name} for name in names]
    good_a = row(names[0], checksum=md5(b"a"), file_size=1, **where[0])
    refused = row(names[1], checksum=md5(b"b"), file_size=999, **where[1])
    good_c = row(names[2], checksum=md5(b"c"), file_size=7, **where[2])
    put(s3_bucket, names[0], b"a", "text/plain")
    put(s3_bucket, names[1], b"b", refuse_content_type)
    put(s3_bucket, names[2], b"c", "text/csv")
    outcomes: dict[Any, str] = {}

    report = verify_files(
        storage="s3",
        fix_metadata=True,
        on_row=lambda result: outcomes.__setitem__(result.row.pk, result.outcome),
    )

    assert kinds(report) == ["error", "size_mismatch"]
    problem = problem_of(report, refused)
    assert problem.kind == "error"
    assert problem.detail.startswith("--fix-metadata could not write content_type: ")
    assert problem.detail.endswith("(the check found size_mismatch)")  # one line
    assert (problem.expected, problem.actual) == (999, 1)
    assert outcomes == {good_a.pk: "ok", refused.pk: "error", good_c.pk: "size_mismatch"}
    assert (report.rows, report.ok, len(report.problems), report.fixed) == (3, 1, 2, 2)
    assert state(refused)["file_size"] == 999  # nothing of the refused row was written
    assert state(good_a)["content_type"] == "text/plain"
    assert (state(good_c)["file_size"], state(good_c)["content_type"]) == (1, "text/csv")
