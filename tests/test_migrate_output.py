"""What migrate_storage says: what --delete-source deleted (and a dry run would), an interrupted
run's partial report, SIGTERM handled as Ctrl-C."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate import migrate_storage
from storage_migrate.testing import s3_client
from tests.conftest import ManagePy
from tests.helpers import make

pytestmark = pytest.mark.django_db


def test_delete_source_counts_what_it_deleted_and_a_dry_run_what_it_would(
    s3_bucket: str, media_root: Path
) -> None:
    rows = [make(f"d{i}.txt", b"x" * (10 + i)) for i in range(3)]
    shared = make("s.txt", b"shared")
    type(shared).objects.filter(pk=shared.pk).update(
        file=rows[0].file.name, checksum=rows[0].checksum, file_size=rows[0].file_size
    )
    said: list[tuple[Any, int]] = []

    dry = migrate_storage(to="s3", delete_source=True, dry_run=True)
    real = migrate_storage(
        to="s3", delete_source=True, on_deleted=lambda row, size: said.append((row.pk, size))
    )

    assert (dry.deleted, dry.bytes_deleted) == (3, 10 + 11 + 12)
    assert (real.deleted, real.bytes_deleted) == (3, 10 + 11 + 12)
    assert real.totals["deleted"] == 3 and real.totals["bytes_deleted"] == 33
    assert sorted(size for _, size in said) == [10, 11, 12]
    assert all(not (media_root / r.file.name).exists() for r in rows)


@pytest.mark.parametrize("dry_run", [True, False])
def test_each_deletion_is_a_line_at_verbosity_2(
    s3_bucket: str, media_root: Path, dry_run: bool
) -> None:
    import io

    from django.core.management import call_command

    row = make("gone.txt", b"12345")
    out, err = io.StringIO(), io.StringIO()
    args = ["--to", "s3", "--delete-source", "--no-progress", "-v", "2"]

    call_command(
        "migrate_storage", *args, *(["--dry-run"] if dry_run else []), stdout=out, stderr=err
    )

    verb = "would delete" if dry_run else "deleted"
    assert f"{verb:<17} core.FileManager pk={row.pk} {row.file.name!r} (5 B)" in err.getvalue()
    assert (media_root / row.file.name).exists() is dry_run


@pytest.mark.e2e
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_commit_what_was_verified_and_report_it(
    manage_py: ManagePy,
    http_bucket: str,
    moto_endpoint: str,
    media_root: Path,
    tmp_path: Path,
    sig: int,
    status: int,
) -> None:
    """Kubernetes and systemd stop a Job with SIGTERM: handled as Ctrl-C is, and both print
    the partial summary and write the report, marked as interrupted."""
    rows = [
        FileManager.objects.create(file=ContentFile(os.urandom(3000), name=f"t {i}.bin"))
        for i in range(400)
    ]
    report_path = tmp_path / "partial.json"
    args = ["migrate_storage", "--to", "s3", "--no-progress", "--workers", "2"]
    s3 = s3_client(moto_endpoint)
    process = manage_py.start(*args, "--report", str(report_path))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and s3.list_objects_v2(Bucket=http_bucket)["KeyCount"] < 20:
        time.sleep(0.01)
    process.send_signal(sig)
    stdout, stderr = manage_py.finish(process, 60)

    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert stdout.startswith("local -> s3: Interrupted: copied "), stdout
    partial = json.loads(report_path.read_text())
    assert partial["interrupted"] is True
    committed = {
        pk: name
        for pk, name in FileManager.objects.filter(bucket=http_bucket).values_list(
            "pk", "object_key"
        )
    }
    assert 0 < len(committed) < len(rows)
    assert partial["totals"]["copied"] >= len(committed)
    for pk, name in committed.items():
        body = s3.get_object(Bucket=http_bucket, Key=name)["Body"].read()
        assert hashlib.md5(body).hexdigest() == FileManager.objects.get(pk=pk).checksum


def test_the_text_shows_the_first_problems_of_each_kind_in_pk_order(
    s3_bucket: str, media_root: Path, tmp_path: Path
) -> None:
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    rows = [make(f"m{i}.txt", b"x") for i in range(14)]
    for row in rows:
        (media_root / row.file.name).unlink()  # all missing
    out = io.StringIO()
    report_path = tmp_path / "all.json"

    with pytest.raises(CommandError) as raised:
        call_command(
            "migrate_storage",
            "--to",
            "s3",
            "--no-progress",
            "--report",
            str(report_path),
            stdout=out,
        )

    lines = out.getvalue().splitlines()
    shown = [line for line in lines if line.startswith("  missing")]
    assert all(f"pk={r.pk} " in line for r, line in zip(rows[:10], shown, strict=True))
    assert len(shown) == 10
    assert lines[-1] == f"  ... and 4 more missing ({report_path} has all of them)"
    assert len(json.loads(report_path.read_text())["problems"]) == 14
    assert str(raised.value) == f"14 problem(s); the report has all of them: {report_path}."


def test_a_dry_run_predicts_rows_that_share_a_file_and_says_so_in_the_conditional(
    s3_bucket: str, media_root: Path
) -> None:
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    first = make("shared.png", b"one avatar")
    for i in range(4):
        other = make(f"o{i}.png", b"one avatar")
        FileManager.objects.filter(pk=other.pk).update(file=first.file.name)
    make("alone.txt", b"alone")
    wrong = make("wrong size.txt", b"12345")
    FileManager.objects.filter(pk=wrong.pk).update(file_size=99)
    err = io.StringIO()
    out = io.StringIO()

    with pytest.raises(CommandError):  # the size mismatch: exit 1
        call_command(
            "migrate_storage",
            "--to",
            "s3",
            "--dry-run",
            "--no-progress",
            "-v",
            "2",
            "--format",
            "json",
            stdout=out,
            stderr=err,
        )
    dry = json.loads(out.getvalue())
    real = migrate_storage(to="s3")

    assert dry["totals"]["copied"] == real.copied == 3
    assert dry["totals"]["skipped"] == real.skipped == 4
    assert "would copy" in err.getvalue() and "would skip" in err.getvalue()
    assert " copied " not in err.getvalue()
    detail = next(p["detail"] for p in dry["problems"] if p["kind"] == "size_mismatch")
    assert detail.endswith("size column would be corrected")


def test_a_configuration_error_is_written_to_the_report_files_too(
    s3_bucket: str, tmp_path: Path, settings: Any
) -> None:
    """A pipeline shows the report file: a run that cannot start says why there as well."""
    from xml.etree import ElementTree as ET

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from tests.conftest import reset_storages

    settings.AWS_STORAGE_BUCKET_NAME = "no-such-bucket"
    reset_storages()
    report_path, junit = tmp_path / "m.json", tmp_path / "v.xml"

    with pytest.raises(CommandError) as migrating:
        call_command("migrate_storage", "--to", "s3", "--no-progress", "--report", str(report_path))
    with pytest.raises(CommandError) as verifying:
        call_command(
            "verify_files",
            "--storage",
            "nowhere",
            "--no-progress",
            "--format",
            "junit",
            "--output",
            str(junit),
        )

    assert migrating.value.returncode == verifying.value.returncode == 2
    written = json.loads(report_path.read_text())
    assert written["error"] == str(migrating.value)
    assert "no-such-bucket" in written["error"]
    assert written["totals"]["copied"] == 0 and written["problems"] == []
    suite = ET.fromstring(junit.read_text())
    assert suite.get("errors") == "1"
    error = suite.find("testcase/error")
    assert error is not None and error.get("message") == str(verifying.value)


@pytest.mark.e2e
def test_a_connection_killed_mid_run_is_opened_again_and_the_run_finishes(
    manage_py: ManagePy, http_bucket: str, moto_endpoint: str, media_root: Path
) -> None:
    """PostgreSQL's pg_terminate_backend after the first commits: the next batch read (and
    commit) reconnects, and every row ends migrated."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's (CI runs the suite on PostgreSQL too)")
    rows = [
        FileManager.objects.create(file=ContentFile(os.urandom(500), name=f"k {i}.bin"))
        for i in range(1500)
    ]
    args = ["migrate_storage", "--to", "s3", "--no-progress", "--batch-size", "100"]
    process = manage_py.start(*args)
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline and not FileManager.objects.filter(bucket=http_bucket).exists()
    ):
        time.sleep(0.01)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (killed,) = cursor.fetchone()
    stdout, stderr = manage_py.finish(process, 120)

    assert killed >= 1
    assert process.returncode == 0, stdout + stderr
    assert FileManager.objects.filter(bucket=http_bucket).count() == len(rows)


