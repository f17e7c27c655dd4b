"""Checksum columns of other algorithms: SHA-1 (Wagtail's file_hash) and SHA-256 beside MD5.
One read gives every digest; each is compared with, and written to, only its own algorithm's
column; a column mapped under the wrong algorithm is refused before anything runs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from storage_migrate import migrate_storage, verify_files
from storage_migrate.checks import check_digest_columns
from storage_migrate.errors import ConfigurationError
from storage_migrate.hashing import digest_bytes, digest_stream
from storage_migrate.testing import s3_client
from tests.helpers import hashed, kinds, md5, sha1, sha256
from tests.testapp.models import HashedFile

pytestmark = pytest.mark.django_db
HASHED = ["testapp.HashedFile"]


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
@hsettings(max_examples=40, deadline=None)
def test_one_read_gives_every_digest(data: bytes, chunk: int) -> None:
    class Chunks(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            return super().read(min(chunk, size if size and size > 0 else chunk))

    streamed = digest_stream(Chunks(data), also=("sha1", "sha256"))
    whole = digest_bytes(data, also=("sha1", "sha256"))
    for digest in (streamed, whole):
        assert (digest.md5, digest.of("sha1"), digest.of("sha256")) == (
            md5(data),
            sha1(data),
            sha256(data),
        )
    assert digest_bytes(data).others == {}  # nothing asked, nothing computed


def test_a_copy_fills_each_empty_digest_with_its_own_algorithm(
    s3_bucket: str, media_root: Path
) -> None:
    rows = [hashed(f"f{i}.bin", bytes([i]) * (100 + i)) for i in range(3)]

    report = migrate_storage(to="s3", models=HASHED)

    assert (report.copied, kinds(report)) == (3, [])
    for row in rows:
        data = (media_root / row.file.name).read_bytes()
        row.refresh_from_db()
        assert (row.sha1, row.sha256, row.file_size) == (sha1(data), sha256(data), len(data))
        assert (row.bucket, row.object_key) == (s3_bucket, row.file.name)


def test_a_source_that_contradicts_its_stored_sha1_keeps_its_record(
    s3_bucket: str, media_root: Path
) -> None:
    """Same size, other bytes: only the SHA-1 tells; the row keeps its SHA-1 and size, and
    no SHA-256 is filled from bytes that are not the row's file."""
    original = b"the contract, signed" * 50
    row = hashed("contract.pdf", original, sha1=sha1(original))
    (media_root / row.file.name).write_bytes(bytes(b ^ 1 for b in original))

    report = migrate_storage(to="s3", models=HASHED)

    (problem,) = report.problems
    assert problem.kind == "checksum_mismatch"
    assert problem.detail == "source bytes do not match the stored SHA-1 (sha1); stored sha1 kept"
    assert problem.expected == sha1(original)
    row.refresh_from_db()
    assert (row.sha1, row.sha256) == (sha1(original), "")


def test_rewrite_checksums_writes_each_algorithm_into_its_own_column(
    s3_bucket: str, media_root: Path
) -> None:
    row = hashed("photo.jpg", b"old bytes", sha1=sha1(b"old bytes"), sha256="")
    (media_root / row.file.name).write_bytes(b"new bytes")

    report = migrate_storage(to="s3", models=HASHED, rewrite_checksums=True)

    assert kinds(report) == ["checksum_mismatch"]
    row.refresh_from_db()
    assert (row.sha1, row.sha256) == (sha1(b"new bytes"), sha256(b"new bytes"))


def test_verify_checks_sha1_and_sha256_by_reading_at_level_checksum(
    s3_bucket: str, media_root: Path
) -> None:
    good = hashed("good.bin", b"g" * 300)
    only_sha256 = hashed("256.bin", b"s" * 300)
    only_sha1 = hashed("1.bin", b"o" * 300)
    assert migrate_storage(to="s3", models=HASHED).problems == []
    HashedFile.objects.filter(pk=only_sha256.pk).update(sha1="")
    HashedFile.objects.filter(pk=only_sha1.pk).update(sha256="")

    clean = verify_files(storage="s3", models=HASHED, level="checksum")
    assert (clean.ok, clean.unchecked, clean.downloaded, kinds(clean)) == (3, 0, 3, [])

    # Each rewritten in the bucket: same size, other bytes (and a valid MD5 ETag of its own).
    s3 = s3_client()
    for row in (good, only_sha256, only_sha1):
        s3.put_object(Bucket=s3_bucket, Key=row.file.name, Body=b"x" * 300)
    caught = verify_files(storage="s3", models=HASHED, level="checksum")
    details = sorted((p.pk, p.detail) for p in caught.problems)
    assert details == sorted(
        [
            (good.pk, "file bytes do not match the stored SHA-1 (sha1)"),
            (only_sha256.pk, "file bytes do not match the stored SHA-256 (sha256)"),
            (only_sha1.pk, "file bytes do not match the stored SHA-1 (sha1)"),
        ]
    )
    assert {p.actual for p in caught.problems} <= {sha1(b"x" * 300), sha256(b"x" * 300)}
    assert caught.exit_code == 1


