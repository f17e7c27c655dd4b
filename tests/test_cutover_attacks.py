"""The cut-over's promises against a second round of attacks: a quarantine or a put-back where
hard links are refused, an interrupted quarantine, SSE-C copies, a fallback storage whose alias
is gone, rows whose names reach a file through `..`, names at the file-name limit, and
--until-stable's report (problems of rows committed in an earlier pass, models walked whole,
Ctrl-C during the pause, --limit, one pass)."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError

from core.models import FileManager
from storage_migrate import migrate_storage, stopping
from storage_migrate.errors import ConfigurationError
from tests.conftest import reset_storages
from tests.helpers import make, s3_bytes, s3_keys
from tests.test_catch_up import _arriving
from tests.test_purge_attacks import (
    _patch_client,
    md5,
    migrated,
    on_disk,
    purge,
    purge_the_bucket,
    replaced_before_the_rename,
    way_back,
)
from tests.testapp.models import Attachment

pytestmark = pytest.mark.django_db


def leftovers(root: Path) -> list[str]:
    return [p for p in on_disk(root) if p.endswith(".removing")]


def one_line(detail: str) -> None:
    assert "\n" not in detail and "Traceback" not in detail, detail


def no_links(code: int) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    return refuse


# --- where hard links are refused ---------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
def test_a_quarantine_where_links_are_refused_still_moves_the_file(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """fs.protected_hardlinks (a file of another user) or a file system without hard links:
    the file gets its name in the quarantine by a rename, never under a hidden name."""
    (row,) = migrated(1)
    monkeypatch.setattr(os, "link", no_links(code))

    report = purge(quarantine="trash")

    assert (report.purged, report.problems) == (1, [])
    assert on_disk(media_root) == [f"trash/{row.file.name}"]


def test_a_racing_upload_put_back_where_links_are_refused_keeps_its_name(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (row,) = migrated(1)
    path = media_root / str(row.file.name)
    replaced_before_the_rename(monkeypatch, path)
    monkeypatch.setattr(os, "link", no_links(errno.EPERM))

    report = purge()

    assert path.read_bytes() == b"a new upload, nowhere else"
    assert [p.kind for p in report.problems] == ["error"]
    assert leftovers(media_root) == []


def test_a_quarantine_left_under_its_temporary_name_is_finished_by_a_rerun(
    s3_bucket: str, media_root: Path
) -> None:
    """A run killed between the rename into the quarantine and the file's name there."""
    rows = migrated(2)
    name = str(rows[0].file.name)
    folder, base = os.path.split(name)
    (media_root / "trash" / folder).mkdir(parents=True)
    os.rename(media_root / name, media_root / "trash" / folder / f".{base}.0123456789ab.removing")

    report = purge(quarantine="trash")

    assert (report.purged, report.gone, report.problems) == (1, 1, [])
    assert on_disk(media_root) == sorted(f"trash/{r.file.name}" for r in rows)


