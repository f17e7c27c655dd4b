"""Attacks on the SHA-1 / SHA-256 checksum columns: a digest written into another algorithm's
column, a replaced or corrupted file passing as ok (or skipped) for a row that stores a SHA-1
or SHA-256, metadata filled from bytes that are not the row's file, the mapping refusal
bypassed or refusing a healthy site, a traceback instead of one line. Each test fails if its
attack works."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from storage_migrate import migrate_storage, verify_files
from storage_migrate.checks import check_digest_columns, check_settings
from storage_migrate.errors import ConfigurationError
from storage_migrate.testing import s3_client
from tests.helpers import hashed, kinds, md5, s3_bytes, sha1, sha256
from tests.testapp.models import HashedFile

pytestmark = pytest.mark.django_db
HASHED = ["testapp.HashedFile"]


def values(row: HashedFile) -> tuple[str, str, int | None]:
    row.refresh_from_db()
    return row.sha1, row.sha256, row.file_size


@pytest.fixture
def md5_in_sha256_column(settings: Any) -> None:
    """A model with an MD5 and a SHA-1 column: the MD5 role mapped onto the `sha256` column
    (a CharField of 64, room for an MD5), the SHA-256 role off."""
    settings.STORAGE_MIGRATE = {
        "METADATA_FIELDS": {"testapp.HashedFile": {"checksum": "sha256", "sha256": None}}
    }


# --- (a) one algorithm's digest in another's column ------------------------------------------


def test_md5_and_sha1_columns_each_get_their_own_algorithm(
    s3_bucket: str, media_root: Path, md5_in_sha256_column: None
) -> None:
    data = b"both digests" * 30
    row = hashed("both.bin", data)

    report = migrate_storage(to="s3", models=HASHED)

    assert (report.copied, kinds(report)) == (1, [])
    assert values(row) == (sha1(data), md5(data), len(data))  # the sha256 column is the MD5's

    # And verify_files --fix-metadata, after both were blanked, fills each with its own.
    HashedFile.objects.filter(pk=row.pk).update(sha1="", sha256="")
    fixed = verify_files(storage="s3", models=HASHED, level="deep", fix_metadata=True)
    assert (fixed.fixed, kinds(fixed)) == (1, [])
    assert values(row) == (sha1(data), md5(data), len(data))


def test_one_column_under_two_digest_roles_is_refused(
    s3_bucket: str, media_root: Path, settings: Any
) -> None:
    """Explicitly map the `sha256` column as both the MD5 `checksum` and `sha256`. On a site
    whose column is still blank, no value can tell the mapping is wrong; the run would write an
    MD5 and a SHA-256 into that one column (whichever update comes last wins)."""
    settings.STORAGE_MIGRATE = {
        "METADATA_FIELDS": {"testapp.HashedFile": {"checksum": "sha256", "sha256": "sha256"}}
    }
    data = b"two roles, one column" * 10
    row = hashed("two.bin", data)

    # A blank column gives mismatched_digest() nothing to look at: the mapping itself is
    # refused (E004, and before the run).
    errors = check_settings()
    try:
        report = migrate_storage(to="s3", models=HASHED)
    except ConfigurationError:
        report = None
    row.refresh_from_db()
    written = row.sha256
    assert errors or report is None, (
        f"one column mapped under two digest roles was accepted; it now holds {written!r} "
        f"(md5={md5(data)}, sha256={sha256(data)})"
    )


def test_rewrite_checksums_never_crosses_algorithms(
    s3_bucket: str, media_root: Path, md5_in_sha256_column: None
) -> None:
    old, new = b"old bytes!", b"new bytes!"
    row = hashed("r.bin", old, sha1=sha1(old), sha256=md5(old))
    (media_root / row.file.name).write_bytes(new)

    report = migrate_storage(to="s3", models=HASHED, rewrite_checksums=True)

    assert kinds(report) == ["checksum_mismatch", "checksum_mismatch"]
    assert values(row) == (sha1(new), md5(new), len(new))


# --- (b) a replaced or corrupted file passing as ok ------------------------------------------


def _migrated(data: bytes, **columns: Any) -> HashedFile:
    row = hashed("victim.bin", data, **columns)
    assert migrate_storage(to="s3", models=HASHED).problems == []
    return row


@pytest.mark.parametrize("level", ["checksum", "deep"])
@pytest.mark.parametrize("keep", ["sha1", "sha256", "both"])
def test_a_replaced_object_with_forged_md5_metadata_is_caught(
    s3_bucket: str, media_root: Path, level: str, keep: str
) -> None:
    """Same size, other bytes, written in parts (no ETag is an MD5) with `md5` metadata and an
    `etag` metadata that binds it: the hint must not stand in for a SHA-1 or SHA-256."""
    data = b"A" * 10 * 1024 * 1024
    row = _migrated(data)
    blank = {"sha1": {"sha256": ""}, "sha256": {"sha1": ""}, "both": {}}[keep]
    if blank:
        HashedFile.objects.filter(pk=row.pk).update(**blank)
    evil = b"B" * len(data)
    s3 = s3_client()
    upload = s3.create_multipart_upload(
        Bucket=s3_bucket, Key=row.file.name, Metadata={"md5": md5(data)}
    )
    half = len(evil) // 2
    parts = []
    for number, chunk in enumerate((evil[:half], evil[half:]), start=1):
        answer = s3.upload_part(
            Bucket=s3_bucket,
            Key=row.file.name,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=chunk,
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    done = s3.complete_multipart_upload(
        Bucket=s3_bucket,
        Key=row.file.name,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
    )
    etag = done["ETag"].strip('"')
    s3.copy_object(
        Bucket=s3_bucket,
        Key=row.file.name,
        CopySource={"Bucket": s3_bucket, "Key": row.file.name},
        Metadata={"md5": md5(data), "etag": etag},
        MetadataDirective="REPLACE",
    )

    report = verify_files(storage="s3", models=HASHED, level=level)

    assert report.ok == 0 and kinds(report) == ["checksum_mismatch"]


@pytest.mark.parametrize("level", ["checksum", "deep"])
def test_uppercase_stored_digests_compare_and_a_replacement_is_caught(
    s3_bucket: str, media_root: Path, level: str
) -> None:
    data = b"upper" * 100
    row = _migrated(data)
    HashedFile.objects.filter(pk=row.pk).update(
        sha1=sha1(data).upper(), sha256=sha256(data).upper()
    )
    assert check_digest_columns(databases=["default"]) == []

    clean = verify_files(storage="s3", models=HASHED, level=level)
    assert (clean.ok, kinds(clean)) == (1, [])

    s3_client().put_object(Bucket=s3_bucket, Key=row.file.name, Body=b"x" * len(data))
    caught = verify_files(storage="s3", models=HASHED, level=level)
    assert (caught.ok, kinds(caught)) == (0, ["checksum_mismatch"])


def test_the_listing_join_still_reads_sha_only_rows(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows judged against one listing (JOIN_MIN_ROWS rows or more): a listing's ETag is an MD5
    that no SHA-only row can be compared with; the row must still be read."""
    from storage_migrate.verify import run as verify_run

    monkeypatch.setattr(verify_run, "JOIN_MIN_ROWS", 1)
    rows = [hashed(f"j{i}.bin", bytes([65 + i]) * 200) for i in range(4)]
    assert migrate_storage(to="s3", models=HASHED).problems == []
    HashedFile.objects.filter(pk=rows[0].pk).update(sha256="")
    HashedFile.objects.filter(pk=rows[1].pk).update(sha1="")
    for row in rows:
        s3_client().put_object(Bucket=s3_bucket, Key=row.file.name, Body=b"z" * 200)

    report = verify_files(storage="s3", models=HASHED, level="checksum")

    assert report.ok == 0 and kinds(report) == ["checksum_mismatch"] * 4


