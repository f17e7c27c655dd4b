"""The ways a review found to lose a file, adopt a foreign object, or trust a forgeable proof; each
test tries the attack and fails if it works (the file is lost, the object adopted, the row
committed on unproven bytes)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from django.core.management import call_command
from django.core.management.base import CommandError

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages
from tests.helpers import MiB, kinds, make, md5, s3_bytes

pytestmark = pytest.mark.django_db

LOCAL = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
S3 = {"BACKEND": "storages.backends.s3.S3Storage"}
PARTS = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


def add_storages(settings: Any, **aliases: dict[str, Any]) -> None:
    settings.STORAGES = {**settings.STORAGES, **aliases}
    reset_storages()


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- 1. Two aliases that are one place ------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        pytest.param(None, id="default-is-local"),
        pytest.param("symlink", id="symlinked-folder"),
        pytest.param("inside", id="folder-inside-the-root"),
        pytest.param("spelled", id="another-spelling"),
    ],
)
def test_two_local_aliases_that_are_one_place_are_refused(
    settings: Any, media_root: Path, tmp_path: Path, location: str | None
) -> None:
    rows = [make(f"keep {i}.txt", f"bytes {i}".encode()) for i in range(3)]
    before = files_under(media_root)
    if location is None:
        add_storages(settings, default=LOCAL)
        alias = "default"
    else:
        if location == "symlink":
            where = tmp_path / "link"
            where.symlink_to(media_root)
        elif location == "inside":
            where = media_root / "mirror"
        else:
            where = Path(f"{media_root}/./../{media_root.name}//")
        add_storages(settings, other={**LOCAL, "OPTIONS": {"location": str(where)}})
        alias = "other"

    with pytest.raises(ConfigurationError, match=r"one place|lies inside"):
        migrate_storage(to=alias, source="local", delete_source=True)
    with pytest.raises(CommandError) as raised:
        call_command("migrate_storage", "--to", alias, "--from", "local", "--delete-source")

    assert raised.value.returncode == 2
    assert files_under(media_root) == before
    assert all(FileManager.objects.get(pk=r.pk).bucket == "" for r in rows)


def test_two_s3_aliases_on_one_bucket_and_prefix_are_refused(s3_bucket: str, settings: Any) -> None:
    settings.AWS_S3_ENDPOINT_URL = None
    add_storages(
        settings,
        default=S3,
        again={
            **S3,
            "OPTIONS": {"bucket_name": s3_bucket, "endpoint_url": "https://s3.amazonaws.com:443/"},
        },
        nested={**S3, "OPTIONS": {"bucket_name": s3_bucket, "location": "media/old"}},
        outer={**S3, "OPTIONS": {"bucket_name": s3_bucket, "location": "media"}},
    )
    s3_client().put_object(Bucket=s3_bucket, Key="a.txt", Body=b"only copy")

    for to, source in [("default", "s3"), ("again", "s3"), ("nested", "outer")]:
        with pytest.raises(ConfigurationError, match=r"one place|lies inside"):
            migrate_storage(to=to, source=source, delete_source=True)

    assert s3_bytes(s3_bucket, "a.txt") == b"only copy"


def test_another_prefix_in_the_same_bucket_is_a_real_move(s3_bucket: str, settings: Any) -> None:
    add_storages(
        settings,
        old={**S3, "OPTIONS": {"bucket_name": s3_bucket, "location": "old"}},
        new={**S3, "OPTIONS": {"bucket_name": s3_bucket, "location": "new"}},
    )
    s3_client().put_object(Bucket=s3_bucket, Key="old/doc.txt", Body=b"moved")
    row = FileManager.objects.create(file="doc.txt")
    FileManager.objects.filter(pk=row.pk).update(checksum=md5(b"moved"), file_size=5)

    report = migrate_storage(to="new", source="old", delete_source=True)

    assert (report.copied, report.problems) == (1, [])
    assert s3_bytes(s3_bucket, "new/doc.txt") == b"moved"
    keys = {o["Key"] for o in s3_client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {"new/doc.txt"}
    row.refresh_from_db()
    assert row.object_key == "new/doc.txt"


def test_a_source_that_is_its_own_destination_is_never_deleted(
    settings: Any, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Independently of the preflight: the last check before each delete."""
    row = make("self.txt", b"the only copy")
    add_storages(settings, twin={**LOCAL, "OPTIONS": {"location": str(media_root)}})
    from storage_migrate.migrate import plan

    monkeypatch.setattr(plan, "overlap", lambda source, destination, **kw: None)

    report = migrate_storage(to="twin", source="local", delete_source=True)

    assert (media_root / row.file.name).read_bytes() == b"the only copy"
    assert kinds(report) == ["error"]
    assert "is the source itself" in report.problems[0].detail


