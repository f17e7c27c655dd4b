"""migrate_storage --pending: the catch-up after the switch walks only the rows whose metadata
columns do not already record them at the destination; a model without a bucket column is
walked whole, and the report says so."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from core.models import FileManager
from storage_migrate import migrate_storage, verify_files
from tests.helpers import make, s3_keys
from tests.testapp.models import Attachment

pytestmark = pytest.mark.django_db


def test_pending_walks_only_the_rows_not_recorded_at_the_destination(
    s3_bucket: str, media_root: Path
) -> None:
    old = [make(f"old {i}.txt", b"old" * (i + 1)) for i in range(6)]
    first = migrate_storage(to="s3", models=["core.FileManager"])
    assert first.copied == 6
    new = [make(f"new {i}.txt", b"written by an old process") for i in range(2)]

    catch_up = migrate_storage(to="s3", models=["core.FileManager"], pending=True)

    assert (catch_up.rows, catch_up.copied, catch_up.skipped) == (2, 2, 0)
    assert catch_up.pending is True and catch_up.walked_whole == []
    assert sorted(s3_keys(s3_bucket)) == sorted(str(r.file.name) for r in [*old, *new])
    again = migrate_storage(to="s3", models=["core.FileManager"], pending=True)
    assert (again.rows, again.copied) == (0, 0)
    assert "(--pending)" in again.summary()


def test_a_row_whose_columns_disagree_with_its_file_is_walked(
    s3_bucket: str, media_root: Path
) -> None:
    row = make("renamed.txt", b"bytes")
    migrate_storage(to="s3", models=["core.FileManager"])
    other = make("other.txt", b"other bytes")
    # The site points the row at another file; its object_key still names the old one.
    FileManager.objects.filter(pk=row.pk).update(file=other.file.name)

    catch_up = migrate_storage(to="s3", models=["core.FileManager"], pending=True)

    assert catch_up.rows == 2  # the repointed row and the new one
    assert FileManager.objects.get(pk=row.pk).object_key == other.file.name


def test_a_model_without_a_bucket_column_is_walked_whole(s3_bucket: str, media_root: Path) -> None:
    for i in range(3):
        Attachment.objects.create(upload=ContentFile(b"a", name=f"a{i}.txt"))
    migrate_storage(to="s3", models=["testapp.Attachment"])

    catch_up = migrate_storage(to="s3", models=["testapp.Attachment"], pending=True)

    assert catch_up.rows == 3 and catch_up.skipped == 3
    assert catch_up.walked_whole == ["testapp.Attachment.upload"]
    assert "walked whole, no bucket column: testapp.Attachment.upload" in catch_up.summary()


def test_pending_back_to_local_walks_the_rows_recorded_in_the_bucket(
    s3_bucket: str, media_root: Path
) -> None:
    moved = [make(f"m{i}.txt", b"moved") for i in range(3)]
    migrate_storage(to="s3", models=["core.FileManager"])
    for row in moved:
        (media_root / row.file.name).unlink()
    stayed = make("stayed.txt", b"never left the disk")

    back = migrate_storage(to="local", models=["core.FileManager"], pending=True)

    assert (back.rows, back.copied) == (3, 3)
    assert all((media_root / r.file.name).exists() for r in moved)
    assert FileManager.objects.get(pk=stayed.pk).bucket == ""


def test_pending_trusts_the_columns_and_verify_files_checks_the_bytes(
    s3_bucket: str, media_root: Path
) -> None:
    row = make("claimed.txt", b"claimed")
    FileManager.objects.filter(pk=row.pk).update(bucket=s3_bucket)  # a row that lies

    catch_up = migrate_storage(to="s3", models=["core.FileManager"], pending=True)
    verified = verify_files(storage="s3", models=["core.FileManager"])

    assert catch_up.rows == 0  # recorded at the destination: not walked
    assert [p.kind for p in verified.problems] == ["missing"]  # the check that proves it


def test_the_command_takes_pending_and_reports_it(s3_bucket: str, media_root: Path) -> None:
    make("one.txt", b"1")
    out = io.StringIO()
    call_command("migrate_storage", "--to", "s3", "--pending", "--format", "json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["pending"] is True and report["totals"]["copied"] == 1


def test_pending_with_delete_source_is_refused(s3_bucket: str, media_root: Path) -> None:
    from storage_migrate import ConfigurationError

    row = make("kept.txt", b"kept")
    with pytest.raises(ConfigurationError, match="drop --pending"):
        migrate_storage(to="s3", pending=True, delete_source=True)
    assert (media_root / row.file.name).exists()