def test_md5_row_with_wrong_sha1_is_caught_at_deep(
    s3_bucket: str, media_root: Path, md5_in_sha256_column: None
) -> None:
    """The MD5 agrees, the SHA-1 does not (the row's record is inconsistent): deep says so."""
    data = b"inconsistent" * 20
    row = _migrated(data)
    HashedFile.objects.filter(pk=row.pk).update(sha1=sha1(b"other"))

    report = verify_files(storage="s3", models=HASHED, level="deep")

    assert (report.ok, kinds(report)) == (0, ["checksum_mismatch"])


def test_a_padded_sha1_the_refusal_accepts_is_compared_as_a_sha1(
    s3_bucket: str, media_root: Path, settings: Any
) -> None:
    """The refusal strips a value before it judges it (hashing.looks_like); a value it accepts
    as a SHA-1 must then compare as that SHA-1, not be a checksum mismatch of a healthy file."""
    data = b"padded" * 50
    row = _migrated(data)
    # A SHA-1 with spaces around it needs a column with room for them (PostgreSQL refuses 42
    # characters in a CharField of 40): the SHA-1 role on the 64-character column.
    settings.STORAGE_MIGRATE = {
        "METADATA_FIELDS": {"testapp.HashedFile": {"sha1": "sha256", "sha256": None}}
    }
    HashedFile.objects.filter(pk=row.pk).update(sha1="", sha256=f" {sha1(data)} ")
    assert check_digest_columns(databases=["default"]) == []  # accepted as SHA-1 digests

    report = verify_files(storage="s3", models=HASHED, level="checksum")

    # Stored digests compare as looks_like() reads them: lower case, spaces stripped.
    assert (report.ok, kinds(report)) == (1, [])


