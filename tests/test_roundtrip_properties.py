"""Property-based: any file name a site may hold (unicode, spaces, + % # ? &, leading dots, very
long) and any size (0, 1, at and around the multipart threshold) goes local -> s3 -> local with
the same bytes under the same name."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import FileManager
from storage_migrate import migrate_storage, verify_files
from storage_migrate.testing import s3_client
from tests.helpers import MiB

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

THRESHOLD = 5 * MiB
# Letters and digits of any script, and the punctuation that breaks naive tools.
NAME_CHARS = st.characters(
    whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Zs"),
    whitelist_characters=" +%#?&=,;'!~@$()[]-_.",
)
# Up to 200 UTF-8 bytes: a local file system takes at most 255 in one path component.
names = st.text(NAME_CHARS, min_size=1, max_size=120).filter(
    lambda n: (
        n.strip() not in ("", ".", "..") and not n.endswith(" ") and len(n.encode("utf-8")) <= 200
    )
)
sizes = st.sampled_from([0, 1, 2, 1000, THRESHOLD - 1, THRESHOLD, THRESHOLD + 1, 2 * THRESHOLD + 7])


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never fails by chance
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stem=names, dot_first=st.booleans(), size=sizes, seed=st.integers(0, 2**32 - 1))
def test_round_trip_keeps_bytes_and_name(
    s3_bucket: str,
    media_root: Path,
    settings_override: Any,
    stem: str,
    dot_first: bool,
    size: int,
    seed: int,
) -> None:
    import random

    name = f"file_manager/{uuid.uuid4().hex[:6]}/{'.' if dot_first else ''}{stem}"
    data = random.Random(seed).randbytes(size)
    path = media_root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    row = FileManager.objects.create(
        file=name, checksum=hashlib.md5(data).hexdigest(), file_size=size
    )
    try:
        to_s3 = migrate_storage(to="s3", models=["core.FileManager"])
        assert to_s3.problems == [], to_s3.problems
        s3_body = s3_client().get_object(Bucket=s3_bucket, Key=name)["Body"].read()
        assert s3_body == data
        assert verify_files(storage="s3").problems == []
        path.unlink()

        back = migrate_storage(to="local", models=["core.FileManager"])

        assert back.problems == [], back.problems
        assert path.read_bytes() == data
        row.refresh_from_db()
        assert (row.file.name, row.bucket, row.object_key) == (name, "", name)
    finally:
        FileManager.objects.all().delete()
        s3_client().delete_object(Bucket=s3_bucket, Key=name)


@pytest.fixture
def settings_override(settings: Any) -> Any:
    settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": THRESHOLD, "MULTIPART_CHUNKSIZE": THRESHOLD}
    return settings
