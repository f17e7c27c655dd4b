#!/usr/bin/env python
"""`make demo`: the sample site on an embedded S3-compatible server, end to end, no AWS account.

Starts moto's S3 server on a free loopback port, creates a bucket, migrates a fresh SQLite
database, uploads a few hundred files in local mode (named as an older site named them, one of
them large enough to go to S3 in parts, and one lost on purpose), and runs each step below through
`manage.py`, exactly as a person would. Adding a step is one line in STEPS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

BUCKET = "shams-vision-media"
MiB = 1024 * 1024
# Below the library's 64 MiB default, so that a demo-sized large file goes to S3 in parts.
MULTIPART_THRESHOLD = 16 * MiB
# Characters that naive tools mangle, and that the demo's names keep.
AWKWARD = (" ", "é", "+", "&", "%")


@dataclass(frozen=True)
class Step:
    title: str
    args: list[str]
    # The exit status this step should end with, and what it means when that is not 0.
    expect: int = 0
    why: str = ""
    # Settings of the site for this step (the switch of the cut-over runbook).
    env: tuple[tuple[str, str], ...] = ()


# The site during the move: default reads S3, then the disk (the README's cut-over runbook).
DURING_THE_MOVE = (("USE_S3_STORAGE", "True"), ("STORAGE_FALLBACK", "True"))

# What the site does mid-move, through its default storage: read a moved file and one not moved.
SERVE = """
from django.core.files.storage import default_storage, storages
from core.models import FileManager
from storage_migrate.storage import file_url
print(f"    default storage: {type(storages['default']).__name__} (primary s3, fallback local)")
rows = FileManager.objects.order_by("pk")
for row in (rows.exclude(bucket="").first(), rows.filter(bucket="").first()):
    with default_storage.open(row.file.name) as f:
        size = len(f.read())
    where = "S3" if row.bucket else "the disk (not moved yet)"
    print(f"    pk={row.pk} {row.file.name!r}: {size} bytes read from {where}")
    print(f"        linked as {file_url(row).split('?')[0]}")