@pytest.mark.parametrize("char", ["é", "あ", "😀"])
def test_a_multibyte_name_of_255_bytes_is_deleted(
    s3_bucket: str, media_root: Path, char: str
) -> None:
    base = char * (255 // len(char.encode()))
    base = base[: -(len(".txt") // len(char.encode()) + 1)] + ".txt"
    assert len(base.encode()) <= 255
    (media_root / "file_manager").mkdir()
    (media_root / "file_manager" / base).write_bytes(b"long name")
    FileManager.objects.create(file=f"file_manager/{base}")

    report = migrate_storage(to="s3", models=["core.FileManager"], delete_source=True)

    assert ([p.detail for p in report.problems], report.deleted) == ([], 1)
    assert on_disk(media_root) == []


# --- S3 ---------------------------------------------------------------------------------------


def test_an_s3_quarantine_of_sse_c_objects_sends_the_source_key(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """With customer-provided keys every read needs the key, the copy's read of its source too
    (moto does not check; AWS answers 400 without CopySourceSSECustomer*)."""
    import base64

    from botocore.exceptions import ClientError

    way_back(1)
    key = base64.b64encode(b"k" * 32).decode()
    settings.AWS_S3_OBJECT_PARAMETERS = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    reset_storages()
    sent: list[dict[str, Any]] = []

    def copy(client: Any, source: Any, bucket: str, target: str, **kwargs: Any) -> Any:
        extra = kwargs.get("ExtraArgs") or {}
        sent.append(extra)
        if "CopySourceSSECustomerKey" not in extra:
            error = {"Error": {"Code": "400"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
            raise ClientError(error, "HeadObject")
        return client.copy(source, bucket, target, **kwargs)

    _patch_client(monkeypatch, copy=copy)

    report = purge_the_bucket(quarantine="trash", workers=1)

    assert sent and sent[0].get("CopySourceSSECustomerKey") == key
    assert "CopySourceSSECustomerKey" in sent[0]
    assert report.purged + len(report.problems) == 1


# --- rows of other fields, and names through `..` -----------------------------------------------


def retire_the_fallback(settings: Any) -> None:
    """`default` is a FallbackStorage whose fallback alias is no longer in STORAGES."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storage_migrate.storage.FallbackStorage",
            "OPTIONS": {"primary": "s3", "fallback": "retired-disk"},
        },
    }
    reset_storages()


def test_purge_with_a_fallback_storage_whose_alias_is_gone_keeps_shared_files(
    s3_bucket: str, media_root: Path, settings: Any
) -> None:
    (row,) = migrated(1)
    Attachment.objects.create(upload=row.file.name)
    retire_the_fallback(settings)

    report = purge()

    assert report.purged == 0
    assert (media_root / str(row.file.name)).is_file()


def test_delete_source_with_a_fallback_storage_whose_alias_is_gone_runs(
    s3_bucket: str, media_root: Path, settings: Any
) -> None:
    make("kept.txt", b"kept")
    retire_the_fallback(settings)
    out = io.StringIO()

    call_command(
        "migrate_storage",
        *["--to", "s3", "--from", "local", "--model", "core.FileManager"],
        *["--delete-source", "--no-progress", "--format", "json"],
        stdout=out,
        stderr=io.StringIO(),
    )

    assert json.loads(out.getvalue())["totals"]["deleted"] == 1


def test_a_row_not_walked_reaching_a_file_through_dotdot_keeps_it(
    s3_bucket: str, media_root: Path
) -> None:
    """Django normalises `attachments/../f` lexically and serves `f`, though `attachments/`
    does not exist: the file stays."""
    (row,) = migrated(1)
    Attachment.objects.create(upload=f"attachments/../{row.file.name}")

    report = purge()

    assert report.purged == 0
    assert (media_root / str(row.file.name)).is_file()


@pytest.mark.parametrize("command", ["purge_source", "--delete-source"])
def test_a_walked_row_reaching_a_file_through_dotdot_keeps_it(
    s3_bucket: str, media_root: Path, command: str
) -> None:
    row = make("a.txt", b"shared")
    from django.core.files.storage import default_storage

    with default_storage.open(f"nowhere/../{row.file.name}") as served:
        assert served.read() == b"shared"
    if command == "purge_source":
        migrate_storage(to="s3", models=["core.FileManager"])
    FileManager.objects.create(file=f"nowhere/../{row.file.name}")

    if command == "purge_source":
        report = purge()
    else:
        report = migrate_storage(to="s3", models=["core.FileManager"], delete_source=True)

    assert "unsafe_name" in [p.kind for p in report.problems]
    assert (media_root / str(row.file.name)).read_bytes() == b"shared"


# --- --until-stable's report ----------------------------------------------------------------------


def test_until_stable_keeps_the_problems_of_rows_copied_in_an_earlier_pass(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make("good.txt", b"good")
    bad = make("bad.txt", b"the bytes on disk")
    FileManager.objects.filter(pk=bad.pk).update(checksum=md5(b"what the row says"))
    _arriving(monkeypatch, 0)

    report = migrate_storage(to="s3", models=["core.FileManager"], until_stable=True, pause=0)

    assert [p["copied"] for p in report.passes] == [2, 0]
    assert [p.kind for p in report.problems] == ["checksum_mismatch"]
    assert report.exit_code == 1


def test_until_stable_counts_rows_of_a_model_walked_whole_once(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(2):
        Attachment.objects.create(upload=ContentFile(b"a%d" % i, name=f"a{i}.txt"))
    make("one.txt", b"one")
    _arriving(monkeypatch, 1)

    report = migrate_storage(
        to="s3", models=["core.FileManager", "testapp.Attachment"], until_stable=True, pause=0
    )

    assert [p["copied"] for p in report.passes] == [3, 1, 0]
    assert (report.rows, report.copied, report.skipped, report.failed) == (4, 4, 0, 0)


def test_ctrl_c_during_the_pause_keeps_the_report(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage_migrate.stopping

    make("one.txt", b"one")
    make("two.txt", b"two")

    def pause(seconds: float) -> None:
        raise KeyboardInterrupt  # what stopping.sleep raises once Ctrl-C is asked

    monkeypatch.setattr(storage_migrate.stopping, "sleep", pause)

    with pytest.raises(KeyboardInterrupt) as stopped:
        migrate_storage(to="s3", models=["core.FileManager"], until_stable=True, pause=5)

    partial = stopped.value.report  # type: ignore[attr-defined]
    assert (partial.copied, partial.interrupted, partial.stable) == (2, True, None)


def test_the_command_writes_the_report_when_stopped_during_the_pause(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import storage_migrate.stopping

    make("one.txt", b"one")

    def pause(seconds: float) -> None:
        raise stopping.Terminated  # SIGTERM while waiting for the next pass

    monkeypatch.setattr(storage_migrate.stopping, "sleep", pause)
    out, path = io.StringIO(), tmp_path / "move.json"

    with pytest.raises(CommandError) as stopped:
        call_command(
            "migrate_storage",
            *["--to", "s3", "--model", "core.FileManager", "--until-stable", "--no-progress"],
            *["--report", str(path)],
            stdout=out,
            stderr=io.StringIO(),
        )

    assert stopped.value.returncode == 143
    assert "Interrupted: copied 1 file" in out.getvalue(), out.getvalue()
    assert json.loads(path.read_text())["interrupted"] is True


def test_limit_with_until_stable_is_refused(s3_bucket: str, media_root: Path) -> None:
    make("one.txt", b"one")
    with pytest.raises(ConfigurationError, match="--limit"):
        migrate_storage(to="s3", until_stable=True, limit=2)
    assert s3_keys(s3_bucket) == []


def test_one_pass_does_not_claim_files_are_arriving(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make("one.txt", b"one")
    _arriving(monkeypatch, 0)

    report = migrate_storage(to="s3", models=["core.FileManager"], until_stable=True, max_passes=1)

    assert (report.stable, report.exit_code) == (None, 0)
    assert "still arriving" not in report.to_text()
    assert md5(s3_bytes(s3_bucket, s3_keys(s3_bucket)[0])) == md5(b"one")


# --- --delete-source: one file under several names ----------------------------------------------


def test_delete_source_takes_both_hard_links_of_one_file(s3_bucket: str, media_root: Path) -> None:
    a = make("a.txt", b"one file, two names")
    b_name = str(a.file.name).replace("a.txt", "b.txt")
    os.link(media_root / str(a.file.name), media_root / b_name)
    FileManager.objects.create(file=b_name)

    report = migrate_storage(to="s3", models=["core.FileManager"], delete_source=True, workers=1)

    assert [(p.name, p.detail) for p in report.problems] == []
    assert (report.deleted, on_disk(media_root)) == (2, [])


def test_delete_source_of_a_symlink_row_and_its_target_leaves_no_dangling_link(
    s3_bucket: str, media_root: Path
) -> None:
    row = make("f0.txt", b"the target")
    folder = media_root / os.path.dirname(str(row.file.name))
    (folder / "link.txt").symlink_to(folder / "f0.txt")
    FileManager.objects.create(file=str(row.file.name).replace("f0.txt", "link.txt"))

    report = migrate_storage(to="s3", models=["core.FileManager"], delete_source=True, workers=2)

    assert (report.problems, report.deleted) == ([], 2)
    assert on_disk(media_root) == []