# --- 2. A download nobody proved -------------------------------------------------------------


def multipart_object(endpoint: str | None, bucket: str, key: str, data: bytes) -> str:
    """Uploaded by the site in parts, without our md5 metadata; returns its ETag."""
    s3 = s3_client(endpoint)
    s3.upload_fileobj(io.BytesIO(data), bucket, key, Config=PARTS)
    return str(s3.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')


@pytest.mark.parametrize("stored_checksum", [False, True])
def test_a_corrupted_download_of_a_multipart_object_is_never_committed(
    through_proxy: Any,
    moto_endpoint: str,
    http_bucket: str,
    media_root: Path,
    settings: Any,
    stored_checksum: bool,
) -> None:
    data = os.urandom(11 * MiB)
    etag = multipart_object(moto_endpoint, http_bucket, "videos/clip.mp4", data)
    assert etag.endswith("-3")
    row = FileManager.objects.create(file="videos/clip.mp4")
    if stored_checksum:
        FileManager.objects.filter(pk=row.pk).update(checksum=md5(data))
    proxy = through_proxy(flip_gets=True)

    report = migrate_storage(to="local", delete_source=True)

    assert proxy.flipped >= 1, "no download was corrupted"
    assert kinds(report) == ["error"], report.problems
    assert not (media_root / "videos" / "clip.mp4").exists()
    assert [p.name for p in media_root.rglob("*") if p.is_file()] == []
    row.refresh_from_db()
    assert (row.file_size, row.checksum) == (None, md5(data) if stored_checksum else "")
    assert (
        s3_client(moto_endpoint)
        .get_object(Bucket=http_bucket, Key="videos/clip.mp4")["Body"]
        .read()
        == data
    )


def test_a_clean_download_of_a_multipart_object_is_proven_by_its_part_layout(
    through_proxy: Any, moto_endpoint: str, http_bucket: str, media_root: Path
) -> None:
    data = os.urandom(11 * MiB)
    multipart_object(moto_endpoint, http_bucket, "videos/ok.mp4", data)
    row = FileManager.objects.create(file="videos/ok.mp4")
    through_proxy()

    report = migrate_storage(to="local")

    assert (report.copied, report.problems) == (1, [])
    assert (media_root / "videos" / "ok.mp4").read_bytes() == data
    row.refresh_from_db()
    assert row.checksum == md5(data)


def test_without_a_part_layout_or_a_checksum_a_download_is_unverifiable(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that does not answer a HEAD of one part (and no stored checksum): nothing proves
    the download, so nothing is written and the source stays."""
    from storage_migrate.endpoints.s3 import S3Endpoint

    data = os.urandom(6 * MiB)
    multipart_object(None, s3_bucket, "big.bin", data)
    row = FileManager.objects.create(file="big.bin")
    monkeypatch.setattr(S3Endpoint, "part_size", lambda self, name, info: None)

    report = migrate_storage(to="local", delete_source=True)

    assert kinds(report) == ["unverifiable"]
    assert not (media_root / "big.bin").exists()
    assert s3_bytes(s3_bucket, "big.bin") == data
    row.refresh_from_db()
    assert row.checksum == ""


# --- 3. A proof anyone can forge ---------------------------------------------------------------


@pytest.mark.parametrize("delete_source", [True, False])
def test_forged_metadata_on_a_foreign_multipart_object_is_not_taken_as_proof(
    s3_bucket: str, media_root: Path, settings: Any, delete_source: bool
) -> None:
    settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": 5 * MiB, "MULTIPART_CHUNKSIZE": 5 * MiB}
    good = os.urandom(6 * MiB)
    row = make("contract.pdf", good)
    foreign = os.urandom(6 * MiB)
    # The forger computes the multipart ETag of their bytes before uploading them, and writes
    # it beside the md5 of the good file: the "binding" holds, and proves nothing.
    import hashlib

    parts = [
        hashlib.md5(foreign[i : i + 5 * MiB]).digest() for i in range(0, len(foreign), 5 * MiB)
    ]
    forged_etag = f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"
    s3_client().upload_fileobj(
        io.BytesIO(foreign),
        s3_bucket,
        row.file.name,
        ExtraArgs={"Metadata": {"md5": md5(good), "etag": forged_etag}},
        Config=PARTS,
    )
    assert s3_client().head_object(Bucket=s3_bucket, Key=row.file.name)["ETag"].strip('"') == (
        forged_etag
    )

    report = migrate_storage(to="s3", delete_source=delete_source)

    assert kinds(report) == ["conflict"]
    assert (media_root / row.file.name).read_bytes() == good
    row.refresh_from_db()
    assert row.bucket == ""


# --- 4 and 5. Two names for one file; a shared file's later row ------------------------------


def on_disk(media_root: Path, name: str, data: bytes, **fields: Any) -> FileManager:
    """A row whose file is already on disk under exactly this name (old sites have such)."""
    path = media_root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    row = FileManager.objects.create(file=name)
    FileManager.objects.filter(pk=row.pk).update(**fields)
    return row


def test_a_symlink_to_another_rows_file_keeps_the_file_while_a_row_has_a_problem(
    s3_bucket: str, media_root: Path
) -> None:
    data = b"one file, two rows"
    target = on_disk(media_root, "shared/real.txt", data, checksum=md5(data))
    (media_root / "shared" / "alias.txt").symlink_to(media_root / "shared" / "real.txt")
    on_disk(media_root, "shared/alias.txt", data, checksum=md5(data))
    # The alias row's destination is taken by another writer: its copy is a conflict.
    s3_client().put_object(Bucket=s3_bucket, Key="shared/alias.txt", Body=b"someone else's")

    report = migrate_storage(to="s3", delete_source=True)

    assert kinds(report) == ["conflict"]
    assert (media_root / "shared" / "real.txt").read_bytes() == data
    assert (media_root / "shared" / "alias.txt").read_bytes() == data
    target.refresh_from_db()
    assert target.bucket == s3_bucket  # the clean row is migrated, only its delete waits


@pytest.mark.parametrize("other", ["f//a.txt", "f/./a.txt"])
def test_two_spellings_of_one_file_keep_it_while_a_row_has_a_problem(
    s3_bucket: str, media_root: Path, other: str
) -> None:
    first = on_disk(media_root, "f/a.txt", b"one file", checksum=md5(b"one file"))
    on_disk(media_root, other, b"", checksum=md5(b"another file"))

    report = migrate_storage(to="s3", delete_source=True)

    assert kinds(report) == ["checksum_mismatch"]
    assert (media_root / "f" / "a.txt").read_bytes() == b"one file"
    first.refresh_from_db()
    assert first.bucket == s3_bucket


def test_two_names_of_one_object_from_s3_both_land_before_it_is_deleted(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dir\\a.txt` and `dir/a.txt` are one S3 key but two local files: the object is deleted
    only once both rows have their copy."""
    from storage_migrate.migrate import commit

    monkeypatch.setattr(commit, "COMMIT_SECONDS", 0.0)
    s3_client().put_object(Bucket=s3_bucket, Key="dir/a.txt", Body=b"one object")
    rows = [FileManager.objects.create(file=name) for name in ("dir\\a.txt", "dir/a.txt")]

    report = migrate_storage(to="local", delete_source=True, batch_size=1, workers=1)

    assert report.problems == [], report.problems
    assert (media_root / "dir\\a.txt").read_bytes() == b"one object"
    assert (media_root / "dir" / "a.txt").read_bytes() == b"one object"
    for row in rows:
        row.refresh_from_db()
        assert row.checksum == md5(b"one object")


def test_two_spellings_of_one_file_both_clean_are_deleted_once(
    s3_bucket: str, media_root: Path
) -> None:
    on_disk(media_root, "g/a.txt", b"one file", checksum=md5(b"one file"))
    on_disk(media_root, "g//a.txt", b"", checksum=md5(b"one file"))

    report = migrate_storage(to="s3", delete_source=True)

    assert report.problems == []
    assert (report.copied, report.skipped) == (1, 1)
    assert not (media_root / "g" / "a.txt").exists()
    assert s3_bytes(s3_bucket, "g/a.txt") == b"one file"


def test_a_shared_file_stays_while_a_row_in_a_later_batch_has_a_problem(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make("avatar.png", b"default avatar")
    for i in range(6):
        make(f"filler {i}.txt", f"x{i}".encode())
    later = make("later.png", b"later")
    FileManager.objects.filter(pk=later.pk).update(
        file=first.file.name, file_size=999, checksum=md5(b"default avatar")
    )

    from storage_migrate.migrate import commit

    monkeypatch.setattr(commit, "COMMIT_SECONDS", 0.0)  # each batch committed at once

    report = migrate_storage(to="s3", delete_source=True, batch_size=2, workers=1)

    assert kinds(report) == ["size_mismatch"], report.problems  # not "missing"
    assert (media_root / first.file.name).read_bytes() == b"default avatar"
    assert not (media_root / "filler 0.txt").exists()  # the others' sources are deleted


# --- 6. Replaced between commit and delete ----------------------------------------------------


def test_a_destination_replaced_between_commit_and_delete_keeps_the_source(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage_migrate.migrate import deletion as deletion_module

    row = make("photo.jpg", b"the customer's photo")
    original = deletion_module.DeletionLedger.delete_sources

    def replace_first(self: Any, *args: Any, **kwargs: Any) -> tuple[int, int]:
        s3_client().put_object(Bucket=s3_bucket, Key=row.file.name, Body=b"someone else's")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(deletion_module.DeletionLedger, "delete_sources", replace_first)

    report = migrate_storage(to="s3", delete_source=True)

    assert kinds(report) == ["error"]
    assert "no longer holds the verified copy" in report.problems[0].detail
    assert (media_root / row.file.name).read_bytes() == b"the customer's photo"


# --- 7. A store without conditional writes ----------------------------------------------------


@pytest.mark.parametrize("behaviour", ["honour", "refuse", "ignore"])
def test_a_store_without_conditional_writes_never_overwrites_another_writer(
    through_proxy: Any,
    moto_endpoint: str,
    http_bucket: str,
    media_root: Path,
    behaviour: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [make(f"up/{i}.txt", f"ours {i}".encode()) for i in range(20)]
    through_proxy(conditional=behaviour)
    theirs = rows[7].file.name
    from storage_migrate.migrate import run as migration

    def put_theirs() -> None:
        s3_client(moto_endpoint).put_object(Bucket=http_bucket, Key=theirs, Body=b"theirs")

    if behaviour == "honour":
        planned = migration.Migration._planned_rows

        def another_writer(self: Any) -> Any:
            # After the destination was found empty, or listed: only the conditional write
            # itself can refuse to replace this object.
            for item in planned(self):
                if item[0].name == theirs:
                    put_theirs()
                yield item

        monkeypatch.setattr(migration.Migration, "_planned_rows", another_writer)
    else:
        was_empty = migration.Migration._destination_was_empty

        def after_the_empty_check(self: Any) -> bool:
            # The destination was empty when the run began; the object appears before the
            # first batch is planned. Such a store is listed batch by batch (no shortcut for
            # an empty destination), which finds it. Between a batch's listing and its writes
            # (well under a second) nothing in such a store can refuse a replacement.
            empty = was_empty(self)
            put_theirs()
            return bool(empty)

        monkeypatch.setattr(migration.Migration, "_destination_was_empty", after_the_empty_check)

    report = migrate_storage(to="s3")

    assert kinds(report) == ["conflict"], report.problems
    assert report.copied == 19
    body = s3_client(moto_endpoint).get_object(Bucket=http_bucket, Key=theirs)["Body"].read()
    assert body == b"theirs"
    keys = s3_client(moto_endpoint).list_objects_v2(Bucket=http_bucket)["Contents"]
    assert not [o["Key"] for o in keys if "probe" in o["Key"]]


def test_the_preflight_finds_whether_a_store_honours_conditional_writes(
    through_proxy: Any,
) -> None:
    from django.core.files.storage import storages

    from storage_migrate.conf import get_conf
    from storage_migrate.endpoints.s3 import S3Endpoint

    found = {}
    for behaviour in ("honour", "refuse", "ignore"):
        through_proxy(conditional=behaviour)
        endpoint = S3Endpoint("s3", storages["s3"], get_conf())
        endpoint.preflight(as_source=False)
        found[behaviour] = endpoint.conditional_writes
    assert found == {"honour": True, "refuse": False, "ignore": False}


# --- 11. Secrets in the endpoint URL ---------------------------------------------------------


def test_credentials_in_the_endpoint_url_are_never_shown_nor_sent(
    moto_endpoint: str, http_bucket: str, settings: Any, capsys: Any
) -> None:
    row = make("secret.txt", b"payload")
    settings.AWS_STORAGE_BUCKET_NAME = http_bucket
    settings.AWS_S3_ENDPOINT_URL = moto_endpoint.replace("http://", "http://alice:hunter2@")
    reset_storages()

    report = migrate_storage(to="s3")

    assert (report.copied, report.problems) == (1, []), report.problems
    assert (
        s3_client(moto_endpoint).get_object(Bucket=http_bucket, Key=row.file.name)["Body"].read()
        == b"payload"
    )
    settings.AWS_STORAGE_BUCKET_NAME = "no-such-bucket-here"
    reset_storages()
    with pytest.raises(ConfigurationError) as raised:
        migrate_storage(to="s3")
    assert "hunter2" not in str(raised.value) and "alice" not in str(raised.value)
    out = capsys.readouterr()
    assert "hunter2" not in out.out + out.err


# --- 14. A value the column cannot hold ------------------------------------------------------


def test_a_content_type_too_long_for_its_column_is_not_written(
    s3_bucket: str, media_root: Path
) -> None:
    row = on_disk(media_root, "file_manager/blob", b"same bytes", content_type="")
    long_type = "x/" + "y" * 312
    s3_client().put_object(
        Bucket=s3_bucket, Key="file_manager/blob", Body=b"same bytes", ContentType=long_type
    )

    report = migrate_storage(to="s3")
    again = migrate_storage(to="s3")

    assert (report.skipped, report.problems) == (1, [])
    assert again.exit_code == 0  # converges: no re-run trips on it
    row.refresh_from_db()
    assert row.bucket == s3_bucket
    assert len(row.content_type) <= FileManager._meta.get_field("content_type").max_length


def test_a_database_error_on_one_row_stays_that_rows_problem(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import DataError

    from storage_migrate.migrate import commit
    from storage_migrate.migrate import run as migration

    rows = [on_disk(media_root, f"r{i}.txt", f"r{i}".encode()) for i in range(4)]
    bad = rows[2].pk

    def refuse(group: list[Any]) -> bool:
        raise DataError("value too long for type character varying(255)")

    monkeypatch.setattr(commit, "batch_update", refuse)
    still_there = migration.Migration._still_there

    def one_refuses(row: Any) -> Any:
        queryset = still_there(row)
        if row.pk == bad:
            monkeypatch.setattr(queryset, "update", lambda **kw: refuse([]))
        return queryset

    monkeypatch.setattr(migration.Migration, "_still_there", staticmethod(one_refuses))

    report = migrate_storage(to="s3")

    assert kinds(report) == ["error"]
    assert report.problems[0].pk == bad
    assert "database refused its row" in report.problems[0].detail
    assert (report.copied, report.failed) == (3, 1)
    for row in rows:
        row.refresh_from_db()
        assert row.bucket == ("" if row.pk == bad else s3_bucket)