# --- (c) digests filled from bytes that are not the row's file -------------------------------


def test_fix_metadata_takes_no_sha256_from_a_foreign_object_at_level_checksum(
    s3_bucket: str, media_root: Path
) -> None:
    data = b"c" * 512
    row = _migrated(data)
    HashedFile.objects.filter(pk=row.pk).update(sha256="", file_size=None)
    s3_client().put_object(Bucket=s3_bucket, Key=row.file.name, Body=b"d" * 700)

    report = verify_files(storage="s3", models=HASHED, level="checksum", fix_metadata=True)

    assert kinds(report) == ["checksum_mismatch"]
    assert values(row) == (sha1(data), "", None)


def test_fix_metadata_proven_by_sha1_corrects_size_and_fills_sha256(
    s3_bucket: str, media_root: Path
) -> None:
    data = b"p" * 333
    row = _migrated(data)
    HashedFile.objects.filter(pk=row.pk).update(sha256="", file_size=1)

    report = verify_files(storage="s3", models=HASHED, level="checksum", fix_metadata=True)

    assert kinds(report) == ["size_mismatch"]
    # A size mismatch skips the read at level checksum; at deep, the SHA-1 proves the object.
    deep = verify_files(storage="s3", models=HASHED, level="deep", fix_metadata=True)
    assert deep.fixed == 1
    assert values(row) == (sha1(data), sha256(data), len(data))


def test_fix_metadata_does_not_correct_size_when_a_sha256_is_contradicted(
    s3_bucket: str, media_root: Path
) -> None:
    """The SHA-1 agrees, the SHA-256 does not: nothing proves the object is the row's file."""
    data = b"q" * 333
    row = _migrated(data)
    HashedFile.objects.filter(pk=row.pk).update(sha256=sha256(b"other"), file_size=1)

    verify_files(storage="s3", models=HASHED, level="deep", fix_metadata=True)

    assert values(row) == (sha1(data), sha256(b"other"), 1)


def test_migrate_from_s3_fills_nothing_from_a_foreign_source_object(
    s3_bucket: str, media_root: Path
) -> None:
    """The row's file is in the bucket; someone replaced it (a valid MD5 ETag of its own). A
    copy back to local disk finds the SHA-1 contradicted: no SHA-256 from those bytes."""
    data = b"m" * 256
    row = _migrated(data)
    HashedFile.objects.filter(pk=row.pk).update(sha256="")
    s3_client().put_object(Bucket=s3_bucket, Key=row.file.name, Body=b"n" * 256)
    (media_root / row.file.name).unlink()

    report = migrate_storage(source="s3", to="local", models=HASHED)

    assert kinds(report) == ["checksum_mismatch"]
    assert values(row)[:2] == (sha1(data), "")


