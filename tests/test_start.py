"""What a start of the sample site imports: a command's --help (and a usage error) needs neither
the storages' libraries (boto3, botocore, django-storages' backends, the AWS runtime) nor Celery,
which cost most of a start; only a run that uses a storage imports them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MANAGE, REPO
from tests.settings import TEST_ENV

# The top-level packages (and django-storages' backends, which import boto3) a --help must not
# import. The `storages` package itself is an installed app: its __init__ holds its version only.
HEAVY = ("boto3", "botocore", "s3transfer", "awscrt", "storages.backends", "celery", "kombu")

# Runs manage.py in this process, as `python manage.py ...` does, then prints the modules loaded.
PROBE = """
import json, runpy, sys
sys.argv = ["manage.py", *sys.argv[1:]]
try:
    runpy.run_path("manage.py", run_name="__main__")
except SystemExit as exc:
    status = exc.code
else:
    status = 0
sys.stderr.write("\\n" + json.dumps({"status": status, "modules": sorted(sys.modules)}) + "\\n")
"""


def loaded_by(tmp_path: Path, *args: str) -> tuple[int | str | None, set[str]]:
    """The exit status of `manage.py *args`, and the heavy modules it imported."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))},
        **TEST_ENV,
        "DJANGO_SETTINGS_MODULE": "shams_vision.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(MANAGE.parent)]),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env,
        cwd=MANAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = result.stderr.strip().splitlines()[-1]
    found = json.loads(last)
    heavy = {
        name
        for name in found["modules"]
        if any(name == h or name.startswith(f"{h}.") for h in HEAVY)
    }
    return found["status"], heavy


@pytest.mark.parametrize("command", ["migrate_storage", "verify_files", "purge_source"])
def test_help_imports_neither_boto3_nor_celery(tmp_path: Path, command: str) -> None:
    status, heavy = loaded_by(tmp_path, command, "--help")
    assert status == 0
    assert heavy == set()


def test_a_usage_error_imports_neither_boto3_nor_celery(tmp_path: Path) -> None:
    status, heavy = loaded_by(tmp_path, "migrate_storage", "--to", "s3", "--workers", "0")
    assert status == 2
    assert heavy == set()


def test_the_probe_sees_what_a_run_imports(tmp_path: Path) -> None:
    # The same probe, on a command that builds the S3 storage: it does see boto3.
    status, heavy = loaded_by(
        tmp_path, "shell", "-c", "from django.core.files.storage import storages; storages['s3']"
    )
    assert status == 0
    assert {"boto3", "botocore", "storages.backends.s3"} <= heavy
    assert not {"celery", "kombu"} & heavy
