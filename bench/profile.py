"""Where a contender's time goes: migrate_storage or verify_files on one of measure.py's
datasets, recorded with py-spy (every thread, idle time left out unless --idle), summed into
the functions that hold the most samples, by thread and by the part of the code they belong to.

    .venv/bin/python bench/profile.py --dataset small --command migrate
    .venv/bin/python bench/profile.py --dataset many --command verify --database postgres://...

The dataset, its rows and the server (`rclone serve s3` on loopback) are measure.py's; a fresh
bucket is used, filled first by an unprofiled migrate_storage for verify and noop. Results go to
bench/results/profile-<dataset>-<command>.txt (the raw stacks beside it, .raw, for speedscope or
flamegraph.pl). Sampling slows the process a little: read shares, not times.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import measure  # noqa: E402 - the benchmark's own datasets, server and commands
from storage_migrate.testing import s3_client  # noqa: E402

# The part of the code a frame belongs to, by its file (py-spy names files below
# site-packages or the standard library; the first match wins).
PARTS = [
    ("storage_migrate/", "ours"),
    ("botocore/parsers", "botocore: parse"),
    ("botocore/", "botocore: other"),
    ("boto3/", "boto3"),
    ("s3transfer/", "s3transfer"),
    ("awscrt/", "awscrt (Python side)"),
    ("urllib3/", "urllib3"),
    ("django/db/", "django: database"),
    ("django/", "django: other"),
    ("psycopg", "psycopg"),
    ("sqlite3", "sqlite3"),
    ("http/client", "http.client"),
    ("ssl.py", "ssl"),
    ("socket.py", "socket"),
    ("hashlib", "hashlib"),
    ("hashing.py", "hashlib"),
    ("threading.py", "threading"),
    ("queue.py", "threading"),
    ("concurrent/", "concurrent.futures"),
    ("xml/", "xml"),
]
IMPORTING = "_find_and_load ("  # a frame of the import system: the sample counts as start-up


def part_of(frame: str) -> str:
    file = frame.rpartition(" (")[2]
    for needle, part in PARTS:
        if needle in file:
            return part
    return "other: " + file.split("/")[0].split(":")[0]


def thread_name(label: str) -> str:
    """'thread (1234): verify-files_3' -> 'verify-files' (a pool's threads together)."""
    name = label.partition("): ")[2] or label
    return re.sub(r"[_-]\d+$", "", name)


def summarize(raw: Path, top: int) -> list[str]:
    """py-spy's collapsed stacks ("thread (id): name;frame;...;frame count") as tables."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    by_part: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        total += count
        by_thread[thread_name(thread)] += count
        if not frames:
            continue
        self_time[frames[-1]] += count
        importing = any(IMPORTING in frame for frame in frames)
        by_part["imports (start-up)" if importing else part_of(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["no samples"]

    def share(count: int) -> str:
        return f"{100 * count / total:5.1f} %"

    lines = [f"{total} samples", "", "## By part of the code (self time)", ""]
    lines += [f"{share(n)}  {part}" for part, n in by_part.most_common(25)]
    lines += ["", "## By thread", ""]
    lines += [f"{share(n)}  {thread}" for thread, n in by_thread.most_common(12)]
    lines += ["", f"## Functions, self time (top {top})", ""]
    lines += [f"{share(n)}  {frame}" for frame, n in self_time.most_common(top)]
    lines += ["", f"## Functions of ours, inclusive time (top {top})", ""]
    ours = [(f, n) for f, n in inclusive.most_common() if "storage_migrate/" in f]
    lines += [f"{share(n)}  {frame}" for frame, n in ours[:top]]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["small", "large", "many", "huge"], default="small")
    parser.add_argument("--command", choices=["migrate", "verify", "noop"], default="migrate")
    parser.add_argument("--database", default="sqlite")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--idle", action="store_true", help="count threads that wait, too")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--scale", type=float, default=1)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: make bench installs it (the bench extra)")
    output = args.output or REPO / "bench" / "results" / (
        f"profile-{args.dataset}-{args.command}.txt"
    )
    raw = output.with_suffix(".raw")
    base = measure.base_environment()
    tools = measure.Tools()
    with measure.server("rclone") as endpoint:
        s3 = s3_client(endpoint)
        bench = measure.Bench(
            args.dataset, endpoint, s3, tools, args.work, base, args.scale, args.database
        )
        bench.use_database()
        bucket = bench.fresh_bucket()
        if args.command in ("verify", "noop"):
            command, env, cwd = bench.command("migrate", bucket)
            subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        contender = "verify" if args.command == "verify" else "migrate"
        command, env, cwd = bench.command(contender, bucket)
        record = [py_spy, "record", "--rate", str(args.rate), "--format", "raw"]
        record += ["--threads", "--output", str(raw), "--nonblocking"]
        if args.idle:
            record.append("--idle")
        started = time.perf_counter()
        subprocess.run(
            [*record, "--", *command], env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL
        )
        seconds = time.perf_counter() - started
        listing = bench.listing(bucket)
        bench.delete_bucket(bucket, list(listing.sizes))
    head = [
        f"# {args.command} on {bench.title}, py-spy at {args.rate} Hz"
        f"{' with idle threads' if args.idle else ''}, {datetime.now(UTC):%Y-%m-%d}",
        "",
        f"{seconds:.2f} s under the profiler; command: {' '.join(command[1:])}",
        "",
    ]
    text = "\n".join(head + summarize(raw, args.top)) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