"""


def steps(count: int, large: int, missing: int) -> list[Step]:
    progress = [] if sys.stderr.isatty() else ["--no-progress"]  # the bar needs a terminal
    problem = 1 if missing else 0
    lost = "the file deleted in step 2"
    lose = (
        f"; then lose {'one' if missing == 1 else missing}, as a real site has" if missing else ""
    )
    return [
        Step(
            "Create a fresh SQLite database",
            ["migrate", "--noinput", "-v", "0"],
        ),
        Step(
            "Upload sample files with USE_S3_STORAGE=False (they land on local disk), named as "
            f"an older site named them{lose}",
            [
                "make_sample_files",
                *["--count", str(count), "--large", str(large), "--missing", str(missing)],
            ],
        ),
        Step(
            "Switch the site to the fallback storage, then copy half of the files to S3 "
            "(a move stopped halfway)",
            ["migrate_storage", "--to", "s3", "--limit", str(count // 2), *progress],
            env=DURING_THE_MOVE,
        ),
        Step(
            "Mid-move, the site serves every file: one from S3, one still on disk",
            ["shell", "--no-imports", "-c", SERVE],
            env=DURING_THE_MOVE,
        ),
        Step(
            "Copy the rest, verify each copy, update its row, and catch up until no new file "
            "arrives (--until-stable: the end of a rolling deploy)",
            ["migrate_storage", "--to", "s3", "--until-stable", "--pause", "1", *progress],
            expect=problem,
            why=f"Exit status 1, as expected: some rows have problems. Here it is {lost}: it "
            "is reported as missing and its row is left as it was; every other file was copied, "
            "verified, and its row updated. Exit 0 means no problems, 2 a usage error.",
            env=DURING_THE_MOVE,
        ),
        Step(
            "Run it again: everything is already there, nothing is copied twice",
            ["migrate_storage", "--to", "s3", *progress],
            expect=problem,
            why=f"Exit status 1 again: {lost} is still missing; every other file was skipped.",
        ),
        Step(
            "Prove every row's file is in S3 with its size and MD5, and look for orphans",
            ["verify_files", "--storage", "s3", "--orphans", *progress],
            expect=problem,
            why=f"Exit status 1, as expected: the row of {lost} has no object in S3; every "
            "other row's object is there with the right size and MD5.",
        ),
        Step(
            "Days later, once the site reads S3 alone: what purge_source would delete from the "
            "disk, each copy proven in S3 now (a dry run: nothing is deleted)",
            ["purge_source", "--from", "local", "--verified-against", "s3", "--dry-run"],
            expect=problem,
            why=f"Exit status 1, as expected: the row of {lost} does not record a copy in S3, "
            "so it is listed as kept. Nothing was deleted; without --dry-run (and, in "
            "production, with --min-age 7d) every other file would be.",
            env=(("USE_S3_STORAGE", "True"),),
        ),
        Step(
            "Later, to another bucket on the same store: the copies would stay inside it "
            "(server-side), and the dry run prices the move",
            [
                *["migrate_storage", "--from", "s3", "--to", "s3_new"],
                *["--dry-run", "--create-bucket", *progress],
            ],
            expect=problem,
            why=f"Exit status 1, as expected: {lost} is still missing. Nothing was copied or "
            "created: a real run would copy every other file inside the store, none of its "
            "bytes through this machine.",
            env=(("USE_S3_STORAGE", "True"), ("NEW_AWS_STORAGE_BUCKET_NAME", f"{BUCKET}-eu")),
        ),
    ]


def say(*lines: str) -> None:
    """Print now, before the next manage.py writes to the same terminal or pipe."""
    print(*lines, sep="\n", flush=True)


def run(step: Step, env: dict[str, str]) -> int:
    """Run one manage.py step. It has its own process group, so that Ctrl-C on the terminal
    reaches the demo alone, which passes it on once and waits for the step to stop (manage.py
    and the commands end with one line and exit status 130 on SIGINT, without a traceback)."""
    child = subprocess.Popen(
        [sys.executable, str(HERE / "manage.py"), *step.args],
        env={**env, **dict(step.env)},
        cwd=HERE,
        process_group=0 if os.name == "posix" else None,
    )
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):  # then killed, below
            child.wait(timeout=30)
        raise
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def show_bucket(s3: Any) -> None:
    """What the bucket holds: the names as the site has them, and the object that went in parts."""
    objects = [
        obj
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for obj in page.get("Contents", [])
    ]
    size = sum(obj["Size"] for obj in objects)
    say(f"Bucket {BUCKET}: {len(objects)} objects, {size / 1e6:.1f} MB")
    examples = [next((o["Key"] for o in objects if char in o["Key"]), None) for char in AWKWARD]
    if any(examples):
        say("Keys as the site named them, for example:")
        say(*(f"    {key}" for key in dict.fromkeys(k for k in examples if k)))
    if objects:
        largest = max(objects, key=lambda o: o["Size"])
        etag = largest["ETag"].strip('"')
        parts = etag.rpartition("-")[2] if "-" in etag else ""
        how = (
            f"went up in {parts} parts (an ETag ending in -{parts}; a single PUT's is the MD5)"
            if parts
            else "went up in one PUT (its ETag is its MD5)"
        )
        say(
            f"Largest object: {largest['Key']} ({largest['Size'] / 1e6:.1f} MB), ETag {etag}: {how}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="How many files to upload.")
    parser.add_argument("--large", type=int, default=1, help="How many of them are large.")
    parser.add_argument(
        "--missing",
        type=int,
        default=1,
        help="How many of them to lose on purpose, to see what a problem looks like.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=HERE / ".demo",
        help="Where the database and MEDIA_ROOT go (emptied first).",
    )
    args = parser.parse_args()

    from storage_migrate.testing import moto_server, s3_client

    workdir: Path = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "media").mkdir(parents=True)

    started = time.monotonic()
    say(f"Demo directory: {workdir}")
    try:
        with moto_server() as endpoint:
            say(f"S3-compatible server (moto) listening on {endpoint}")
            threshold = os.environ.get("STORAGE_MIGRATE_MULTIPART_THRESHOLD", "")
            threshold = threshold or str(MULTIPART_THRESHOLD)
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "shams_vision.settings",
                "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
                "MEDIA_ROOT": str(workdir / "media"),
                "USE_S3_STORAGE": "False",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_STORAGE_BUCKET_NAME": BUCKET,
                "AWS_S3_REGION_NAME": "us-east-1",
                "AWS_S3_ENDPOINT_URL": endpoint,
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "STORAGE_MIGRATE_MULTIPART_THRESHOLD": threshold,
            }
            s3_client(endpoint).create_bucket(Bucket=BUCKET)
            say(
                f"Created bucket {BUCKET}",
                f"Files from {int(threshold) / MiB:g} MiB go to S3 in parts "
                "(STORAGE_MIGRATE_MULTIPART_THRESHOLD; the library's default is 64 MiB)",
            )

            for number, step in enumerate(steps(args.count, args.large, args.missing), start=1):
                settings = "".join(f"{k}={v} " for k, v in step.env)
                shown = " ".join(["<the code above>" if a == SERVE else a for a in step.args])
                say("", f"[{number}] {step.title}", f"    $ {settings}python manage.py {shown}")
                returncode = run(step, env)
                if returncode != step.expect:
                    say(f"Step {number} ended with exit status {returncode}, not {step.expect}.")
                    return returncode or 1
                if returncode and step.why:
                    say(step.why)

            local_files = [p for p in (workdir / "media").rglob("*") if p.is_file()]
            say("", f"Local disk: {len(local_files)} files under {workdir / 'media'}")
            show_bucket(s3_client(endpoint))
    except KeyboardInterrupt:
        print("\nInterrupted; the server is stopped.", file=sys.stderr)
        return 130
    say("", f"Demo finished in {time.monotonic() - started:.1f} s; the server is stopped.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before the server started, or while it stopped
        print("\nInterrupted.", file=sys.stderr)
        sys.exit(130)
