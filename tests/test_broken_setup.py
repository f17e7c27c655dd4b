"""A broken setup is exit 2 and one line that names the thing and the fix, before anything is read
or written, and quickly: the database (down, a wrong SQLite path, not migrated), the S3 endpoint
(not a URL, a server that accepts connections and never answers), a local destination (relative,
under a file, read-only). --traceback keeps the exit status and shows where the error started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate.conf import get_conf
from storage_migrate.endpoints.factory import endpoint_for
from storage_migrate.testing import s3_client
from tests.conftest import MANAGE, ManagePy, reset_storages

pytestmark = pytest.mark.e2e

COMMANDS = {
    "migrate": ("migrate_storage", "--to", "s3", "--no-progress"),
    "verify": ("verify_files", "--storage", "s3", "--no-progress"),
}


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, one line on stderr, no traceback, nothing on stdout; the line."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("CommandError: ")
    return lines[0]


def make_rows(media_root: Path, count: int = 3) -> list[FileManager]:
    return [
        FileManager.objects.create(file=ContentFile(f"file {i}".encode(), name=f"f{i}.txt"))
        for i in range(count)
    ]


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root (symlinks not followed): its bytes and modification time."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[path.relative_to(root).as_posix()] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def bucket(moto_endpoint: str, name: str) -> list[tuple[str, str]]:
    listing = s3_client(moto_endpoint).list_objects_v2(Bucket=name)
    return sorted((o["Key"], o["ETag"]) for o in listing.get("Contents", []))


def rows() -> list[tuple[Any, ...]]:
    return list(FileManager.objects.order_by("pk").values_list())


@contextmanager
def unchanged(moto_endpoint: str, http_bucket: str, *folders: Path) -> Iterator[None]:
    """The rows, the bucket and the files under ``folders`` are the same afterwards."""
    before = (rows(), bucket(moto_endpoint, http_bucket), [tree(f) for f in folders])
    yield
    assert (rows(), bucket(moto_endpoint, http_bucket), [tree(f) for f in folders]) == before


# --- the database -------------------------------------------------------------------------------


def broken_databases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (DATABASE_URL, what the line must say)."""
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    return {
        "down": ("postgres://postgres@127.0.0.1:1/test", "cannot be reached"),
        "wrong_sqlite_path": ("sqlite:////nonexistent/dir/db.sqlite3", "does not exist"),
        "not_migrated": (f"sqlite:///{empty}", "run manage.py migrate"),
    }


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("broken", ["down", "wrong_sqlite_path", "not_migrated"])
def test_broken_database_is_one_line_exit_2(
    manage_py: ManagePy,
    media_root: Path,
    moto_endpoint: str,
    http_bucket: str,
    tmp_path: Path,
    command: str,
    broken: str,
) -> None:
    make_rows(media_root)
    url, says = broken_databases(tmp_path)[broken]
    manage_py.env["DATABASE_URL"] = url

    with unchanged(moto_endpoint, http_bucket, media_root, tmp_path):
        started = time.monotonic()
        line = one_line_error(manage_py(*COMMANDS[command], timeout=60))

    assert time.monotonic() - started < 30
    assert "Database 'default'" in line, line
    assert says in line, line
    assert "DATABASE_URL" in line or "manage.py migrate" in line, line
    assert not Path("/nonexistent").exists()
    assert (tmp_path / "empty.sqlite3").read_bytes() == b""


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_locked_sqlite_database_is_one_line_exit_2(
    manage_py: ManagePy, tmp_path: Path, command: str
) -> None:
    """Another process holds SQLite's write lock (a migration, a long import): the run waits for
    the lock as SQLite does (5 s), then says so in one line instead of a traceback."""
    import sqlite3

    path = tmp_path / "locked.sqlite3"
    manage_py.env["DATABASE_URL"] = f"sqlite:///{path}"
    migrated = manage_py("migrate", "--verbosity", "0", timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        line = one_line_error(manage_py(*COMMANDS[command], timeout=60))
    finally:
        holder.close()

    assert time.monotonic() - started < 30
    assert "Database 'default'" in line and "is locked by another process" in line, line
    assert "timeout" in line, line


def test_traceback_keeps_exit_2_and_shows_where_it_started(
    manage_py: ManagePy, media_root: Path, moto_endpoint: str, http_bucket: str, tmp_path: Path
) -> None:
    make_rows(media_root)
    manage_py.env["DATABASE_URL"] = broken_databases(tmp_path)["not_migrated"][0]

    with unchanged(moto_endpoint, http_bucket, media_root):
        result = manage_py(*COMMANDS["migrate"], "--traceback")

    assert result.returncode == 2, result.stderr
    err = result.stderr
    # The database's own error, then ours raised from it, then the command's raised from ours.
    assert err.count("The above exception was the direct cause of the following exception") >= 2
    first, ours, command = (
        err.index("OperationalError: no such table: core_filemanager"),
        err.index("storage_migrate.errors.ConfigurationError: Database 'default'"),
        err.index("django.core.management.base.CommandError: Database 'default'"),
    )
    assert first < ours < command
    assert "storage_migrate/database.py" in err


def test_traceback_keeps_exit_2_for_other_configuration_errors(manage_py: ManagePy) -> None:
    result = manage_py("migrate_storage", "--to", "nowhere", "--traceback")
    assert result.returncode == 2, result.stderr
    assert "Traceback" in result.stderr
    assert "CommandError: Storage alias 'nowhere'" in result.stderr


# --- the endpoint -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("url", ["not-a-url", "ftp://127.0.0.1:9000", "http://127.0.0.1:port"])
def test_endpoint_that_is_not_a_url_is_one_line_exit_2(
    manage_py: ManagePy,
    media_root: Path,
    moto_endpoint: str,
    http_bucket: str,
    command: str,
    url: str,
) -> None:
    make_rows(media_root)
    manage_py.env["AWS_S3_ENDPOINT_URL"] = url

    with unchanged(moto_endpoint, http_bucket, media_root):
        line = one_line_error(manage_py(*COMMANDS[command]))

    assert f"endpoint URL {url!r}" in line, line
    assert "AWS_S3_ENDPOINT_URL" in line, line


@contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server on 127.0.0.1 that accepts every connection and never answers; its URL and the
    connections it has accepted."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_endpoint_that_never_answers_fails_within_the_bound(
    manage_py: ManagePy, media_root: Path, moto_endpoint: str, http_bucket: str, command: str
) -> None:
    """READ_TIMEOUT is 60 s and MAX_ATTEMPTS 5 for the copy; the preflight gives up after two
    requests of at most 5 s each (the README: well under 30 s)."""
    make_rows(media_root)
    with silent_server() as (url, accepted), unchanged(moto_endpoint, http_bucket, media_root):
        manage_py.env["AWS_S3_ENDPOINT_URL"] = url
        started = time.monotonic()
        line = one_line_error(manage_py(*COMMANDS[command], timeout=120))
        took = time.monotonic() - started

    assert took < 30, took
    assert "Cannot reach S3 for storage 's3'" in line, line
    assert "timeout" in line.lower(), line
    assert len(accepted) == 3  # three attempts, not botocore's max_attempts + 1


