#!/usr/bin/env python
"""Measure migrate_storage --shard: 1, 2 and 4 processes at once over one dataset.

3000 files of 1-16 KiB (seeded) and their FileManager rows on SQLite, or on the database of
--database (PostgreSQL: SQLite locks the whole file for each commit); each round migrates
them into a fresh bucket of `rclone serve s3` (or moto's server, --server moto), every shard
process started at once; wall time from the first start to the last exit. The rows are put
back as uploads recorded them before each round. Prints a Markdown table, with the CPU seconds
the shard processes used together (the server's are not counted: it runs on the same cores).

    .venv/bin/python bench/shards.py [--runs 3] [--shards 1 2 4] [--database postgres://...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.measure import LOADER, MANAGE, run_django, server  # noqa: E402
from storage_migrate.testing import s3_client  # noqa: E402

KiB = 1024
# Every row back as an upload on local disk records it: no bucket, the key the name.
RESET = """
from django.db.models import F
from core.models import FileManager
FileManager.objects.update(bucket="", object_key=F("file"))
"""


def make_files(media: Path, count: int) -> list[str]:
    """``count`` files of 1-16 KiB under 84 date folders, the same bytes every time."""
    rng = random.Random("bench-shards")
    names = []
    for i in range(count):
        name = f"file_manager/2026/{1 + i % 12:02d}/{1 + i % 28:02d}/f {i:05d}.bin"
        path = media / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(1 * KiB, 16 * KiB)))
        names.append(name)
    return names


def one_round(env: dict[str, str], shards: int, work: Path, s3: object) -> tuple[float, float, int]:
    """Every shard process at once into a fresh bucket: (wall seconds, their CPU seconds, rows
    migrated)."""
    run_django(RESET, env)
    bucket = f"shards-{shards}-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    env = {**env, "AWS_STORAGE_BUCKET_NAME": bucket}
    reports = [work / f"report-{k}.json" for k in range(shards)]
    command = [sys.executable, str(MANAGE), "migrate_storage", "--to", "s3", "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            [*command, f"--shard={k}/{shards}", f"--report={reports[k]}", "-v", "0"], env=env
        )
        for k in range(shards)
    ]
    statuses = [process.wait() for process in processes]
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if any(statuses):
        raise SystemExit(f"a shard exited {statuses}")
    rows = sum(json.loads(path.read_text())["totals"]["copied"] for path in reports)
    return seconds, cpu, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server", choices=["rclone", "moto"], default="rclone")
    parser.add_argument("--database", help="a DATABASE_URL (default: SQLite in the work folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as folder, server(args.server) as url:
        work = Path(folder)
        media = work / "media"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "shams_vision.settings",
            "PYTHONPATH": str(REPO / "sample_project"),
            "DATABASE_URL": args.database or f"sqlite:///{work / 'db.sqlite3'}",
            "MEDIA_ROOT": str(media),
            "AWS_S3_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "USE_S3_STORAGE": "False",
            "DEBUG": "False",
        }
        names = make_files(media, args.files)
        subprocess.run([sys.executable, str(MANAGE), "migrate", "-v", "0"], env=env, check=True)
        run_django("from core.models import FileManager\nFileManager.objects.all().delete()", env)
        run_django(LOADER, env, "\n".join(names), str(media))
        s3 = s3_client(url)
        times: dict[int, list[float]] = {n: [] for n in args.shards}
        cpus: dict[int, list[float]] = {n: [] for n in args.shards}
        for _ in range(args.runs):
            for shards in args.shards:  # alternating, so that a drift of the server is shared
                seconds, cpu, rows = one_round(env, shards, work, s3)
                if rows != args.files:
                    raise SystemExit(f"{shards} shard(s) copied {rows} of {args.files} files")
                times[shards].append(seconds)
                cpus[shards].append(cpu)
    print(f"{args.files} files of 1-16 KiB, {args.server}, {os.cpu_count()} cores, ", end="")
    print(f"{'SQLite' if not args.database else 'PostgreSQL'}, median of {args.runs}\n")
    print("| processes | wall time | files/s | client CPU | runs |\n|---|---|---|---|---|")
    for shards, walls in times.items():
        median = statistics.median(walls)
        runs = ", ".join(f"{s:.2f}" for s in walls)
        cpu = statistics.median(cpus[shards])
        print(f"| {shards} | {median:.2f} s | {args.files / median:.0f} | {cpu:.2f} s | {runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