def test_dry_run_predicts_the_sha1_mismatch_of_the_real_run(
    s3_bucket: str, media_root: Path
) -> None:
    original = b"the will, signed" * 40
    row = hashed("will.pdf", original, sha1=sha1(original))
    (media_root / row.file.name).write_bytes(bytes(b ^ 2 for b in original))

    predicted = migrate_storage(to="s3", models=HASHED, dry_run=True)
    real = migrate_storage(to="s3", models=HASHED)

    assert kinds(real) == ["checksum_mismatch"]
    # A dry run reads the source for the row's SHA-1 and SHA-256, as the real run does.
    assert kinds(predicted) == kinds(real)


def test_a_second_run_still_reports_the_sha1_mismatch_and_keeps_the_source(
    s3_bucket: str, media_root: Path
) -> None:
    """The source contradicts its stored SHA-1; run 1 copies it and says so. Run 2 finds the
    same bytes at the destination: the skip must not hide the mismatch (an MD5 row keeps
    reporting it), and --delete-source must not delete a file whose SHA-1 it contradicts."""
    original = b"the deed" * 64
    row = hashed("deed.pdf", original, sha1=sha1(original))
    source = media_root / row.file.name
    source.write_bytes(bytes(b ^ 4 for b in original))
    assert kinds(migrate_storage(to="s3", models=HASHED)) == ["checksum_mismatch"]

    again = migrate_storage(to="s3", models=HASHED, delete_source=True)

    # A skip of a row with a SHA-1 reads the source for every digest: one that contradicts
    # it is a checksum_mismatch, and its source is never deleted.
    assert source.exists(), "the source that contradicts its stored SHA-1 was deleted"
    assert kinds(again) == ["checksum_mismatch"]


def test_a_second_run_keeps_an_md5_rows_source_that_contradicts_its_checksum(
    s3_bucket: str, media_root: Path, md5_in_sha256_column: None
) -> None:
    """The same attack on a row that stores an MD5: resisted (the comparison the SHA-1 lacks)."""
    original = b"the deed" * 64
    row = hashed("deed.pdf", original, sha256=md5(original))
    source = media_root / row.file.name
    source.write_bytes(bytes(b ^ 4 for b in original))
    assert kinds(migrate_storage(to="s3", models=HASHED)) == ["checksum_mismatch"]

    again = migrate_storage(to="s3", models=HASHED, delete_source=True)

    assert source.exists()
    assert kinds(again) == ["checksum_mismatch"]


def test_source_gone_a_foreign_object_with_our_md5_metadata_is_not_skipped(
    s3_bucket: str, media_root: Path
) -> None:
    """The row was migrated and its source deleted; someone replaced the object (same size),
    carrying md5 metadata of its own bytes. The row's SHA-1 says it is not the row's file."""
    data = b"s" * 400
    row = _migrated(data)
    (media_root / row.file.name).unlink()
    evil = b"t" * 400
    s3_client().put_object(
        Bucket=s3_bucket, Key=row.file.name, Body=evil, Metadata={"md5": md5(evil)}
    )

    report = migrate_storage(to="s3", models=HASHED)

    # Without a source, a row's stored SHA-1 or SHA-256 is what proves the object (read),
    # never the md5 metadata anyone can write.
    assert report.skipped == 0 and kinds(report) != [], (
        f"skipped={report.skipped}, problems={kinds(report)}"
    )
    assert values(row)[:2] == (sha1(data), sha256(data))
    assert s3_bytes(s3_bucket, row.file.name) == evil  # nothing overwritten either


# --- (d) the mapping refusal -------------------------------------------------------------------


@pytest.fixture
def sha1_as_md5(settings: Any) -> None:
    settings.STORAGE_MIGRATE = {
        "METADATA_FIELDS": {"testapp.HashedFile": {"checksum": "sha1", "sha1": None}}
    }


