#!/usr/bin/env python
"""`make demo`: the sample site on an embedded S3-compatible server, end to end, no AWS account.

Starts moto's S3 server on a free loopback port, creates a bucket, migrates a fresh SQLite
database, uploads a few hundred files in local mode, and runs each step below through
`manage.py`, exactly as a person would. Adding a step is one line in STEPS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from storage_migrate.testing import moto_server, s3_client  # noqa: E402

BUCKET = "shams-vision-media"


@dataclass(frozen=True)
class Step:
    title: str
    args: list[str]


def steps(count: int, large: int) -> list[Step]:
    return [
        Step("Create a fresh SQLite database", ["migrate", "--noinput", "-v", "0"]),
        Step(
            "Upload sample files with USE_S3_STORAGE=False (they land on local disk)",
            ["make_sample_files", "--count", str(count), "--large", str(large)],
        ),
        Step(
            "Copy every file to S3, verify each copy, then update its row",
            ["migrate_storage", "--to", "s3", "--no-progress"],
        ),
        Step(
            "Run it again: everything is already there, nothing is copied twice",
            ["migrate_storage", "--to", "s3", "--no-progress"],
        ),
        Step(
            "Prove every row's file is in S3 with its size and MD5, and look for orphans",
            ["verify_files", "--storage", "s3", "--orphans", "--no-progress"],
        ),
    ]


def count_objects(endpoint: str) -> tuple[int, int]:
    s3 = s3_client(endpoint)
    objects = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            objects += 1
            size += obj["Size"]
    return objects, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="How many files to upload.")
    parser.add_argument("--large", type=int, default=1, help="How many of them are large.")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=HERE / ".demo",
        help="Where the database and MEDIA_ROOT go (emptied first).",
    )
    args = parser.parse_args()

    workdir: Path = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "media").mkdir(parents=True)

    started = time.monotonic()
    print(f"Demo directory: {workdir}")
    with moto_server() as endpoint:
        print(f"S3-compatible server (moto) listening on {endpoint}")
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
        }
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        print(f"Created bucket {BUCKET}")

        for number, step in enumerate(steps(args.count, args.large), start=1):
            print(f"\n[{number}] {step.title}\n    $ python manage.py {' '.join(step.args)}")
            result = subprocess.run(
                [sys.executable, str(HERE / "manage.py"), *step.args], env=env, cwd=HERE
            )
            if result.returncode != 0:
                print(f"Step {number} failed with exit status {result.returncode}.")
                return result.returncode

        objects, size = count_objects(endpoint)
        local_files = [p for p in (workdir / "media").rglob("*") if p.is_file()]
        print(
            f"\nLocal disk: {len(local_files)} files under {workdir / 'media'}\n"
            f"Bucket {BUCKET}: {objects} objects, {size / 1e6:.1f} MB"
        )
    print(f"\nDemo finished in {time.monotonic() - started:.1f} s; the server is stopped.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nInterrupted; the server is stopped.", file=sys.stderr)
        sys.exit(130)
