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
from tests.helpers import kinds, make, s3_keys
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


# --- files written to the destination after the switch -------------------------------------


def _uploaded_after_the_switch(name: str, data: bytes) -> Attachment:
    """What the site does once `default` writes to S3: the file goes to the bucket only."""
    from django.core.files.storage import storages

    saved = storages["s3"].save(f"attachments/{name}", ContentFile(data))
    return Attachment.objects.create(upload=saved)


def test_a_file_written_to_the_destination_after_the_switch_is_not_missing(
    s3_bucket: str, media_root: Path
) -> None:
    """The Wagtail case: a model without metadata columns is walked whole, and every file the
    site wrote to S3 since the switch has no source. Those rows are counted apart, the run
    succeeds, and nothing is written to them; a file missing everywhere is still `missing`."""
    Attachment.objects.create(upload=ContentFile(b"before", name="before.txt"))
    assert migrate_storage(to="s3", models=["testapp.Attachment"]).copied == 1
    new = [_uploaded_after_the_switch(f"new {i}.txt", b"new upload %d" % i) for i in range(3)]

    catch_up = migrate_storage(to="s3", models=["testapp.Attachment"], pending=True)

    assert (catch_up.rows, catch_up.skipped, catch_up.at_destination) == (4, 1, 3)
    assert (catch_up.failed, catch_up.problems, catch_up.exit_code) == (0, [], 0)
    assert "3 only at the destination" in catch_up.summary()
    assert [str(a.upload.name) for a in Attachment.objects.filter(pk__in=[a.pk for a in new])] == [
        str(a.upload.name) for a in new
    ]

    Attachment.objects.create(upload="attachments/lost.txt")  # on neither side
    lost = migrate_storage(to="s3", models=["testapp.Attachment"])
    assert (lost.at_destination, kinds(lost), lost.exit_code) == (3, ["missing"], 1)
    assert lost.problems[0].name == "attachments/lost.txt"


def test_an_object_of_another_size_than_the_row_records_is_missing(
    s3_bucket: str, media_root: Path
) -> None:
    """Without a checksum the size still tells: an object at the destination that is not the
    size the row records is not its file, and the row is `missing`, not found."""
    from django.core.files.storage import storages

    from tests.testapp.models import Clip

    name = storages["s3"].save("clips/talk.mp4", ContentFile(b"someone else's bytes"))
    clip = Clip.objects.create(video=name, file_size=5)

    report = migrate_storage(to="s3", models=["testapp.Clip"])

    assert (report.at_destination, kinds(report)) == (0, ["missing"])
    assert "not the size the row records" in report.problems[0].detail
    clip.refresh_from_db()
    assert (clip.file_size, clip.bucket, clip.object_key) == (5, "", "")


def test_the_command_counts_rows_found_only_at_the_destination(
    s3_bucket: str, media_root: Path
) -> None:
    _uploaded_after_the_switch("after.txt", b"after the switch")
    out = io.StringIO()

    call_command(
        "migrate_storage",
        "--to",
        "s3",
        "--model",
        "testapp.Attachment",
        "--format",
        "json",
        "--no-progress",
        stdout=out,
    )

    totals = json.loads(out.getvalue())["totals"]
    assert (totals["at_destination"], totals["failed"], totals["problems"]) == (1, 0, 0)


# --- --until-stable --------------------------------------------------------------------------


def _arriving(monkeypatch: pytest.MonkeyPatch, pauses_with_new_files: int) -> list[float]:
    """Old processes still writing to disk: a new file (and row) appears during each of the
    first ``pauses_with_new_files`` pauses between passes. Returns the pauses taken."""
    import storage_migrate.stopping

    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) <= pauses_with_new_files:
            make(f"late {len(pauses)}.txt", b"written by an old process %d" % len(pauses))

    monkeypatch.setattr(storage_migrate.stopping, "sleep", pause)
    return pauses


def test_until_stable_repeats_pending_passes_until_one_copies_nothing(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [make(f"row {i}.txt", b"row %d" % i) for i in range(3)]
    FileManager.objects.create(file="file_manager/lost.txt")  # missing in every pass
    pauses = _arriving(monkeypatch, 2)

    report = migrate_storage(to="s3", models=["core.FileManager"], until_stable=True, pause=0.25)

    assert pauses == [0.25, 0.25, 0.25]
    assert [p["copied"] for p in report.passes] == [3, 1, 1, 0]
    assert (report.stable, report.pending) == (True, True)
    # Each row once: 5 copied, the missing one once (it is walked again in every pass).
    assert (report.rows, report.copied, report.failed, kinds(report)) == (6, 5, 1, ["missing"])
    assert "stable after 4 passes" in report.summary()
    assert len(s3_keys(s3_bucket)) == len(rows) + 2


def test_until_stable_is_bounded_and_says_the_files_still_arrive(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make("first.txt", b"first")
    _arriving(monkeypatch, 100)

    report = migrate_storage(to="s3", until_stable=True, max_passes=3, pause=0)

    assert [p["copied"] for p in report.passes] == [1, 1, 1]
    assert (report.stable, report.problems, report.exit_code) == (False, [], 1)
    assert "not stable after 3 passes: the last copied 1" in report.summary()
    assert "run the same command again once the deploy is over" in report.to_text()


def test_the_command_takes_until_stable(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make("one.txt", b"one")
    _arriving(monkeypatch, 1)
    out = io.StringIO()

    call_command(
        "migrate_storage",
        "--to",
        "s3",
        "--until-stable",
        "--pause",
        "0.5",
        "--format",
        "json",
        "--no-progress",
        stdout=out,
    )

    data = json.loads(out.getvalue())
    assert (data["pending"], data["stable"], len(data["passes"])) == (True, True, 3)
    assert data["totals"]["copied"] == 2


@pytest.mark.parametrize("option", [["--pause", "-1"], ["--pause", "nan"], ["--max-passes", "0"]])
def test_bad_until_stable_options_are_refused(option: list[str]) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=option[0]) as refused:
        call_command("migrate_storage", "--to", "s3", "--until-stable", *option)
    assert refused.value.returncode == 2


def test_until_stable_with_delete_source_is_refused(s3_bucket: str, media_root: Path) -> None:
    from storage_migrate.errors import ConfigurationError

    make("kept.txt", b"kept")
    with pytest.raises(ConfigurationError, match="--pending"):
        migrate_storage(to="s3", until_stable=True, delete_source=True)
    assert (media_root / FileManager.objects.get().file.name).read_bytes() == b"kept"
