"""Three manage.py migrate_storage --shard K/3 processes at once, as the pods of a Kubernetes
Indexed Job run them: against moto's HTTP server and the test database (SQLite, or PostgreSQL
with DATABASE_URL), every row migrated by one process, every object byte-equal to its source."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import ManagePy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHARDS = 3


def test_three_shards_at_once_migrate_every_row_once(
    manage_py: ManagePy, http_bucket: str, s3_endpoint: str, media_root: Path, tmp_path: Path
) -> None:
    rng = random.Random(7)
    rows = [
        FileManager.objects.create(
            file=ContentFile(rng.randbytes(rng.randint(1024, 16 * 1024)), name=f"f {i}.bin")
        )
        for i in range(150)
    ]
    # Rows sharing a file: one name twice, and one file under two spellings.
    first, second = str(rows[0].file.name), str(rows[1].file.name)
    FileManager.objects.create(file=first)
    folder, base = second.rsplit("/", 1)
    FileManager.objects.create(file=f"{folder}//{base}")
    total = FileManager.objects.count()

    reports = [tmp_path / f"shard-{k}.json" for k in range(SHARDS)]
    processes = [
        manage_py.start(
            "migrate_storage",
            "--to=s3",
            f"--shard={k}/{SHARDS}",
            "--workers=8",
            "--no-progress",
            f"--report={reports[k]}",
        )
        for k in range(SHARDS)
    ]
    outputs = [ManagePy.finish(process, timeout=240) for process in processes]

    for k, (process, (stdout, stderr)) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"shard {k}:\n{stdout}\n{stderr}"
        assert f"Shard {k}/{SHARDS}: only the rows" in stdout
    done = [json.loads(path.read_text()) for path in reports]
    assert [d["shard"] for d in done] == [f"{k}/{SHARDS}" for k in range(SHARDS)]
    assert sum(d["totals"]["rows"] for d in done) == total
    assert all(d["totals"]["rows"] > 0 and d["totals"]["problems"] == 0 for d in done)
    files = {str(r.file.name) for r in rows}
    # Each file was copied by one process once; its other rows were skipped, never copied again.
    assert sum(d["totals"]["copied"] for d in done) == len(files)
    assert sum(d["totals"]["skipped"] for d in done) == total - len(files)

    client = s3_client(s3_endpoint)
    listing = client.list_objects_v2(Bucket=http_bucket)
    assert sorted(o["Key"] for o in listing.get("Contents", [])) == sorted(files)
    for row in FileManager.objects.all():
        key = str(row.file.name).replace("//", "/")
        data = (media_root / key).read_bytes()
        stored = client.get_object(Bucket=http_bucket, Key=key)["Body"].read()
        assert stored == data, key
        assert (row.bucket, row.object_key) == (http_bucket, key)
        assert (row.file_size, row.checksum) == (len(data), hashlib.md5(data).hexdigest())
