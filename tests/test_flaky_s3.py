"""A flaky S3: through a proxy that fails 12 % of requests (503 SlowDown, 500, dropped
connections, answers lost after the server acted), a migration ends with every row either
migrated and consistent or reported as an error, and a re-run finishes the rest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate import migrate_storage, verify_files
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages
from tests.faults import faulty_proxy
from tests.helpers import MiB

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def consistent(bucket: str, endpoint: str) -> set[int]:
    """Rows pointing at the bucket, each checked against the bytes S3 holds (not via the tool)."""
    s3 = s3_client(endpoint)
    done = set()
    for row in FileManager.objects.filter(bucket=bucket):
        body = s3.get_object(Bucket=bucket, Key=row.object_key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == row.checksum, f"row {row.pk} points at bad bytes"
        done.add(row.pk)
    return done


@pytest.mark.parametrize("attempts", [5, 1])
def test_a_flaky_s3_never_leaves_a_row_inconsistent(
    moto_endpoint: str, http_bucket: str, settings: Any, media_root: Path, attempts: int
) -> None:
    rows = [
        FileManager.objects.create(file=ContentFile(os.urandom(1000 + i), name=f"f {i}.bin"))
        for i in range(120)
    ]
    rows.append(FileManager.objects.create(file=ContentFile(os.urandom(11 * MiB), name="big")))
    settings.STORAGE_MIGRATE = {
        "MULTIPART_THRESHOLD": 5 * MiB,
        "MULTIPART_CHUNKSIZE": 5 * MiB,
        "MAX_ATTEMPTS": attempts,
    }
    settings.AWS_STORAGE_BUCKET_NAME = http_bucket
    with faulty_proxy(moto_endpoint, rate=0.12) as proxy:
        settings.AWS_S3_ENDPOINT_URL = proxy.url
        reset_storages()

        first = migrate_storage(to="s3", workers=8)

        assert proxy.injected, "no fault was injected"
        done = consistent(http_bucket, moto_endpoint)
        failed = {p.pk for p in first.problems}
        assert {p.kind for p in first.problems} <= {"error"}, [
            (p.kind, p.detail) for p in first.problems
        ]
        assert done | failed == {r.pk for r in rows}  # every row: migrated, or an error
        assert not done & failed
        if attempts == 1:
            assert failed, "with one attempt, some rows must fail"

        for _ in range(6):  # re-runs finish the rest, still through the faults
            again = migrate_storage(to="s3", workers=8)
            consistent(http_bucket, moto_endpoint)
            if again.exit_code == 0:
                break
        assert again.exit_code == 0, again.problems

    settings.AWS_S3_ENDPOINT_URL = moto_endpoint
    reset_storages()
    assert consistent(http_bucket, moto_endpoint) == {r.pk for r in rows}
    assert verify_files(storage="s3").problems == []
    for row in rows:
        assert (media_root / row.file.name).exists()  # no source was touched