def test_a_database_that_stays_away_stops_the_run_with_its_report(
    s3_bucket: str, media_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import OperationalError

    from storage_migrate import rows as rows_module

    for i in range(5):
        make(f"w{i}.txt", b"w")
    real_first = rows_module._first
    calls = {"n": 0}

    def first_then_gone(queryset: Any, count: int) -> list[Any]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_first(queryset, count)

    monkeypatch.setattr(rows_module, "_first", first_then_gone)
    monkeypatch.setattr("storage_migrate.rows.time.sleep", lambda seconds: None)
    out, report_path = io.StringIO(), tmp_path / "r.json"

    with pytest.raises(CommandError) as raised:
        call_command(
            "migrate_storage",
            "--to",
            "s3",
            "--no-progress",
            "--batch-size",
            "2",
            "--report",
            str(report_path),
            stdout=out,
        )

    assert raised.value.returncode == 2
    assert "database went away" in str(raised.value) and "\n" not in str(raised.value)
    assert out.getvalue().startswith("local -> s3: Interrupted: copied ")
    assert json.loads(report_path.read_text())["interrupted"] is True
    assert calls["n"] == 1 + rows_module.READ_ATTEMPTS


# --- colour -----------------------------------------------------------------------------------


def migrate_coloured(*args: str, **options: Any) -> tuple[int, str]:
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    try:
        call_command("migrate_storage", "--to", "s3", "--no-progress", *args, stdout=out, **options)
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


def test_problem_lines_are_painted_in_djangos_style(s3_bucket: str, media_root: Path) -> None:
    from tests.test_verify_output import ESCAPE, STYLE, uncoloured

    lost = make("lost.txt", b"gone")
    (media_root / lost.file.name).unlink()
    make("kept.txt", b"here")

    status, out = migrate_coloured(force_color=True)

    assert status == 1
    lines = out.splitlines()
    assert ESCAPE in lines[0]
    assert lines == [STYLE.ERROR(uncoloured(text)) for text in lines]  # a failing run: all red
    assert uncoloured(lines[1]).startswith("  missing")

    status, out = migrate_coloured("-v", "0", force_color=True)  # the problem line alone
    assert status == 1
    assert out.splitlines() == [STYLE.ERROR(uncoloured(out.rstrip("\n")))]


def test_a_clean_run_is_green_and_no_color_json_or_a_pipe_are_plain(
    s3_bucket: str, media_root: Path
) -> None:
    from tests.test_verify_output import ESCAPE, STYLE, uncoloured

    make("fine.txt", b"fine")
    status, out = migrate_coloured(force_color=True)
    assert status == 0
    assert out == STYLE.SUCCESS(uncoloured(out.rstrip("\n"))) + "\n"

    for args, options in [((), {"no_color": True}), (("--format", "json"), {"force_color": True})]:
        status, out = migrate_coloured(*args, **options)
        assert status == 0
        assert ESCAPE not in out
    status, out = migrate_coloured()  # a StringIO is a pipe: not painted
    assert ESCAPE not in out


def test_an_interrupted_summary_is_a_warning() -> None:
    from django.core.management.color import color_style

    from storage_migrate.management.commandline import paint
    from storage_migrate.report import SUMMARY, MigrationReport

    style = color_style(force_color=True)
    report = MigrationReport(source="local", destination="s3", interrupted=True)
    assert paint(style, report, SUMMARY, "x") == style.WARNING("x")
    report.interrupted = False
    assert paint(style, report, SUMMARY, "x") == style.SUCCESS("x")
    assert paint(None, report, SUMMARY, "x") == "x"
