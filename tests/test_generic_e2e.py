"""manage.py end to end with a storage that is neither local disk nor S3: the sample project's
optional `sftp` alias (SFTP_HOST) on OpenSSH's sshd, killed mid-copy and run again, then on to
S3 (moto's HTTP server), verified at both ends."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate.endpoints.generic import MARKERS
from tests.conftest import MANAGE, ManagePy, SFTPRoot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024


@pytest.fixture
def with_sftp(manage_py: ManagePy, sftp_root: SFTPRoot) -> ManagePy:
    """manage.py with the sample project's sftp alias pointed at this test's SFTP folder."""
    server = sftp_root.server
    manage_py.env.update(
        SFTP_HOST=server.host,
        SFTP_PORT=str(server.port),
        SFTP_USERNAME=server.username,
        SFTP_KEY_FILENAME=server.key_filename,
        SFTP_KNOWN_HOSTS=server.known_hosts,
        SFTP_ROOT=sftp_root.root_path,
    )
    return manage_py


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def run_until(env: dict[str, str], args: list[str], moment: Callable[[], bool]) -> bool:
    """Start manage.py, SIGKILL it as soon as `moment()` holds; False if it finished first."""
    process = subprocess.Popen(
        [sys.executable, str(MANAGE), *args],
        env=env,
        cwd=MANAGE.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if moment():
                process.send_signal(signal.SIGKILL)
                return True
            time.sleep(0.005)
        return False
    finally:
        process.wait(timeout=30)


def test_killed_copies_to_sftp_converge_then_move_on_to_s3(
    with_sftp: ManagePy, sftp_root: SFTPRoot, http_bucket: str
) -> None:
    big = FileManager.objects.create(file=ContentFile(os.urandom(40 * MiB), name="big video.mp4"))
    rows = [big] + [
        FileManager.objects.create(file=ContentFile(os.urandom(2000 + i), name=f"s{i}.bin"))
        for i in range(150)
    ]
    sums = {str(r.file.name): str(r.checksum) for r in rows}
    args = ["migrate_storage", "--from", "local", "--to", "sftp", "--no-progress"]
    args += ["--workers", "4", "--batch-size", "25"]
    big_path = sftp_root.path / str(big.file.name)

    def big_file_half_written() -> bool:
        return big_path.exists() and 0 < big_path.stat().st_size < big.file_size // 2

    def half_the_files_there() -> bool:
        there = sftp_root.path.rglob("s*.bin") if sftp_root.path.exists() else ()
        return sum(1 for _ in there) > len(rows) // 2

    killed = [run_until(with_sftp.env, args, m) for m in (big_file_half_written,)]
    # The kill left a part of the big file under its own name: what a re-run must deal with.
    assert 0 < big_path.stat().st_size < big.file_size
    killed.append(run_until(with_sftp.env, args, half_the_files_there))
    assert killed == [True, True]

    final = with_sftp(*args)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "conflict" not in final.stdout
    for name, checksum in sums.items():
        assert md5_of(sftp_root.path / name) == checksum, name
    assert not any((sftp_root.path / MARKERS).iterdir())
    again = with_sftp(*args)
    assert again.returncode == 0 and "Copied 0 files" in again.stdout, again.stdout

    verified = with_sftp("verify_files", "--storage", "sftp", "--level", "checksum")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    to_s3 = with_sftp("migrate_storage", "--from", "sftp", "--to", "s3", "--no-progress")
    assert to_s3.returncode == 0, to_s3.stdout + to_s3.stderr
    assert {r.bucket for r in FileManager.objects.all()} == {http_bucket}
    on_s3 = with_sftp("verify_files", "--storage", "s3", "--level", "deep")
    assert on_s3.returncode == 0, on_s3.stdout + on_s3.stderr

    # A file corrupted at the SFTP end, its size kept: only reading it back finds it.
    victim = sftp_root.path / str(rows[7].file.name)
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x01
    victim.write_bytes(bytes(data))
    corrupted = with_sftp("verify_files", "--storage", "sftp", "--level", "checksum")
    assert corrupted.returncode == 1, corrupted.stdout + corrupted.stderr
    assert "checksum_mismatch" in corrupted.stdout or "checksum" in corrupted.stdout
