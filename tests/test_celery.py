"""migrate_storage on Celery without a broker: the batch task on a primary-key range, the cutting
into batches, the gathering of batch reports into one, and the options --enqueue refuses.
(tests/test_celery_e2e.py runs real workers against Redis.)"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage
from storage_migrate.conf import get_conf
from storage_migrate.migrate.batches import Batch, split_batches
from storage_migrate.migrate.enqueue import Enqueued, enqueue_migration, gather_batches
from storage_migrate.migrate.gather import Gathering
from storage_migrate.migrate.plan import PkRange
from storage_migrate.report import MigrationReport, Problem, problems
from storage_migrate.targets import resolve_targets
from tests.conftest import MANAGE
from tests.helpers import make, md5, s3_bytes, s3_keys

pytestmark = pytest.mark.django_db


def rows(n: int) -> list[FileManager]:
    return [make(f"batch {i}.bin", os.urandom(100 + i)) for i in range(n)]


def test_the_task_migrates_its_range_and_nothing_else(s3_bucket: str, media_root: Path) -> None:
    pytest.importorskip("celery")
    from storage_migrate.tasks import migrate_batch

    made = rows(8)
    inside = made[2:6]
    before = {r.pk: (media_root / r.file.name).read_bytes() for r in made}

    # Called, not sent: the task's own function, in this process.
    data = migrate_batch("s3", "local", "core.FileManager", "file", inside[0].pk, inside[-1].pk)

    assert json.loads(json.dumps(data)) == data  # what a result backend stores
    assert data["totals"]["rows"] == 4
    assert data["totals"]["copied"] == 4
    assert data["problems"] == []
    assert s3_keys(s3_bucket) == sorted(str(r.file.name) for r in inside)
    for row in FileManager.objects.all():
        if inside[0].pk <= row.pk <= inside[-1].pk:
            assert row.bucket == s3_bucket
            assert s3_bytes(s3_bucket, row.object_key) == before[row.pk]
            assert row.checksum == md5(before[row.pk])
        else:
            assert row.bucket == "", row.pk  # untouched


def test_pk_range_is_refused_with_delete_source(s3_bucket: str) -> None:
    rows(2)
    with pytest.raises(ConfigurationError, match="purge_source"):
        migrate_storage(to="s3", delete_source=True, pk_range=PkRange(1, 10**9))
    assert s3_keys(s3_bucket) == []


def test_split_cuts_disjoint_ranges_of_the_rows_in_key_order(s3_bucket: str) -> None:
    made = rows(7)
    make("", b"")  # no file: not a row to walk
    pks = [r.pk for r in made]
    targets = resolve_targets(["core.FileManager"], get_conf())

    batches = list(split_batches(targets, 3))

    assert [(b.pk_min, b.pk_max, b.rows) for b in batches] == [
        (pks[0], pks[2], 3),
        (pks[3], pks[5], 3),
        (pks[6], pks[6], 1),
    ]
    assert [(b.model, b.field) for b in batches] == [("core.FileManager", "file")] * 3
    limited = list(split_batches(targets, 3, limit=4))
    assert [(b.pk_min, b.pk_max, b.rows) for b in limited] == [
        (pks[0], pks[2], 3),
        (pks[3], pks[3], 1),
    ]
    # --pending: rows recorded at the destination are left out of the batches.
    migrate_storage(to="s3", pk_range=PkRange(pks[0], pks[3]))
    from storage_migrate.endpoints.factory import endpoint_for

    pending = list(split_batches(targets, 2, pending_at=endpoint_for("s3", get_conf())))
    assert [(b.pk_min, b.pk_max, b.rows) for b in pending] == [
        (pks[4], pks[5], 2),
        (pks[6], pks[6], 1),
    ]


def batch_report(
    rows: int, copied: int, skipped: int, kinds: list[str], *, pk: int, notes: list[str]
) -> dict[str, Any]:
    """A batch's report as the task returns it (through JSON)."""
    report = MigrationReport(source="local", destination="s3", notes=notes)
    report.rows, report.copied, report.skipped = rows, copied, skipped
    report.bytes_copied = copied * 10
    report.copied_server_side = copied // 2
    report.cost = {"requests": {"put_copy_post_list": copied, "get_head": 1}, "bytes_sent": 10}
    for i, kind in enumerate(kinds):
        report.problems.append(
            Problem(kind, "core.FileManager", "file", pk + i, f"f{pk + i}", "why", 1, [2, 3])
        )
    data: dict[str, Any] = json.loads(report.to_json())
    report.close()
    return data