def test_a_row_without_any_digest_is_unchecked(s3_bucket: str, media_root: Path) -> None:
    row = hashed("bare.bin", b"b" * 10)
    assert migrate_storage(to="s3", models=HASHED).problems == []
    HashedFile.objects.filter(pk=row.pk).update(sha1="", sha256="")

    report = verify_files(storage="s3", models=HASHED, level="deep")

    assert (report.ok, report.unchecked, report.downloaded) == (1, 1, 1)


def test_fix_metadata_fills_empty_digests_only_with_their_own_algorithm(
    s3_bucket: str, media_root: Path
) -> None:
    row = hashed("a.bin", b"a" * 64)
    assert migrate_storage(to="s3", models=HASHED).problems == []
    HashedFile.objects.filter(pk=row.pk).update(sha1="", sha256="")

    report = verify_files(storage="s3", models=HASHED, level="deep", fix_metadata=True)

    assert report.fixed == 1
    row.refresh_from_db()
    assert (row.sha1, row.sha256) == (sha1(b"a" * 64), sha256(b"a" * 64))


def test_fix_metadata_never_overwrites_a_digest_the_object_contradicts(
    s3_bucket: str, media_root: Path
) -> None:
    row = hashed("a.bin", b"a" * 64)
    assert migrate_storage(to="s3", models=HASHED).problems == []
    s3_client().put_object(Bucket=s3_bucket, Key=row.file.name, Body=b"z" * 64)
    HashedFile.objects.filter(pk=row.pk).update(sha256="")

    report = verify_files(storage="s3", models=HASHED, level="deep", fix_metadata=True)

    assert kinds(report) == ["checksum_mismatch"]
    row.refresh_from_db()
    assert (row.sha1, row.sha256) == (sha1(b"a" * 64), "")  # nothing taken from that object


@pytest.fixture
def sha1_as_md5(settings: Any) -> None:
    """The mistake a Wagtail site's operators made: a SHA-1 column mapped as the MD5."""
    settings.STORAGE_MIGRATE = {
        "METADATA_FIELDS": {"testapp.HashedFile": {"checksum": "sha1", "sha1": None}}
    }


def test_a_sha1_column_mapped_as_the_md5_checksum_is_refused(
    s3_bucket: str, media_root: Path, sha1_as_md5: None
) -> None:
    rows = [hashed(f"{i}.bin", bytes([i]) * 9, sha1=sha1(bytes([i]) * 9)) for i in range(3)]

    for run in (
        lambda: migrate_storage(to="s3", models=HASHED),
        lambda: verify_files(storage="local", models=HASHED, fix_metadata=True),
    ):
        with pytest.raises(ConfigurationError) as refused:
            run()
        message = str(refused.value)
        assert "'checksum' (MD5) is the column 'sha1'" in message
        assert "3 of 3 of its values looked at are not MD5 digests" in message
        assert "map it as 'sha1': 'sha1' (a SHA-1 column)" in message

    # Nothing was written: no MD5 went into the SHA-1 column, nothing reached the bucket.
    for row in rows:
        before = row.sha1
        row.refresh_from_db()
        assert row.sha1 == before and row.bucket == ""
    assert "Contents" not in s3_client().list_objects_v2(Bucket=s3_bucket)

    (error,) = check_digest_columns(databases=["default"])
    assert error.id == "storage_migrate.E006"
    assert check_digest_columns(databases=None) == []  # only with `check --database`
    with pytest.raises(Exception, match=r"storage_migrate\.E006"):
        call_command("check", "--database", "default")


def test_a_column_mapped_under_its_own_algorithm_passes(settings: Any) -> None:
    hashed("a.bin", b"a", sha1=sha1(b"a"), sha256=sha256(b"a"))
    assert check_digest_columns(databases=["default"]) == []


def test_a_sha256_role_needs_room_for_64_hex_digits(settings: Any) -> None:
    from storage_migrate.checks import check_settings

    settings.STORAGE_MIGRATE = {"METADATA_FIELDS": {"testapp.HashedFile": {"sha256": "sha1"}}}
    (error,) = check_settings()
    assert error.id == "storage_migrate.E004"
    assert "max_length of at least 64" in error.msg
