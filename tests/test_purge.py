"""purge_source: a source file goes only when every row sharing it records it at the destination,
the destination's copy is proven now (never on metadata anyone can write), and the source is the
file the rows' checksum records; --dry-run, --min-age and --quarantine; each attack keeps the
file."""

from __future__ import annotations

import hashlib
import io
import json
import types
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError

from core.models import FileManager
from storage_migrate import migrate_storage
from storage_migrate.errors import ConfigurationError
from storage_migrate.migrate.purge import parse_duration, purge_source
from storage_migrate.testing import s3_client
from tests.helpers import make, s3_bytes, s3_keys
from tests.testapp.models import Attachment

pytestmark = pytest.mark.django_db


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def on_disk(media_root: Path) -> list[str]:
    return sorted(
        p.relative_to(media_root).as_posix() for p in media_root.rglob("*") if p.is_file()
    )


def migrated(count: int = 3) -> list[FileManager]:
    rows = [make(f"photo {i}.jpg", b"photo %d " % i * (i + 1)) for i in range(count)]
    report = migrate_storage(to="s3", models=["core.FileManager"])
    assert (report.copied, report.problems) == (count, [])
    return [FileManager.objects.get(pk=r.pk) for r in rows]


def purge(**options: Any) -> Any:
    options.setdefault("models", ["core.FileManager"])
    return purge_source(source="local", verified_against="s3", **options)


def kinds_by_name(report: Any) -> dict[str, str]:
    return {p.name: p.kind for p in report.problems}


def test_a_migrated_site_is_purged_and_the_bucket_keeps_every_file(
    s3_bucket: str, media_root: Path
) -> None:
    rows = migrated()
    sizes = sum(r.file_size or 0 for r in rows)

    dry = purge(dry_run=True)
    assert (dry.purged, dry.bytes_purged, dry.problems) == (3, sizes, [])
    assert len(on_disk(media_root)) == 3  # a dry run deletes nothing

    report = purge()

    assert (report.rows, report.files, report.purged, report.bytes_purged) == (3, 3, 3, sizes)
    assert (report.problems, report.exit_code, on_disk(media_root)) == ([], 0, [])
    for row in rows:
        assert md5(s3_bytes(s3_bucket, str(row.file.name))) == row.checksum
    again = purge()
    assert (again.purged, again.gone, again.problems) == (0, 3, [])


def test_a_row_not_migrated_yet_keeps_its_file_and_every_row_sharing_it(
    s3_bucket: str, media_root: Path
) -> None:
    rows = migrated(2)
    late = make("late.jpg", b"written by an old process after the move")
    # A second row that points at a migrated file, written after the move: not recorded.
    sharing = FileManager.objects.create(file=rows[0].file.name)

    report = purge()

    assert kinds_by_name(report) == {
        str(late.file.name): "not_recorded",
        str(rows[0].file.name): "not_recorded",
    }
    assert {p.pk for p in report.problems} == {late.pk, sharing.pk}
    assert "migrate_storage --to s3 --pending" in report.problems[0].detail
    assert (report.purged, report.exit_code) == (1, 1)
    assert on_disk(media_root) == sorted([str(late.file.name), str(rows[0].file.name)])


def test_a_file_another_model_shares_stays(s3_bucket: str, media_root: Path) -> None:
    """--model walks FileManager only; an Attachment row (same storage) names one of its files."""
    rows = migrated(2)
    Attachment.objects.create(upload=rows[1].file.name)

    report = purge()

    assert report.purged == 1
    assert on_disk(media_root) == [str(rows[1].file.name)]


def test_a_model_without_a_bucket_column_keeps_its_files(s3_bucket: str, media_root: Path) -> None:
    Attachment.objects.create(upload=ContentFile(b"attached", name="a.txt"))
    assert migrate_storage(to="s3", models=["testapp.Attachment"]).copied == 1

    report = purge(models=["testapp.Attachment"])

    assert [p.kind for p in report.problems] == ["not_recorded"]
    assert "no bucket column" in report.problems[0].detail
    assert on_disk(media_root) == ["attachments/a.txt"]


@pytest.mark.parametrize("forged_metadata", [False, True])
def test_a_foreign_object_of_the_same_size_at_the_destination_keeps_the_source(
    s3_bucket: str, media_root: Path, forged_metadata: bool
) -> None:
    """Someone replaced the S3 copy after the move with bytes of the same size, and (the
    forgery) gave it md5 metadata naming the source's MD5: nothing proves it, the file stays."""
    (row,) = migrated(1)
    original = (media_root / str(row.file.name)).read_bytes()
    foreign = bytes(reversed(original))
    assert foreign != original
    extra = {"Metadata": {"md5": md5(original)}} if forged_metadata else {}
    s3_client().put_object(Bucket=s3_bucket, Key=str(row.file.name), Body=foreign, **extra)

    report = purge()

    assert ([p.kind for p in report.problems], report.purged) == (["not_proven"], 0)
    assert (media_root / str(row.file.name)).read_bytes() == original


