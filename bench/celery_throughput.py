#!/usr/bin/env python
"""Throughput of migrate_storage --enqueue --wait with 1, 2 and 4 Celery worker processes
(--concurrency), against a run in one process, on a few thousand small files.

The sample project on SQLite, `rclone serve s3` (or moto's server, `--server moto`) on loopback,
the Redis server on 127.0.0.1:6379 (a queue of the benchmark's own). Each run copies every file
into a fresh bucket; the worker is started before the clock starts and stopped after. Prints a
Markdown table: wall time, files/s, and the speed-up over the run in one process.

    python bench/celery_throughput.py --files 3000 --concurrency 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from storage_migrate.testing import moto_server, rclone_s3_server, s3_client  # noqa: E402

MANAGE = REPO / "sample_project" / "manage.py"
MAKE_ROWS = """
import os, random
from django.core.files.base import ContentFile
from core.models import FileManager
rng = random.Random(7)
for i in range({files}):
    FileManager.objects.create(file=ContentFile(rng.randbytes({size}), name=f"b{{i}}.bin"))
"""


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env=env,
        cwd=MANAGE.parent,
        capture_output=True,
        text=True,
        check=False,
    )


@contextmanager
def worker(env: dict[str, str], concurrency: int, log: Path) -> Iterator[None]:
    queue = env["CELERY_TASK_DEFAULT_QUEUE"]
    command = [sys.executable, "-m", "celery", "-A", "shams_vision", "worker", "-Q", queue]
    command += ["--concurrency", str(concurrency), "--pool", "prefork", "-n", f"{queue}@%h"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=MANAGE.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # -l WARNING says nothing when ready: ask it.
        ping = [sys.executable, "-m", "celery", "-A", "shams_vision", "inspect", "ping"]
        ping += ["-d", f"{queue}@{os.uname().nodename}", "-t", "1"]
        deadline = time.monotonic() + 60
        while subprocess.run(ping, env=env, cwd=MANAGE.parent, capture_output=True).returncode:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


def timed(env: dict[str, str], bucket: str, files: int, *args: str) -> float:
    s3_client(env["AWS_S3_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    start = time.perf_counter()
    result = manage(
        {**env, "AWS_STORAGE_BUCKET_NAME": bucket},
        "migrate_storage",
        "--to",
        "s3",
        "--format",
        "json",
        "--no-progress",
        *args,
    )
    seconds = time.perf_counter() - start
    report = json.loads(result.stdout or "{}")
    copied = report.get("totals", {}).get("copied")
    if result.returncode or copied != files:
        problems = report.get("problems", [])[:3]
        raise RuntimeError(f"run failed ({result.returncode}, copied {copied}): {problems}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--size", type=int, default=2048, help="bytes per file")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-rows", type=int, default=250)
    parser.add_argument("--server", choices=["rclone", "moto"], default="rclone")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    server = rclone_s3_server if options.server == "rclone" else moto_server
    with server() as endpoint:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "shams_vision.settings",
            "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
            "MEDIA_ROOT": str(work / "media"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_S3_ENDPOINT_URL": endpoint,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "CELERY_TASK_DEFAULT_QUEUE": f"storage-migrate-bench-{uuid.uuid4().hex[:8]}",
        }
        manage(env, "migrate", "-v", "0").check_returncode()
        code = MAKE_ROWS.format(files=options.files, size=options.size)
        manage(env, "shell", "-c", code).check_returncode()
        rows = [("one process (no Celery)", timed(env, "b-local", options.files))]
        for n in options.concurrency:
            # The workers read the settings as the command does: the same bucket.
            bucket = f"b-c{n}"
            with worker({**env, "AWS_STORAGE_BUCKET_NAME": bucket}, n, work / f"worker-{n}.log"):
                args = ("--enqueue", "--wait", "--batch-rows", str(options.batch_rows))
                rows.append((f"--concurrency {n}", timed(env, bucket, options.files, *args)))
    base = rows[0][1]
    print(
        f"{options.files} files of {options.size} B, {options.server} serve s3, "
        f"--batch-rows {options.batch_rows}, {os.cpu_count()} cores\n"
    )
    print("| run | wall s | files/s | vs one process |\n|---|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {options.files / seconds:.0f} | {base / seconds:.2f} |")


if __name__ == "__main__":
    main()
