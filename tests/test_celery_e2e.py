"""manage.py migrate_storage --enqueue --wait against a real Celery worker (two prefork processes)
and the Redis server on 127.0.0.1:6379: the same end state and report as a run in one process,
and a worker process killed mid-batch, whose batch is delivered again."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import MANAGE, REPO, ManagePy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REDIS = ("127.0.0.1", 6379)
JSON_ARGS = ("--format", "json", "--no-progress")


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def celery_env(manage_py: ManagePy, tmp_path: Path) -> ManagePy:
    """manage.py's environment with a queue of this test's own on Redis (parallel runs do not
    take each other's batches)."""
    if not redis_answers():
        if os.environ.get("CI"):
            pytest.fail("No Redis server on 127.0.0.1:6379 (.ci/run starts one)")
        pytest.skip("No Redis server on 127.0.0.1:6379 (redis-server --daemonize yes)")
    queue = f"storage-migrate-test-{uuid.uuid4().hex[:12]}"
    manage_py.env.update(
        {
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
            "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/0",
            "CELERY_TASK_DEFAULT_QUEUE": queue,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(MANAGE.parent)]),
            # tests/celery_worker.py's hook: only a row named so is slow.
            "SLOW_ROW_MARKER": str(tmp_path / "slow-row.pids"),
            "SLOW_ROW_NAME": "slow-row",
            "SLOW_ROW_SECONDS": "4",
        }
    )
    return manage_py


@pytest.fixture
def worker(celery_env: ManagePy, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`celery worker --concurrency 2 --pool prefork` on this test's queue, ready."""
    env = celery_env.env
    queue = env["CELERY_TASK_DEFAULT_QUEUE"]
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "tests.celery_worker", "worker"]
    command += ["--concurrency", "2", "--pool", "prefork", "-Q", queue, "-n", f"{queue}@%h"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=MANAGE.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its pool processes are stopped with it
        )
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"The Celery worker did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def run_json(manage_py: ManagePy, *args: str) -> tuple[int, dict[str, Any], str]:
    result = manage_py("migrate_storage", "--to", "s3", *args, *JSON_ARGS, timeout=300)
    try:
        return result.returncode, json.loads(result.stdout), result.stderr
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not one JSON document:\n{result.stdout}\n{result.stderr}")


def rows_pointing_at(bucket: str) -> dict[int, tuple[str, str]]:
    """pk -> (name, checksum) of the rows that say their file is in the bucket: plain SQL."""
    table = FileManager._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, file, checksum FROM {table} WHERE bucket = %s", [bucket])
        return {int(pk): (str(name), str(digest)) for pk, name, digest in cursor.fetchall()}


def assert_every_row_points_at_its_bytes(client: Any, bucket: str) -> int:
    """Every row that points at the bucket finds there an object with its checksum."""
    pointing = rows_pointing_at(bucket)
    for pk, (name, digest) in pointing.items():
        body = client.get_object(Bucket=bucket, Key=name)["Body"].read()
        assert md5(body) == digest, (pk, name)
    return len(pointing)


def test_enqueue_wait_ends_as_a_run_in_one_process(
    worker: Any, celery_env: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path
) -> None:
    contents = {f"f{i}.bin": os.urandom(500 + 37 * i) for i in range(40)}
    contents["empty.txt"] = b""
    rows = [FileManager.objects.create(file=ContentFile(d, name=n)) for n, d in contents.items()]
    lost = rows[17]
    (media_root / lost.file.name).unlink()  # a missing source: one problem, in its batch
    status, predicted, _ = run_json(celery_env, "--dry-run")  # a run in one process
    assert status == 1

    status, report, stderr = run_json(celery_env, "--enqueue", "--wait", "--batch-rows", "6")

    assert status == 1, stderr
    assert report["totals"] == {**predicted["totals"], "rows": 41, "copied": 40, "failed": 1}
    lost_size = len(contents[Path(lost.file.name).name])
    assert report["totals"]["bytes_copied"] == sum(map(len, contents.values())) - lost_size
    assert report["problems"] == predicted["problems"]
    assert [(p["kind"], p["pk"]) for p in report["problems"]] == [("missing", lost.pk)]
    assert (report["source"], report["destination"], report["interrupted"]) == (
        "local",
        "s3",
        False,
    )
    client = s3_client(s3_endpoint)
    assert assert_every_row_points_at_its_bytes(client, http_bucket) == 40
    for row in rows:
        row.refresh_from_db()
        if row.pk == lost.pk:
            assert row.bucket == ""
            continue
        data = contents[Path(row.file.name).name]
        assert (row.bucket, row.object_key, row.file_size) == (
            http_bucket,
            row.file.name,
            len(data),
        )
        assert row.checksum == md5(data)
    # A run in one process finds everything done.
    status, again, _ = run_json(celery_env)
    assert (status, again["totals"]["copied"], again["totals"]["skipped"]) == (1, 0, 40)


def test_enqueue_without_wait_prints_the_batches(
    worker: Any, celery_env: ManagePy, http_bucket: str, s3_endpoint: str
) -> None:
    rows = [FileManager.objects.create(file=ContentFile(b"x" * i, name=f"n{i}")) for i in range(5)]

    status, sent, stderr = run_json(celery_env, "--enqueue", "--batch-rows", "2")

    assert status == 0, stderr
    assert sent["totals"] == {"batches": 3, "rows": 5}
    pks = [r.pk for r in rows]
    assert [(b["pk_min"], b["pk_max"], b["rows"]) for b in sent["batches"]] == [
        (pks[0], pks[1], 2),
        (pks[2], pks[3], 2),
        (pks[4], pks[4], 1),
    ]
    assert len({b["task_id"] for b in sent["batches"]}) == 3
    deadline = time.monotonic() + 60  # the worker does them without anyone waiting
    while len(rows_pointing_at(http_bucket)) < 5:
        assert time.monotonic() < deadline, "the batches were not run"
        time.sleep(0.2)
    assert assert_every_row_points_at_its_bytes(s3_client(s3_endpoint), http_bucket) == 5


def test_a_worker_killed_mid_batch_has_its_batch_delivered_again(
    worker: Any, celery_env: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path
) -> None:
    names = [f"k{i}.bin" for i in range(30)]
    names[13] = "slow-row.bin"
    contents = {name: os.urandom(700 + i) for i, name in enumerate(names)}
    for name, data in contents.items():
        FileManager.objects.create(file=ContentFile(data, name=name))
    marker = Path(celery_env.env["SLOW_ROW_MARKER"])
    process = celery_env.start(
        "migrate_storage", "--to", "s3", "--enqueue", "--wait", "--batch-rows", "5", *JSON_ARGS
    )
    client = s3_client(s3_endpoint)
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline, "the slow row's batch never started"
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    pid = int(marker.read_text().split()[0])
    os.kill(pid, signal.SIGKILL)  # the pool process in the middle of the slow row's batch
    assert_every_row_points_at_its_bytes(client, http_bucket)

    stdout, stderr = ManagePy.finish(process, timeout=120)

    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["problems"] == []
    totals = report["totals"]
    assert (totals["rows"], totals["failed"]) == (30, 0)
    assert totals["copied"] + totals["skipped"] == 30
    pids = marker.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1], pids  # delivered again, to another process
    assert assert_every_row_points_at_its_bytes(client, http_bucket) == 30
    for row in FileManager.objects.all():
        data = contents[Path(row.file.name).name]
        assert (row.file_size, row.checksum) == (len(data), md5(data))