def test_quick_client_bound_ignores_the_copy_settings(settings: Any) -> None:
    settings.AWS_S3_ENDPOINT_URL = "http://127.0.0.1:9"
    settings.AWS_STORAGE_BUCKET_NAME = "b"
    settings.STORAGE_MIGRATE = {"CONNECT_TIMEOUT": 120.0, "READ_TIMEOUT": 600.0, "MAX_ATTEMPTS": 10}
    reset_storages()
    try:
        endpoint: Any = endpoint_for("s3", get_conf())
        quick, copy = endpoint.quick_client.meta.config, endpoint.client.meta.config
    finally:
        reset_storages()
    assert (quick.connect_timeout, quick.read_timeout) == (3.5, 3.5)
    assert quick.retries["total_max_attempts"] == 3
    assert (copy.connect_timeout, copy.read_timeout) == (120.0, 600.0)


# --- a local destination ------------------------------------------------------------------------


def s3_sources(media_root: Path, moto_endpoint: str, http_bucket: str) -> list[FileManager]:
    """Rows whose files are in the bucket (the source of --to local)."""
    made = make_rows(media_root)
    client = s3_client(moto_endpoint)
    for row in made:
        client.put_object(Bucket=http_bucket, Key=row.file.name, Body=row.file.read())
        row.file.close()
    return made


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry_run"])
def test_local_destination_under_a_file_is_one_line_exit_2(
    manage_py: ManagePy,
    media_root: Path,
    moto_endpoint: str,
    http_bucket: str,
    tmp_path: Path,
    dry_run: bool,
) -> None:
    s3_sources(media_root, moto_endpoint, http_bucket)
    (tmp_path / "file.txt").write_bytes(b"a file, not a folder")
    manage_py.env["MEDIA_ROOT"] = str(tmp_path / "file.txt" / "media")
    args = ("migrate_storage", "--to", "local", "--no-progress", *(["--dry-run"] * dry_run))

    with unchanged(moto_endpoint, http_bucket, tmp_path):
        line = one_line_error(manage_py(*args))

    assert "Storage 'local' writes to" in line, line
    assert f"{tmp_path / 'file.txt'} is not a directory" in line, line
    assert "MEDIA_ROOT" in line, line


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """The folder cannot be written, even by root (chattr +i), or the test is skipped."""
    folder.chmod(0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK):  # root ignores permission bits
            chattr = shutil.which("chattr")
            if chattr is None:
                pytest.skip("running as root without chattr: no folder is read-only")
            done = subprocess.run([chattr, "+i", str(folder)], capture_output=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"chattr +i failed here: {done.stderr.decode().strip()}")
            immutable = True
        assert not os.access(folder, os.W_OK)
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry_run"])
@pytest.mark.parametrize("missing", [False, True], ids=["existing", "to_be_made"])
def test_read_only_local_destination_is_one_line_exit_2(
    manage_py: ManagePy,
    media_root: Path,
    moto_endpoint: str,
    http_bucket: str,
    tmp_path: Path,
    dry_run: bool,
    missing: bool,
) -> None:
    s3_sources(media_root, moto_endpoint, http_bucket)
    locked = tmp_path / "locked"
    locked.mkdir()
    destination = locked / "media" if missing else locked
    manage_py.env["MEDIA_ROOT"] = str(destination)
    args = ("migrate_storage", "--to", "local", "--no-progress", *(["--dry-run"] * dry_run))

    with read_only(locked), unchanged(moto_endpoint, http_bucket, tmp_path):
        line = one_line_error(manage_py(*args))

    assert f"Storage 'local' writes to {destination}, but" in line, line
    assert "is not writable" in line, line
    assert str(locked) in line
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("command", ["migrate_to_local", "migrate_to_s3", "verify"])
@pytest.mark.parametrize("media_root_setting", ["", "media"], ids=["empty", "relative"])
def test_relative_media_root_is_one_line_exit_2(
    manage_py: ManagePy,
    media_root: Path,
    moto_endpoint: str,
    http_bucket: str,
    tmp_path: Path,
    command: str,
    media_root_setting: str,
) -> None:
    """An empty MEDIA_ROOT made FileSystemStorage write into the current folder."""
    s3_sources(media_root, moto_endpoint, http_bucket)
    manage_py.env["MEDIA_ROOT"] = media_root_setting
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = {
        "migrate_to_local": ("migrate_storage", "--to", "local"),
        "migrate_to_s3": ("migrate_storage", "--to", "s3"),
        "verify": ("verify_files", "--storage", "local"),
    }[command]

    with unchanged(moto_endpoint, http_bucket, tmp_path):
        result = subprocess.run(  # from another folder than manage.py's, which must stay clean
            [sys.executable, str(MANAGE), *args, "--no-progress"],
            env=manage_py.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        line = one_line_error(result)

    assert f"Storage 'local' has the location {media_root_setting!r}" in line, line
    assert "not an absolute path" in line and "MEDIA_ROOT" in line, line
    assert list(cwd.iterdir()) == []
