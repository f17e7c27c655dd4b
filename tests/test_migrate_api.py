"""storage_migrate.migrate_storage(): every outcome, and the promises, on local disk and moto."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage
from storage_migrate.testing import s3_client
from tests.helpers import MiB, kinds, make, md5, s3_bytes, s3_keys
from tests.testapp.models import Attachment, Document

pytestmark = pytest.mark.django_db


def test_local_to_s3_copies_verifies_and_updates_rows(s3_bucket: str, media_root: Path) -> None:
    rows = [make(f"photo {i}.jpg", os.urandom(1000 + i)) for i in range(5)]
    before = {r.pk: (media_root / r.file.name).read_bytes() for r in rows}

    report = migrate_storage(to="s3")

    assert report.exit_code == 0, report.problems
    assert report.totals == {
        "rows": 5,
        "copied": 5,
        "skipped": 0,
        "at_destination": 0,
        "failed": 0,
        "problems": 0,
        "bytes_copied": sum(len(b) for b in before.values()),
        "copied_server_side": 0,
        "deleted": 0,
        "bytes_deleted": 0,
    }
    for row in FileManager.objects.all():
        data = before[row.pk]
        assert row.bucket == s3_bucket
        assert row.object_key == row.file.name
        assert row.file_size == len(data)
        assert row.checksum == md5(data)
        assert s3_bytes(s3_bucket, row.object_key) == data
        head = s3_client().head_object(Bucket=s3_bucket, Key=row.object_key)
        assert head["Metadata"]["md5"] == md5(data)
        assert head["ContentType"] == "image/jpeg"
        assert head["CacheControl"] == "max-age=86400"
        # the source is untouched
        assert (media_root / row.file.name).read_bytes() == data
    acl = s3_client().get_object_acl(Bucket=s3_bucket, Key=rows[0].file.name)
    assert not any("AllUsers" in str(g.get("Grantee")) for g in acl["Grants"])


def test_second_run_copies_nothing(s3_bucket: str) -> None:
    for i in range(4):
        make(f"doc{i}.pdf", os.urandom(300))
    assert migrate_storage(to="s3").copied == 4
    updated = {r.pk: r.updated_at for r in FileManager.objects.all()}

    again = migrate_storage(to="s3")

    assert (again.copied, again.skipped, again.problems) == (0, 4, [])
    # nothing needed rewriting, so no row was touched
    assert {r.pk: r.updated_at for r in FileManager.objects.all()} == updated


def test_dry_run_writes_nothing_and_counts_what_a_real_run_does(s3_bucket: str) -> None:
    make("a.txt", b"aaa")
    make("b.txt", b"bbbbbb")
    gone = make("c.txt", b"c")
    gone.file.storage.delete(gone.file.name)
    snapshot = list(FileManager.objects.values())

    dry = migrate_storage(to="s3", dry_run=True)

    assert s3_keys(s3_bucket) == []
    assert list(FileManager.objects.values()) == snapshot
    real = migrate_storage(to="s3")
    assert dry.dry_run and not real.dry_run
    assert dry.totals == real.totals
    assert kinds(dry) == kinds(real) == ["missing"]


def test_missing_source_is_reported_and_the_run_goes_on(s3_bucket: str) -> None:
    ok = make("fine.txt", b"fine")
    gone = make("gone.txt", b"gone")
    gone.file.storage.delete(gone.file.name)

    report = migrate_storage(to="s3")

    assert report.exit_code == 1
    assert (report.copied, report.failed) == (1, 1)
    [problem] = report.problems
    assert (problem.kind, problem.model, problem.field, problem.pk) == (
        "missing",
        "core.FileManager",
        "file",
        gone.pk,
    )
    assert problem.name == gone.file.name
    assert s3_keys(s3_bucket) == [ok.file.name]
    gone.refresh_from_db()
    assert gone.bucket == ""


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "../outside.txt",
        "file_manager/../../outside.txt",
        "bad\x00name.txt",
        "tab\tname.txt",
        "file_manager/" + "日" * 400 + ".txt",  # 400 characters, over 1024 bytes as a key
    ],
)
def test_unsafe_names_are_never_read_or_written(
    s3_bucket: str, media_root: Path, name: str
) -> None:
    from django.db import connection

    if "\x00" in name and connection.vendor == "postgresql":
        pytest.skip("PostgreSQL cannot store a NUL byte in a text column: no such row exists")
    row = make("innocent.txt", b"x")
    outside = media_root.parent / "outside.txt"
    outside.write_bytes(b"secret")
    FileManager.objects.filter(pk=row.pk).update(file=name)

    report = migrate_storage(to="s3")

    assert [(p.kind, p.pk) for p in report.problems] == [("unsafe_name", row.pk)]
    assert s3_keys(s3_bucket) == []
    assert outside.read_bytes() == b"secret"


def test_checksum_mismatch_copies_the_bytes_and_keeps_the_stored_checksum(
    s3_bucket: str,
) -> None:
    row = make("report.pdf", b"real bytes")
    FileManager.objects.filter(pk=row.pk).update(checksum="0" * 32)

    report = migrate_storage(to="s3")

    [problem] = report.problems
    assert problem.kind == "checksum_mismatch"
    assert (problem.expected, problem.actual) == ("0" * 32, md5(b"real bytes"))
    assert report.copied == 1
    assert s3_bytes(s3_bucket, row.file.name) == b"real bytes"
    row.refresh_from_db()
    assert row.checksum == "0" * 32
    assert row.bucket == s3_bucket

    # A re-run does not copy it again, and says so again.
    again = migrate_storage(to="s3")
    assert (again.copied, again.skipped, kinds(again)) == (0, 1, ["checksum_mismatch"])

    fixed = migrate_storage(to="s3", rewrite_checksums=True)
    assert kinds(fixed) == ["checksum_mismatch"]
    row.refresh_from_db()
    assert row.checksum == md5(b"real bytes")
    assert migrate_storage(to="s3").problems == []


def test_size_mismatch_corrects_the_size_column(s3_bucket: str) -> None:
    row = make("a.bin", b"12345")
    FileManager.objects.filter(pk=row.pk).update(file_size=999)

    report = migrate_storage(to="s3")

    [problem] = report.problems
    assert (problem.kind, problem.expected, problem.actual) == ("size_mismatch", 999, 5)
    row.refresh_from_db()
    assert row.file_size == 5


def test_conflict_leaves_the_destination_alone_unless_overwrite(s3_bucket: str) -> None:
    row = make("taken.txt", b"ours")
    s3_client().put_object(Bucket=s3_bucket, Key=row.file.name, Body=b"someone else's")

    report = migrate_storage(to="s3")

    assert kinds(report) == ["conflict"]
    assert s3_bytes(s3_bucket, row.file.name) == b"someone else's"
    row.refresh_from_db()
    assert row.bucket == ""

    forced = migrate_storage(to="s3", overwrite=True)
    assert (forced.copied, forced.problems) == (1, [])
    assert s3_bytes(s3_bucket, row.file.name) == b"ours"


def test_existing_identical_object_is_skipped_and_fills_missing_metadata(
    s3_bucket: str,
) -> None:
    row = make("same.txt", b"identical")
    FileManager.objects.filter(pk=row.pk).update(checksum="", file_size=None, content_type="")
    s3_client().put_object(Bucket=s3_bucket, Key=row.file.name, Body=b"identical")

    report = migrate_storage(to="s3")

    assert (report.copied, report.skipped, report.problems) == (0, 1, [])
    row.refresh_from_db()
    assert (row.checksum, row.file_size, row.bucket) == (md5(b"identical"), 9, s3_bucket)
    assert row.content_type == "text/plain"


def test_delete_source_only_after_a_clean_verified_commit(s3_bucket: str, media_root: Path) -> None:
    clean = make("clean.txt", b"clean")
    dubious = make("dubious.txt", b"dubious")
    FileManager.objects.filter(pk=dubious.pk).update(checksum="f" * 32)

    report = migrate_storage(to="s3", delete_source=True)

    assert kinds(report) == ["checksum_mismatch"]
    assert not (media_root / clean.file.name).exists()
    assert (media_root / dubious.file.name).read_bytes() == b"dubious"
    clean.refresh_from_db()
    assert clean.bucket == s3_bucket
    assert s3_bytes(s3_bucket, clean.file.name) == b"clean"


def test_dry_run_never_deletes(s3_bucket: str, media_root: Path) -> None:
    row = make("keep.txt", b"keep")
    migrate_storage(to="s3", delete_source=True, dry_run=True)
    assert (media_root / row.file.name).exists()


def test_awkward_names_and_empty_files(s3_bucket: str, media_root: Path) -> None:
    names = ["a b c.txt", "façade ñandú.pdf", "scan+copy.png", "100% done.txt", "tom & jerry.mp3"]
    rows = [make(n, n.encode() * 3) for n in names] + [make("empty.txt", b"")]

    report = migrate_storage(to="s3")

    assert (report.copied, report.problems) == (len(rows), [])
    for row in rows:
        assert s3_bytes(s3_bucket, row.file.name) == (media_root / row.file.name).read_bytes()
    assert migrate_storage(to="s3").skipped == len(rows)


def test_multipart_upload_is_verified_and_rerun_skips_it(
    s3_bucket: str, settings: Any, media_root: Path
) -> None:
    settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": 5 * MiB, "MULTIPART_CHUNKSIZE": 5 * MiB}
    data = os.urandom(11 * MiB + 123)
    row = make("video.mp4", data)

    report = migrate_storage(to="s3")

    assert (report.copied, report.problems) == (1, [])
    head = s3_client().head_object(Bucket=s3_bucket, Key=row.file.name)
    assert head["ETag"].strip('"').endswith("-3")
    assert head["Metadata"]["md5"] == md5(data)
    assert head["Metadata"]["etag"] == head["ETag"].strip('"')  # binds the md5 to these bytes
    assert s3_bytes(s3_bucket, row.file.name) == data
    again = migrate_storage(to="s3")
    assert (again.copied, again.skipped) == (0, 1)


def test_location_prefix_on_the_destination(s3_bucket: str, settings: Any) -> None:
    row = make("prefixed.txt", b"prefixed")
    settings.AWS_LOCATION = "media/site"
    from tests.conftest import reset_storages

    reset_storages()

    report = migrate_storage(to="s3")

    assert report.problems == []
    key = f"media/site/{row.file.name}"
    assert s3_keys(s3_bucket) == [key]
    row.refresh_from_db()
    assert row.object_key == key
    assert row.file.name == FileManager.objects.get(pk=row.pk).file.name  # name never changes
    assert migrate_storage(to="s3").skipped == 1


def test_s3_to_local_round_trip(s3_bucket: str, media_root: Path) -> None:
    rows = [make(f"round {i}.txt", os.urandom(2000)) for i in range(3)] + [make("zero", b"")]
    originals = {r.pk: (media_root / r.file.name).read_bytes() for r in rows}
    migrate_storage(to="s3")
    for row in rows:
        (media_root / row.file.name).unlink()

    report = migrate_storage(to="local")

    assert (report.source, report.destination) == ("s3", "local")
    assert (report.copied, report.problems) == (4, [])
    for row in FileManager.objects.all():
        assert (media_root / row.file.name).read_bytes() == originals[row.pk]
        assert (row.bucket, row.object_key) == ("", row.file.name)
    leftovers = [p for p in media_root.rglob("*") if p.name.endswith(".partial")]
    assert leftovers == []
    assert migrate_storage(to="local").skipped == 4


def test_local_destination_conflict(s3_bucket: str, media_root: Path) -> None:
    row = make("clash.txt", b"original")
    migrate_storage(to="s3")
    (media_root / row.file.name).write_bytes(b"changed locally")

    report = migrate_storage(to="local")

    assert kinds(report) == ["conflict"]
    assert (media_root / row.file.name).read_bytes() == b"changed locally"
    forced = migrate_storage(to="local", overwrite=True)
    assert forced.problems == []
    assert (media_root / row.file.name).read_bytes() == b"original"


def test_a_copy_that_fails_verification_is_removed_and_the_row_untouched(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage_migrate.endpoints import s3write as engine

    row = make("fragile.txt", b"the real bytes")
    real_start = engine.S3Engine.start

    def corrupting_put(self: Any, key: str, source: Any, params: Any, **kwargs: Any) -> Any:
        source.data = b"corrupted in transit"  # what the server stores is not what we hashed
        return real_start(self, key, source, params, **kwargs)

    monkeypatch.setattr(engine.S3Engine, "start", corrupting_put)

    report = migrate_storage(to="s3")

    [problem] = report.problems
    assert problem.kind == "error"
    assert "MD5" in problem.detail or "bytes" in problem.detail
    assert s3_keys(s3_bucket) == []
    row.refresh_from_db()
    assert row.bucket == ""


def test_plain_filefield_without_metadata_moves_only_the_file(
    s3_bucket: str, media_root: Path
) -> None:
    item = Attachment.objects.create(upload=ContentFile(b"attached", name="a.txt"))
    Attachment.objects.create(upload="")  # an empty field is not a row to migrate

    report = migrate_storage(to="s3", models=["testapp.Attachment"])

    assert (report.rows, report.copied, report.problems) == (1, 1, [])
    assert s3_bytes(s3_bucket, item.upload.name) == b"attached"


def test_mapped_metadata_columns_and_field_selection(s3_bucket: str, settings: Any) -> None:
    settings.STORAGE_MIGRATE = {
        "METADATA_FIELDS": {"testapp.Document.scan": {"checksum": "md5_hex", "file_size": "bytes"}}
    }
    doc = Document.objects.create(
        scan=ContentFile(b"scan", name="s.pdf"), preview=ContentFile(b"pre", name="p.png")
    )

    report = migrate_storage(to="s3", models=["testapp.Document.scan"])

    assert report.copied == 1
    doc.refresh_from_db()
    assert (doc.md5_hex, doc.bytes, doc.bucket) == (md5(b"scan"), 4, s3_bucket)
    assert s3_keys(s3_bucket) == [doc.scan.name]


def test_default_targets_are_every_model_with_a_filefield(s3_bucket: str) -> None:
    make("core.txt", b"core")
    Attachment.objects.create(upload=ContentFile(b"att", name="att.txt"))
    Document.objects.create(scan=ContentFile(b"doc", name="doc.txt"))

    report = migrate_storage(to="s3")

    assert (report.rows, report.copied) == (3, 3)


def test_settings_models_are_the_default_selection(s3_bucket: str, settings: Any) -> None:
    settings.STORAGE_MIGRATE = {"MODELS": ["testapp.Attachment"]}
    make("core.txt", b"core")
    Attachment.objects.create(upload=ContentFile(b"att", name="att.txt"))
    assert migrate_storage(to="s3").rows == 1


def test_limit_and_small_batches(s3_bucket: str) -> None:
    for i in range(7):
        make(f"f{i}.txt", b"x" * i)
    report = migrate_storage(to="s3", limit=5, batch_size=2)
    assert report.rows == 5
    assert migrate_storage(to="s3", batch_size=3).totals["copied"] == 2


def test_request_checksums_setting_works_both_ways(s3_bucket: str, settings: Any) -> None:
    make("crc.txt", b"checksummed")
    settings.STORAGE_MIGRATE = {"REQUEST_CHECKSUM_CALCULATION": "when_supported"}
    assert migrate_storage(to="s3").problems == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"to": "nowhere"}, "Storage alias 'nowhere' is not in STORAGES (known: default, local"),
        ({"to": "local", "source": "local"}, "same storage"),
        ({"to": "default"}, "--from is needed"),
        ({"to": "s3", "models": ["core.Nope"]}, "Unknown model 'core.Nope'"),
        ({"to": "s3", "models": ["core.FileManager.nope"]}, "has no FileField 'nope'"),
        ({"to": "s3", "models": ["auth.User"]}, "has no FileField"),
    ],
)
def test_configuration_errors(s3_bucket: str, kwargs: dict[str, Any], message: str) -> None:
    make("x.txt", b"x")
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        migrate_storage(**kwargs)
    assert s3_keys(s3_bucket) == []


def test_unknown_setting_is_an_error(s3_bucket: str, settings: Any) -> None:
    settings.STORAGE_MIGRATE = {"WORKRES": 3}
    with pytest.raises(ConfigurationError, match="Unknown STORAGE_MIGRATE key"):
        migrate_storage(to="s3")


def test_missing_bucket_is_an_error_unless_create_bucket(s3_bucket: str, settings: Any) -> None:
    from tests.conftest import reset_storages

    make("x.txt", b"x")
    settings.AWS_STORAGE_BUCKET_NAME = "not-there-yet"
    reset_storages()
    with pytest.raises(ConfigurationError, match=r"does not exist.*--create-bucket"):
        migrate_storage(to="s3")
    dry = migrate_storage(to="s3", create_bucket=True, dry_run=True)
    assert dry.copied == 1
    names = [b["Name"] for b in s3_client().list_buckets()["Buckets"]]
    assert "not-there-yet" not in names

    report = migrate_storage(to="s3", create_bucket=True)

    assert report.copied == 1
    assert len(s3_keys("not-there-yet")) == 1


def test_delete_source_rereads_a_source_that_changed_after_it_was_copied(
    s3_bucket: str, media_root: Path
) -> None:
    row = make("stale.txt", b"version one")
    migrate_storage(to="s3")
    (media_root / row.file.name).write_bytes(b"version two, newer")

    report = migrate_storage(to="s3", delete_source=True)

    assert kinds(report) == ["conflict"]
    assert (media_root / row.file.name).read_bytes() == b"version two, newer"


def test_kms_etags_are_not_taken_as_md5s(
    s3_bucket: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage_migrate.endpoints.s3 import S3Endpoint
    from tests.conftest import reset_storages

    settings.AWS_S3_OBJECT_PARAMETERS = {"ServerSideEncryption": "aws:kms"}
    reset_storages()
    make("secret.pdf", b"encrypted at rest")
    downloads: list[str] = []
    real_hash = S3Endpoint.hash

    def counting_hash(self: S3Endpoint, name: str) -> Any:
        downloads.append(name)
        return real_hash(self, name)

    monkeypatch.setattr(S3Endpoint, "hash", counting_hash)

    report = migrate_storage(to="s3")

    assert (report.copied, report.problems) == (1, [])
    assert len(downloads) == 1  # the ETag proved nothing, so the copy was read back
    downloads.clear()
    again = migrate_storage(to="s3")
    # Under KMS nothing binds our md5 metadata to the bytes: a re-run reads them to prove them.
    assert (again.skipped, len(downloads)) == (1, 1)


def test_several_filefields_do_not_share_metadata_columns(s3_bucket: str, settings: Any) -> None:
    settings.STORAGE_MIGRATE = {
        "METADATA_FIELDS": {"testapp.Document.scan": {"checksum": "md5_hex", "file_size": "bytes"}}
    }
    doc = Document.objects.create(
        scan=ContentFile(b"the scan", name="s.pdf"), preview=ContentFile(b"pre", name="p.png")
    )

    first = migrate_storage(to="s3", models=["testapp.Document"])
    second = migrate_storage(to="s3", models=["testapp.Document"])

    assert (first.copied, first.problems) == (2, [])
    assert (second.skipped, second.problems) == (2, [])
    doc.refresh_from_db()
    assert (doc.md5_hex, doc.bytes, doc.bucket) == (md5(b"the scan"), 8, s3_bucket)


def test_a_model_wide_mapping_is_refused_for_several_filefields(settings: Any) -> None:
    settings.STORAGE_MIGRATE = {"METADATA_FIELDS": {"testapp.Document": {"checksum": "md5_hex"}}}
    with pytest.raises(ConfigurationError, match="several FileFields"):
        migrate_storage(to="s3", models=["testapp.Document"])


def test_refused_credentials_are_a_configuration_error(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    make("x.txt", b"x")
    real_call = BaseClient._make_api_call  # type: ignore[attr-defined]

    def refuse(self: Any, operation: str, params: Any) -> Any:
        if operation == "HeadBucket":
            response: Any = {
                "Error": {"Code": "InvalidAccessKeyId"},
                "ResponseMetadata": {"HTTPStatusCode": 403},
            }
            raise ClientError(response, operation)
        return real_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", refuse)

    with pytest.raises(ConfigurationError, match=r"refused the credentials.*AWS_ACCESS_KEY_ID"):
        migrate_storage(to="s3")
    monkeypatch.setattr(BaseClient, "_make_api_call", real_call)
    assert s3_keys(s3_bucket) == []


def test_location_prefix_on_the_source(s3_bucket: str, settings: Any, media_root: Path) -> None:
    from tests.conftest import reset_storages

    settings.AWS_LOCATION = "old/prefix"
    settings.STORAGES = {**settings.STORAGES, "default": settings.STORAGES["s3"]}
    reset_storages()
    row = make("from-prefixed.txt", b"prefixed source")
    assert not (media_root / row.file.name).exists()
    assert s3_keys(s3_bucket) == [f"old/prefix/{row.file.name}"]

    report = migrate_storage(to="local")

    assert (report.copied, report.problems) == (1, [])
    assert (media_root / row.file.name).read_bytes() == b"prefixed source"
    row.refresh_from_db()
    assert (row.bucket, row.object_key) == ("", row.file.name)


def test_md5_metadata_behind_a_foreign_multipart_etag_proves_nothing(
    s3_bucket: str, settings: Any
) -> None:
    from boto3.s3.transfer import TransferConfig

    settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": 5 * MiB, "MULTIPART_CHUNKSIZE": 5 * MiB}
    data = os.urandom(6 * MiB)
    row = make("clip.mp4", data)
    # Another tool wrote other bytes there in parts, claiming our checksum in its metadata.
    s3_client().upload_fileobj(
        __import__("io").BytesIO(os.urandom(6 * MiB)),
        s3_bucket,
        row.file.name,
        ExtraArgs={"Metadata": {"md5": md5(data)}},
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )

    report = migrate_storage(to="s3")

    assert kinds(report) == ["conflict"]
