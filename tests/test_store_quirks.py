"""What S3-compatible stores do differently, handled by the code: a clean-up step the store
refuses (`rclone serve s3` answers the listing of unfinished multipart uploads with
NoSuchUpload when there are none; an IAM policy without s3:ListBucketMultipartUploads answers
AccessDenied) never fails the copy it only tidies after."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from storage_migrate import migrate_storage
from storage_migrate.testing import s3_client
from tests.helpers import MiB, kinds, make, md5, s3_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def multipart(settings: Any) -> None:
    settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": 5 * MiB, "MULTIPART_CHUNKSIZE": 5 * MiB}


def refuse(monkeypatch: pytest.MonkeyPatch, operation: str, code: str) -> list[str]:
    """Make every S3 client answer ``operation`` with the error ``code``; the calls made."""
    real = BaseClient._make_api_call  # type: ignore[attr-defined]
    calls: list[str] = []

    def answer(self: Any, name: str, params: dict[str, Any]) -> Any:
        if name == operation:
            calls.append(name)
            raise ClientError({"Error": {"Code": code, "Message": code}}, name)
        return real(self, name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", answer)
    return calls


def started_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run starts a little later than now: an upload begun now is a killed run's."""
    from storage_migrate.endpoints import s3write

    real_init = s3write.S3Engine.__init__

    def later(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self.started = datetime.now(UTC) + timedelta(seconds=5)

    monkeypatch.setattr(s3write.S3Engine, "__init__", later)


@pytest.mark.parametrize("code", ["NoSuchUpload", "AccessDenied", "NotImplemented"])
def test_a_refused_listing_of_unfinished_uploads_fails_no_copy(
    s3_bucket: str,
    media_root: Path,
    multipart: None,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
) -> None:
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "WORKERS": 1}  # one at a time
    bigs = [make(f"big{i}.bin", bytes([i]) * (6 * MiB + i)) for i in range(3)]
    calls = refuse(monkeypatch, "ListMultipartUploads", code)

    report = migrate_storage(to="s3")

    assert (report.copied, kinds(report), report.exit_code) == (3, [], 0)
    for row in bigs:
        row.refresh_from_db()
        data = (media_root / row.file.name).read_bytes()
        assert row.checksum == md5(data) and s3_bytes(s3_bucket, row.object_key) == data
    # Tried once, then skipped for the rest of the run (concurrent uploads may each try once
    # before the first answer), and said once.
    assert calls == ["ListMultipartUploads"]
    (note,) = report.notes
    assert f"not looked for ({code})" in note and repr(s3_bucket) in note
    assert f"  Note: {note}." in report.to_text().splitlines()
    assert json.loads(report.to_json())["notes"] == [note]


def test_a_refused_abort_of_a_leftover_fails_no_copy(
    s3_bucket: str, media_root: Path, multipart: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = make("big.bin", b"b" * (6 * MiB))
    leftover = s3_client().create_multipart_upload(Bucket=s3_bucket, Key=row.file.name)
    started_after_it(monkeypatch)  # the leftover is a killed run's: begun before this run
    refuse(monkeypatch, "AbortMultipartUpload", "AccessDenied")

    report = migrate_storage(to="s3")

    assert (report.copied, kinds(report)) == (1, [])
    assert "AccessDenied" in report.notes[0]
    uploads = s3_client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [leftover["UploadId"]]  # refused, so still there


def test_a_killed_runs_leftover_is_aborted_where_the_store_answers(
    s3_bucket: str, media_root: Path, multipart: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clean-up itself still works, and says nothing, where the listing is answered."""
    row = make("big.bin", b"b" * (6 * MiB))
    s3_client().create_multipart_upload(Bucket=s3_bucket, Key=row.file.name)
    started_after_it(monkeypatch)

    report = migrate_storage(to="s3")

    assert (report.copied, kinds(report), report.notes) == (1, [], [])
    assert s3_client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