def test_the_refusal_sees_sha1_values_that_are_not_first_by_pk(
    s3_bucket: str, media_root: Path, sha1_as_md5: None
) -> None:
    """A SHA-1 column mapped as the MD5, whose values are half MD5s (written by an earlier run
    made while the column was blank) and half SHA-1s (the app's own, since): a SHA-1 in a
    column mapped as the MD5 is proof of the mistake, however many MD5s sit beside it."""
    rows = []
    for i in range(4):
        data = bytes([48 + i]) * 50
        digest = md5(data) if i % 2 == 0 else sha1(data)
        rows.append(hashed(f"mix{i}.bin", data, sha1=digest))
    blank = hashed("blank.bin", b"blank" * 10)

    # One value that is unmistakably another algorithm's digest refuses the mapping: else
    # the run would write an MD5 into a column that holds SHA-1s (the blank row's).
    with contextlib.suppress(ConfigurationError):
        migrate_storage(to="s3", models=HASHED)
    blank.refresh_from_db()
    assert blank.sha1 != md5(b"blank" * 10), "an MD5 was written beside SHA-1s"


def test_a_healthy_site_with_blank_and_uppercase_digests_is_not_refused(
    s3_bucket: str, media_root: Path
) -> None:
    for i in range(25):
        data = bytes([i]) * 20
        if i % 3 == 0:
            hashed(f"h{i}.bin", data)  # blank: an image uploaded before the column existed
        else:
            hashed(f"h{i}.bin", data, sha1=sha1(data).upper(), sha256=sha256(data))

    assert check_digest_columns(databases=["default"]) == []
    report = migrate_storage(to="s3", models=HASHED)
    assert (report.copied, kinds(report)) == (25, [])


def test_the_refusal_reads_the_routed_database_and_is_one_line(
    s3_bucket: str, media_root: Path, settings: Any
) -> None:
    """The SHA-256 role mapped onto the object_key column (a CharField of 1024): its values are
    keys. migrate_storage and verify_files are exit 2 and one line, never a traceback."""
    settings.STORAGE_MIGRATE = {"METADATA_FIELDS": {"testapp.HashedFile": {"sha256": "object_key"}}}
    for i in range(3):
        hashed(f"k{i}.bin", b"k" * 5, object_key=f"some/long/key/{'x' * 200}/{i}.bin")

    for command, args in (
        ("migrate_storage", ["--to", "s3", "--model", "testapp.HashedFile"]),
        ("verify_files", ["--storage", "s3", "--model", "testapp.HashedFile"]),
    ):
        with pytest.raises(CommandError) as refused:
            call_command(command, *args, stdout=io.StringIO(), stderr=io.StringIO())
        assert refused.value.returncode == 2
        message = str(refused.value)
        assert "\n" not in message and "Traceback" not in message
        assert "'sha256' (SHA-256) is the column 'object_key'" in message
        assert len(message) < 600


def test_a_blank_table_and_a_table_before_migrate_pass_the_check(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert check_digest_columns(databases=["default"]) == []

    from django.db import DatabaseError

    from storage_migrate import targets

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError("no such table: testapp_hashedfile")

    monkeypatch.setattr(targets, "mismatched_digest", broken)
    monkeypatch.setattr("storage_migrate.checks.mismatched_digest", broken)
    assert check_digest_columns(databases=["default"]) == []


def test_migrate_from_s3_to_local_fills_the_sha256_of_the_bytes_written(
    s3_bucket: str, media_root: Path
) -> None:
    """The copy to local disk hashes what it reads (HashingReader): the SHA-256 it fills is of
    the bytes now on disk, and the SHA-1 it compared is the row's."""
    data = bytes(range(256)) * 40
    row = _migrated(data)
    HashedFile.objects.filter(pk=row.pk).update(sha256="")
    (media_root / row.file.name).unlink()

    report = migrate_storage(source="s3", to="local", models=HASHED)

    assert (report.copied, kinds(report)) == (1, [])
    on_disk = (media_root / row.file.name).read_bytes()
    assert on_disk == data
    assert values(row) == (sha1(data), sha256(data), len(data))
