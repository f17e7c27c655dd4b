"""No secret ever appears in output, reports, logs or error messages; no presigned URL is
printed. Checked with recognisable fake keys across every kind of run, clean and failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate.testing import free_port
from tests.conftest import ManagePy

pytestmark = pytest.mark.e2e

ACCESS_KEY = "AKIAFAKEACCESSKEY4242"
SECRET_KEY = "SeCrEt/FakeSecretKeyThatMustNeverBePrinted+42"


def leaked(text: str) -> list[str]:
    found = [s for s in (ACCESS_KEY, SECRET_KEY, SECRET_KEY[:20]) if s in text]
    found += [m for m in ("X-Amz-Signature", "X-Amz-Credential", "Signature=") if m in text]
    return found


@pytest.mark.slow
def test_no_secret_in_any_output(manage_py: ManagePy, tmp_path: Path, media_root: Path) -> None:
    manage_py.env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    rows = [
        FileManager.objects.create(file=ContentFile(b"x" * i, name=f"s{i}.txt")) for i in range(3)
    ]
    (media_root / rows[0].file.name).unlink()  # one problem, so that problem paths run too
    report = tmp_path / "report.json"
    runs = [
        ("migrate_storage", "--to", "s3", "--report", str(report), "-v", "3", "--no-progress"),
        ("migrate_storage", "--to", "s3", "--format", "json", "--no-progress"),
        ("verify_files", "--storage", "s3", "--orphans", "-v", "3", "--no-progress"),
        ("verify_files", "--storage", "s3", "--format", "junit", "--level", "deep"),
        ("verify_files", "--storage", "s3", "--format", "csv"),
    ]
    outputs = []
    for args in runs:
        result = manage_py(*args)
        assert result.returncode in (0, 1), result.stderr
        outputs.append(result.stdout + result.stderr)
    outputs.append(report.read_text())
    json.loads(report.read_text())

    # Configuration errors: a missing bucket, an unreachable endpoint.
    manage_py.env["AWS_STORAGE_BUCKET_NAME"] = "no-such-bucket-anywhere"
    for command in ("migrate_storage", "verify_files"):
        target = ("--to", "s3") if command == "migrate_storage" else ("--storage", "s3")
        result = manage_py(command, *target, "-v", "3")
        assert result.returncode == 2
        outputs.append(result.stdout + result.stderr)
    manage_py.env["AWS_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    result = manage_py("migrate_storage", "--to", "s3", "-v", "3")
    assert result.returncode == 2
    outputs.append(result.stdout + result.stderr)

    for text in outputs:
        assert leaked(text) == [], text