def test_gathering_adds_every_batch_once_and_keeps_every_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(problems, "MEMORY_PROBLEMS", 3)  # the merged log spills to disk too
    gathering = Gathering("local", "s3", dry_run=False, pending=False)
    first = Batch("core.FileManager", "file", 1, 10, 10)
    second = Batch("core.FileManager", "file", 11, 20, 10)
    third = Batch("core.FileManager", "file", 21, 25, 5)
    lost = Batch("tests.Attachment", "file", 5, 9, 4)
    note = "the store refused the listing of multipart uploads"
    gathering.add(first, batch_report(10, 7, 1, ["missing", "conflict"], pk=1, notes=[note]))
    gathering.add(second, batch_report(10, 4, 6, [], pk=11, notes=[note]))
    gathering.fail(lost, "its task failed (WorkerLostError: gone)")
    gathering.add(
        third, batch_report(5, 1, 1, ["missing", "error", "unverifiable"], pk=21, notes=[])
    )

    report = gathering.finish()

    assert report.totals == {
        "rows": 29,
        "copied": 12,
        "skipped": 8,
        "at_destination": 0,
        "failed": 9,  # 2 + 3 rows with problems, and the lost batch's 4
        "problems": 6,
        "bytes_copied": 120,
        "copied_server_side": 3 + 2 + 0,
        "deleted": 0,
        "bytes_deleted": 0,
    }
    assert report.cost["requests"]["put_copy_post_list"] == 12
    assert report.cost["bytes_sent"] == 30
    assert report.problems.path is not None  # spilled, and read back whole
    assert [(p.kind, p.pk) for p in report.problems] == [
        ("missing", 1),
        ("conflict", 2),
        ("error", None),
        ("missing", 21),
        ("error", 22),
        ("unverifiable", 23),
    ]
    assert report.problems[0].expected == 1 and report.problems[0].actual == [2, 3]
    failed = report.problems[2]
    assert (failed.model, failed.field, failed.name) == ("tests.Attachment", "file", "pk 5..9")
    assert "4 rows" in failed.detail and "WorkerLostError" in failed.detail
    assert report.notes == [note]
    assert report.exit_code == 1
    assert gathering.batches == 4
    text = report.to_text()
    assert "error             tests.Attachment 'pk 5..9': batch of 4 rows" in text
    report.close()


def test_a_report_survives_its_json_form() -> None:
    data = batch_report(3, 2, 0, ["missing"], pk=7, notes=["a note"])
    again = MigrationReport.from_dict(data)
    assert json.loads(again.to_json()) == data


class FakeResult:
    """celery.result.AsyncResult, answered from a table: task id -> (state, value)."""

    table: dict[str, tuple[str, Any]] = {}
    forgotten: list[str] = []

    def __init__(self, task: str, app: Any = None) -> None:
        self.task = task

    def ready(self) -> bool:
        return self.table[self.task][0] in ("SUCCESS", "FAILURE")

    def successful(self) -> bool:
        return self.table[self.task][0] == "SUCCESS"

    @property
    def result(self) -> Any:
        return self.table[self.task][1]

    def forget(self) -> None:
        self.forgotten.append(self.task)


def test_gather_polls_results_and_names_the_failed_and_unfinished_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    celery_result = pytest.importorskip("celery.result")
    monkeypatch.setattr(celery_result, "AsyncResult", FakeResult)
    batches = [Batch("core.FileManager", "file", i * 10 + 1, i * 10 + 10, 10) for i in range(3)]
    enqueued = Enqueued("local", "s3", False, False, sent=list(zip(batches, "abc", strict=True)))
    FakeResult.table = {
        "a": ("SUCCESS", batch_report(10, 10, 0, [], pk=1, notes=[])),
        "b": ("FAILURE", RuntimeError("disk full")),
        "c": ("STARTED", None),
    }
    FakeResult.forgotten = []
    done: list[tuple[str, bool]] = []

    report = gather_batches(
        enqueued,
        timeout=0.2,
        poll=0.05,
        on_batch=lambda batch, part: done.append((str(batch), part is not None)),
    )

    assert done == [
        ("core.FileManager.file pk 1..10", True),
        ("core.FileManager.file pk 11..20", False),
    ]
    assert sorted(FakeResult.forgotten) == ["a", "b"]  # an unfinished result stays to be read
    assert (report.rows, report.copied, report.failed) == (30, 10, 20)
    assert [(p.name, p.detail) for p in report.problems] == [
        ("pk 11..20", "batch of 10 rows: its task failed (RuntimeError: disk full)"),
        ("pk 21..30", "batch of 10 rows: not finished after 0.2 s (it may still run on a worker)"),
    ]