def test_a_source_changed_since_the_copy_stays(s3_bucket: str, media_root: Path) -> None:
    """The source was rewritten after the move, and its copy too (both the same new bytes):
    they are equal, but not the file the row's checksum records."""
    (row,) = migrated(1)
    changed = b"rewritten in place"
    (media_root / str(row.file.name)).write_bytes(changed)
    s3_client().put_object(Bucket=s3_bucket, Key=str(row.file.name), Body=changed)

    report = purge()

    assert [p.kind for p in report.problems] == ["checksum_mismatch"]
    assert (media_root / str(row.file.name)).read_bytes() == changed


def test_a_source_replaced_between_the_proof_and_the_delete_stays(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (row,) = migrated(1)
    path = media_root / str(row.file.name)
    import storage_migrate.endpoints.proof as proof_module

    proven = proof_module.same_bytes

    def then_replaced(*args: Any, **kwargs: Any) -> str | None:
        result = proven(*args, **kwargs)
        path.write_bytes(b"a new upload under the old name")  # the race
        return result

    monkeypatch.setattr(proof_module, "same_bytes", then_replaced)

    report = purge()

    assert [p.kind for p in report.problems] == ["error"]
    assert "source changed" in report.problems[0].detail
    assert path.read_bytes() == b"a new upload under the old name"


def test_a_destination_replaced_between_the_proof_and_the_delete_keeps_the_source(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (row,) = migrated(1)
    import storage_migrate.endpoints.proof as proof_module

    proven = proof_module.same_bytes

    def then_replaced(*args: Any, **kwargs: Any) -> str | None:
        result = proven(*args, **kwargs)
        s3_client().put_object(Bucket=s3_bucket, Key=str(row.file.name), Body=b"x")
        return result

    monkeypatch.setattr(proof_module, "same_bytes", then_replaced)

    report = purge()

    assert "no longer holds the verified copy" in report.problems[0].detail
    assert (media_root / str(row.file.name)).is_file()


def test_min_age_keeps_copies_younger_than_it(s3_bucket: str, media_root: Path) -> None:
    migrated(2)

    young = purge(min_age=parse_duration("7d"))

    assert (young.purged, young.too_young, young.problems, young.exit_code) == (0, 2, [], 0)
    assert "kept 2 younger than 1w" in young.summary()
    assert len(on_disk(media_root)) == 2
    assert purge(min_age=0).purged == 2


def test_min_age_lets_copies_older_than_it_go(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The age is the S3 object's own (its LastModified): an older copy goes, one written again
    later stays. S3 gives LastModified in whole seconds, so the clock is set from the two
    objects' own times rather than from a sleep."""
    import time

    from storage_migrate.migrate import purge as purge_module

    rows = migrated(2)
    time.sleep(1.2)  # the rewrite's LastModified is a later second than the copy's
    fresh, old = str(rows[0].file.name), str(rows[1].file.name)
    s3_client().put_object(Bucket=s3_bucket, Key=fresh, Body=(media_root / fresh).read_bytes())

    def modified(key: str) -> float:
        return s3_client().head_object(Bucket=s3_bucket, Key=key)["LastModified"].timestamp()

    fresh_at, old_at = modified(fresh), modified(old)
    assert fresh_at - old_at >= 1
    monkeypatch.setattr(purge_module, "time", types.SimpleNamespace(time=lambda: fresh_at + 0.5))

    report = purge(min_age=fresh_at - old_at)

    assert (report.purged, report.too_young, report.problems) == (1, 1, [])
    assert on_disk(media_root) == [fresh]


def test_quarantine_moves_the_files_and_deletes_nothing(s3_bucket: str, media_root: Path) -> None:
    rows = migrated(2)
    before = {str(r.file.name): (media_root / str(r.file.name)).read_bytes() for r in rows}

    report = purge(quarantine="quarantine/2026-12")

    assert (report.purged, report.problems) == (2, [])
    assert "moved 2 files to 'quarantine/2026-12'" in report.summary().lower()
    assert {
        name.removeprefix("quarantine/2026-12/"): (media_root / name).read_bytes()
        for name in on_disk(media_root)
    } == before


def test_a_quarantine_inside_an_upload_folder_is_refused(s3_bucket: str, media_root: Path) -> None:
    migrated(1)
    with pytest.raises(ConfigurationError, match="overlaps the upload folder"):
        purge(quarantine="file_manager/old")
    assert len(on_disk(media_root)) == 1


def test_the_way_back_purges_the_bucket_into_its_quarantine(
    s3_bucket: str, media_root: Path
) -> None:
    """After a move back to local: the S3 copies go to a quarantine prefix in the bucket."""
    rows = migrated(2)
    back = migrate_storage(to="local", models=["core.FileManager"])
    assert (back.skipped, back.problems) == (2, [])

    report = purge_source(
        source="s3", verified_against="local", models=["core.FileManager"], quarantine="trash"
    )

    assert (report.purged, report.problems) == (2, [])
    assert s3_keys(s3_bucket) == sorted(f"trash/{r.file.name}" for r in rows)
    for row in rows:
        assert md5(s3_bytes(s3_bucket, f"trash/{row.file.name}")) == row.checksum
    assert len(on_disk(media_root)) == 2


def test_parse_duration() -> None:
    assert [parse_duration(t) for t in ("7d", "12h", "30m", "45s", "2w", "90", "0")] == [
        604800,
        43200,
        1800,
        45,
        1209600,
        90,
        0,
    ]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("a week")


def test_the_command_reports_in_json_and_exits_1_when_a_file_stays(
    s3_bucket: str, media_root: Path, tmp_path: Path
) -> None:
    migrated(2)
    make("late.jpg", b"late")
    out, written = io.StringIO(), tmp_path / "purge.json"

    with pytest.raises(CommandError) as failed:
        call_command(
            "purge_source",
            "--from",
            "local",
            "--verified-against",
            "s3",
            "--model",
            "core.FileManager",
            "--format",
            "json",
            "--report",
            str(written),
            "--no-progress",
            stdout=out,
        )

    assert failed.value.returncode == 1
    data = json.loads(out.getvalue())
    assert data == json.loads(written.read_text())
    assert (data["command"], data["verified_against"]) == ("purge_source", "s3")
    assert (data["totals"]["purged"], data["totals"]["problems"]) == (2, 1)
    assert data["problems"][0]["kind"] == "not_recorded"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--from", "local", "--verified-against", "local"], "one alias"),
        (["--from", "local", "--verified-against", "s3", "--min-age", "a week"], "--min-age"),
        (["--from", "local", "--verified-against", "nowhere"], "nowhere"),
        (["--from", "local", "--verified-against", "s3", "--quarantine", "/"], "quarantine"),
        (["--from", "local", "--verified-against", "s3", "--quarantine", "../out"], r"'\.\.'"),
        (["--from", "local", "--verified-against", "s3", "--quarantine", "a//b"], "empty part"),
        (["--verified-against", "s3"], "--from"),
    ],
)
def test_bad_input_is_exit_2_and_deletes_nothing(
    s3_bucket: str, media_root: Path, options: list[str], message: str
) -> None:
    migrated(1)
    with pytest.raises(CommandError, match=message) as refused:
        call_command("purge_source", *options, "--no-progress")
    assert refused.value.returncode == 2
    assert len(on_disk(media_root)) == 1


def test_an_interrupted_purge_reports_what_it_deleted_and_a_rerun_finishes(
    s3_bucket: str, media_root: Path
) -> None:
    """Ctrl-C after the first chunk of files: files not started stay, the partial report counts
    exactly the files gone from the disk, and the same command finishes the job."""
    import signal

    from storage_migrate import stopping

    rows = migrated(6)

    def stop_after_the_first(result: Any) -> None:
        stopping._requested.append(signal.SIGINT)

    with stopping.stop_at_safe_points(), pytest.raises(KeyboardInterrupt) as stopped:
        purge(workers=1, batch_size=2, on_row=stop_after_the_first)

    partial = stopped.value.report  # type: ignore[attr-defined]
    left = on_disk(media_root)
    assert partial.interrupted is True
    assert 1 <= partial.purged == 6 - len(left) < 6
    assert partial.problems == []
    rest = purge()
    assert (rest.purged, rest.gone, on_disk(media_root)) == (len(left), 6 - len(left), [])
    assert len(s3_keys(s3_bucket)) == len(rows)


def test_the_command_says_each_file_at_verbosity_2(s3_bucket: str, media_root: Path) -> None:
    rows = migrated(2)
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "purge_source",
        *["--from", "local", "--verified-against", "s3", "--model", "core.FileManager"],
        *["--dry-run", "--no-progress", "--quarantine", "old"],
        verbosity=2,
        stdout=out,
        stderr=err,
    )

    lines = err.getvalue().splitlines()
    assert sorted(line.split("'")[1] for line in lines) == sorted(str(r.file.name) for r in rows)
    assert all(line.startswith("would quarantine  core.FileManager pk=") for line in lines)
    assert "Would move 2 files to 'old'" in out.getvalue()
    assert len(on_disk(media_root)) == 2
