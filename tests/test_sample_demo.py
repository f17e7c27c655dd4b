"""`make demo` runs to completion and shows what it says: the demo script, end to end, with a small
number of files; and Ctrl-C stops it without a traceback."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from storage_migrate.testing import s3_client
from tests.conftest import REPO

DEMO = REPO / "sample_project" / "demo.py"
BUCKET = "shams-vision-media"
AWKWARD = (" ", "é", "+", "&", "%")
MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


def demo_env(tmp_path: Path) -> dict[str, str]:
    # No PYTHONUNBUFFERED: the demo's own lines must come before its steps' output in a pipe.
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    tmp_path = tmp_path_factory.mktemp("demo")
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(DEMO), "--count", "40", "--large", "1", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=demo_env(tmp_path),
    )
    return result, workdir


def test_demo_runs_to_completion(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, workdir = demo
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "Created 40 files" in result.stdout
    assert "Demo finished" in result.stdout
    assert "the server is stopped" in result.stdout
    assert (workdir / "db.sqlite3").is_file()


def test_each_step_is_announced_before_its_output(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    out = demo[0].stdout
    assert out.index("[2]") < out.index("Created 40 files") < out.index("[3]")
    assert out.index("[3]") < out.index("local -> s3: Copied 20 files") < out.index("[4]")
    assert out.index("[5]") < out.index("local -> s3: Copied 19 files") < out.index("[6]")
    assert out.index("[7]") < out.index("Verified 40 rows") < out.index("[8]")


def test_a_file_is_served_from_each_side_during_a_half_finished_move(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    out = demo[0].stdout
    served = out[out.index("[4]") : out.index("[5]")]
    assert "default storage: FallbackStorage (primary s3, fallback local)" in served
    from_s3 = re.search(r"pk=1 '.+': (\d+) bytes read from S3\n +linked as (\S+)", served)
    from_disk = re.search(
        r"pk=21 '.+': (\d+) bytes read from the disk.*\n +linked as (\S+)", served
    )
    assert from_s3 and from_disk, served
    assert int(from_s3[1]) > 16 * MiB and int(from_disk[1]) > 0  # the multipart one, from S3
    assert f"/{BUCKET}/file_manager/" in from_s3[2] and from_disk[2].startswith("/media/")
    assert "stable after 2 passes" in out[out.index("[5]") : out.index("[6]")]


def test_a_move_to_another_bucket_would_stay_inside_the_store(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    later = demo[0].stdout[demo[0].stdout.index("[9]") :]
    assert "s3 -> s3_new: Dry run: would copy 39 files" in later
    assert "39 server-side, 0 streamed" in later
    assert "A real run would send about" in later
    assert "0 B sent, 0 B received" in later  # no byte through this machine


def test_the_purge_dry_run_lists_and_deletes_nothing(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, workdir = demo
    purge = result.stdout[result.stdout.index("[8]") : result.stdout.index("[9]")]
    assert "Dry run: would delete 39 files" in purge
    assert re.search(r"not_recorded +core\.FileManager pk=40 ", purge)
    assert len([p for p in (workdir / "media").rglob("*") if p.is_file()]) == 39


def test_names_with_awkward_characters_reach_the_bucket(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    out, workdir = demo[0].stdout, demo[1]
    listed = out.split("Keys as the site named them", 1)[1].split("Largest object", 1)[0]
    for char in AWKWARD:
        assert any(char in line for line in listed.splitlines()[1:]), (char, listed)
    with contextlib.closing(sqlite3.connect(workdir / "db.sqlite3")) as db:
        in_bucket = [
            n for (n,) in db.execute("SELECT file FROM core_filemanager WHERE bucket=?", [BUCKET])
        ]
    assert len(in_bucket) == 39
    for char in AWKWARD:
        assert any(char in name for name in in_bucket), char
    # Each was verified in S3 under that name by verify_files (step 5).
    assert "Verified 40 rows at level checksum on s3: 39 ok, 1 problem (1 missing)" in out


def test_the_large_file_goes_up_in_parts(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    out = demo[0].stdout
    match = re.search(r"Largest object: .+ \(([\d.]+) MB\), ETag [0-9a-f]{32}-(\d+): ", out)
    assert match, out
    assert float(match[1]) * 1e6 > 16 * MiB
    assert int(match[2]) >= 2
    assert "Files from 16 MiB go to S3 in parts" in out


def test_the_planted_missing_file_is_reported_and_explained(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, workdir = demo
    out = result.stdout
    assert "--missing 1" in out
    # Both migrations, the verification, and the dry run to another bucket.
    assert out.count("1 problem (1 missing)") == 4
    assert re.search(r"missing +core\.FileManager pk=40 '.+': source file does not exist", out)
    assert out.count("Exit status 1") == 5  # and the purge's dry run keeps the row's file
    assert "reported as missing and its row is left as it was" in out
    files = [p for p in (workdir / "media").rglob("*") if p.is_file()]
    assert len(files) == 39
    assert f"Bucket {BUCKET}: 39 objects" in out


def test_without_a_planted_problem_every_step_exits_0(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *[sys.executable, str(DEMO), "--count", "5", "--large", "0", "--missing", "0"],
            *["--workdir", str(tmp_path / "demo")],
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=demo_env(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Exit status 1" not in result.stdout
    assert "0 problems" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("step", "says"),
    [
        ("[1]", r""),  # Django's migrate: manage.py's "Interrupted.", or it was over already
        ("[2]", r"^CommandError: Interrupted after \d+ of 300 files\.$"),
        ("[3]", r"^(CommandError: )?Interrupted[.:] \S"),  # the library's line, not manage.py's
    ],
)
def test_ctrl_c_stops_the_demo_without_a_traceback(tmp_path: Path, step: str, says: str) -> None:
    """Ctrl-C on a terminal sends SIGINT to the whole foreground process group: here, while the
    step is under way (its first file on disk, its first object in the bucket)."""
    workdir = tmp_path / "demo"
    demo = subprocess.Popen(
        # Four large files, so that step 3 lasts long enough to be interrupted under way.
        [sys.executable, str(DEMO), "--large", "4", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=demo_env(tmp_path),
        process_group=0,
    )
    assert demo.stdout is not None
    seen: list[str] = []
    endpoint = ""

    def under_way() -> bool:
        if step == "[1]":
            return (workdir / "db.sqlite3").exists()
        if step == "[2]":
            return any(p.is_file() for p in (workdir / "media").rglob("*"))
        listed = s3_client(endpoint).list_objects_v2(Bucket=BUCKET, MaxKeys=1)
        return bool(listed["KeyCount"])

    try:
        for line in demo.stdout:
            seen.append(line)
            if "listening on " in line:
                endpoint = line.split("listening on ", 1)[1].strip()
            if line.startswith(step):
                deadline = time.monotonic() + 30
                while not under_way() and time.monotonic() < deadline:
                    time.sleep(0.02)
                os.killpg(demo.pid, signal.SIGINT)
                break
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    out = "".join(seen) + out
    assert seen[-1].startswith(step), out
    assert demo.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert re.search(says, err, re.MULTILINE), err
    assert err.endswith("Interrupted; the server is stopped.\n"), err
    assert "Demo finished" not in out


def test_the_progress_bar_shows_on_a_terminal(tmp_path: Path) -> None:
    """stderr on a terminal (a pseudo-terminal of 100 columns here): the bars are drawn."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    demo = subprocess.Popen(
        [sys.executable, str(DEMO), "--count", "20", "--large", "0", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
        env=demo_env(tmp_path),
    )
    os.close(terminal)
    drawn = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        out, _ = demo.communicate(timeout=300)
        reader.join(timeout=10)
    finally:
        if demo.poll() is None:
            demo.kill()
        os.close(controller)
    assert demo.returncode == 0, out + drawn.decode(errors="replace")
    assert "--no-progress" not in out
    bars = drawn.decode(errors="replace")
    assert "20/20 [" in bars, bars