def command(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("migrate_storage", *args, stdout=out, stderr=out)
    except CommandError as exc:
        return exc.returncode, str(exc)
    return 0, out.getvalue()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--enqueue", "--delete-source"], "--delete-source is not for --enqueue"),
        (["--enqueue", "--until-stable"], "--until-stable is not for --enqueue"),
        (["--enqueue", "--wait-timeout", "5"], "--wait-timeout goes with --wait"),
        (["--wait"], "--wait go(es) with --enqueue"),
        (["--batch-rows", "10"], "--batch-rows go(es) with --enqueue"),
    ],
)
def test_options_enqueue_cannot_honour_exit_2(s3_bucket: str, args: list[str], says: str) -> None:
    rows(1)
    status, text = command("--to", "s3", "--no-progress", *args)
    assert status == 2
    assert says in text and "\n" not in text
    assert s3_keys(s3_bucket) == []


def test_enqueue_sends_to_the_app_the_settings_name(settings: Any, s3_bucket: str) -> None:
    pytest.importorskip("celery")
    from tests.celery_named import app

    # Imported only now, by the sending: no start of the project imports it.
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "CELERY_APP": "tests.celery_named.app"}
    made = rows(3)

    enqueued = enqueue_migration(to="s3", batch_rows=2, results=False)

    assert enqueued.app is app
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue("named-test")
        messages = [queue.get(timeout=5) for _ in range(2)]
        queue.close()
    assert [m.headers["task"] for m in messages] == ["storage_migrate.migrate_batch"] * 2
    assert [m.decode()[0][4:] for m in messages] == [
        [made[0].pk, made[1].pk],
        [made[2].pk, made[2].pk],
    ]
    assert s3_keys(s3_bucket) == []  # sent, not run


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("tests.nowhere.app", "is 'tests.nowhere.app', which cannot be imported (No module"),
        (
            "tests.celery_named.NOT_AN_APP",
            "is 'tests.celery_named.NOT_AN_APP', a str, not a Celery",
        ),
    ],
)
def test_enqueue_to_an_app_the_settings_name_wrong_exits_2(
    settings: Any, s3_bucket: str, name: str, says: str
) -> None:
    pytest.importorskip("celery")
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "CELERY_APP": name}
    rows(1)
    status, text = command("--to", "s3", "--no-progress", "--enqueue")
    assert status == 2
    assert text.startswith("STORAGE_MIGRATE['CELERY_APP'] ") and says in text
    assert "\n" not in text


class Stop(KeyboardInterrupt):
    pass


def test_ctrl_c_while_waiting_keeps_what_was_gathered(monkeypatch: pytest.MonkeyPatch) -> None:
    celery_result = pytest.importorskip("celery.result")
    monkeypatch.setattr(celery_result, "AsyncResult", FakeResult)
    batches = [Batch("core.FileManager", "file", i * 10 + 1, i * 10 + 10, 10) for i in range(2)]
    enqueued = Enqueued("local", "s3", False, False, sent=list(zip(batches, "ab", strict=True)))
    FakeResult.table = {
        "a": ("SUCCESS", batch_report(10, 9, 1, [], pk=1, notes=[])),
        "b": ("STARTED", None),
    }

    def stop(batch: Batch, part: Any) -> None:
        raise Stop  # as stopping.check() raises it at the next safe point

    with pytest.raises(Stop) as stopped:
        gather_batches(enqueued, poll=0.01, on_batch=stop)

    partial = stopped.value.report  # type: ignore[attr-defined]
    assert partial.interrupted
    assert (partial.rows, partial.copied, partial.skipped, partial.problems) == (10, 9, 1, [])


@pytest.mark.e2e
def test_without_celery_the_site_runs_and_enqueue_says_what_to_install(manage_py: Any) -> None:
    rows(2)
    # Celery made unimportable (find_spec() says it is not there), as without the extra.
    hide = "import sys, runpy; sys.modules['celery'] = None; sys.argv[0] = 'manage.py'; "
    run = "runpy.run_path('manage.py', run_name='__main__')"

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", hide + run, "migrate_storage", "--to", "s3", *args]
        return subprocess.run(
            command, env=manage_py.env, cwd=MANAGE.parent, capture_output=True, text=True
        )

    plain = manage("--dry-run", "--no-progress")
    assert plain.returncode == 0, plain.stderr
    assert "Dry run: would copy 2 files" in plain.stdout
    queued = manage("--enqueue", "--no-progress")
    assert queued.returncode == 2
    assert queued.stderr.strip().splitlines() == [
        "CommandError: --enqueue needs Celery: pip install 'django-storage-migrate[celery]'"
    ]
