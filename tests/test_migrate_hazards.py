"""The ways a migration can go wrong on a real site, each found by review and fixed: shared
files, re-runs after --delete-source, objects appearing mid-run, sources changing, rows vanishing,
storages failing, corrupting storages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from core.models import FileManager
from storage_migrate import migrate_storage, verify_files
from storage_migrate.endpoints import s3write as engine
from storage_migrate.migrate import commit, rowcopy
from storage_migrate.migrate import run as mig
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages
from tests.helpers import kinds, make, md5, s3_bytes
from tests.testapp.models import Attachment

pytestmark = pytest.mark.django_db


def share_file(row: FileManager, other: FileManager, **fields: Any) -> None:
    """Make `other` point at the same file as `row` (sites do this: copied rows, fixtures)."""
    FileManager.objects.filter(pk=other.pk).update(file=row.file.name, **fields)


def test_rerun_after_delete_source_converges(s3_bucket: str, media_root: Path) -> None:
    rows = [make(f"d{i}.txt", f"data {i}".encode()) for i in range(3)]
    item = Attachment.objects.create(upload=ContentFile(b"bare", name="bare.txt"))
    first = migrate_storage(to="s3", delete_source=True)
    assert (first.copied, first.problems) == (4, [])
    assert not any((media_root / r.file.name).exists() for r in rows)
    assert not (media_root / item.upload.name).exists()

    again = migrate_storage(to="s3", delete_source=True)

    assert (again.skipped, again.problems) == (4, []), again.problems
    assert migrate_storage(to="s3").exit_code == 0


def test_rows_sharing_a_file_across_batches_with_delete_source(
    s3_bucket: str, media_root: Path
) -> None:
    first = make("shared.txt", b"shared bytes")
    for i in range(5):
        make(f"filler {i}.txt", b"x")
    second = make("other.txt", b"zz")
    share_file(first, second, checksum=md5(b"shared bytes"), file_size=12)

    report = migrate_storage(to="s3", delete_source=True, workers=1, batch_size=2)

    assert report.problems == []
    second.refresh_from_db()
    assert second.bucket == s3_bucket
    assert s3_bytes(s3_bucket, first.file.name) == b"shared bytes"


@pytest.mark.parametrize("dubious_first", [True, False])
def test_a_shared_source_stays_when_any_row_sharing_it_has_a_problem(
    s3_bucket: str, media_root: Path, dubious_first: bool
) -> None:
    first = make("shared.txt", b"shared bytes")
    second = make("other.txt", b"zz")
    share_file(first, second, checksum=md5(b"shared bytes"), file_size=12)
    dubious = first if dubious_first else second
    FileManager.objects.filter(pk=dubious.pk).update(checksum="f" * 32)

    report = migrate_storage(to="s3", delete_source=True, workers=2)

    assert kinds(report) == ["checksum_mismatch"]
    assert (media_root / first.file.name).read_bytes() == b"shared bytes"


def test_rows_sharing_a_file_back_to_local_are_not_conflicts(
    s3_bucket: str, media_root: Path
) -> None:
    first = make("shared.txt", b"shared bytes")
    second = make("other.txt", b"zz")
    share_file(first, second, checksum=md5(b"shared bytes"), file_size=12)
    assert migrate_storage(to="s3").problems == []
    (media_root / first.file.name).unlink()

    report = migrate_storage(to="local", workers=4)

    assert (report.copied, report.skipped, report.problems) == (1, 1, [])
    assert (media_root / first.file.name).read_bytes() == b"shared bytes"


def test_a_failed_second_write_never_removes_a_committed_object(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    first = make("shared.txt", b"the real bytes")
    second = make("other.txt", b"zz")
    share_file(first, second, checksum=md5(b"the real bytes"), file_size=14)
    real_start = engine.S3Engine.start
    calls: list[str] = []

    def put(self: Any, key: str, source: Any, params: Any, **kwargs: Any) -> Any:
        calls.append(key)
        if len(calls) > 1:
            source.data = b"corrupted in transit"
        return real_start(self, key, source, params, **kwargs)

    monkeypatch.setattr(engine.S3Engine, "start", put)

    report = migrate_storage(to="s3", workers=2)

    assert len(calls) == 1  # the second row found the first one's verified copy
    assert (report.copied, report.skipped, report.problems) == (1, 1, [])
    assert s3_bytes(s3_bucket, first.file.name) == b"the real bytes"


def test_two_names_that_make_one_key(s3_bucket: str) -> None:
    first = make("x.txt", b"x")
    second = make("y.txt", b"y")
    FileManager.objects.filter(pk=second.pk).update(file=first.file.name.replace("/x", "//x"))

    report = migrate_storage(to="s3")

    assert report.rows == 2
    assert s3_bytes(s3_bucket, first.file.name) == b"x"


def test_a_failing_destination_fails_its_rows_not_the_run(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    from storage_migrate.endpoints.s3 import S3Endpoint

    make("a.txt", b"a")
    make("b.txt", b"b")

    def refused(self: Any, name: str) -> Any:
        response: Any = {"Error": {"Code": "403"}, "ResponseMetadata": {"HTTPStatusCode": 403}}
        raise ClientError(response, "HeadObject")

    monkeypatch.setattr(S3Endpoint, "stat", refused)
    monkeypatch.setattr(S3Endpoint, "stat_many", lambda self, names: refused(self, ""))
    monkeypatch.setattr(S3Endpoint, "is_empty", lambda self, prefix: refused(self, ""))

    report = migrate_storage(to="s3")

    assert (report.rows, kinds(report)) == (2, ["error", "error"])
    assert all("403" in p.detail for p in report.problems)


def test_a_row_that_vanishes_mid_run_is_an_error_not_a_copy(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = make("v.txt", b"v")
    real_finish = mig.Migration._finish

    def finish(self: Any, result: Any) -> None:
        FileManager.objects.filter(pk=result.row.pk).update(file="file_manager/elsewhere.txt")
        real_finish(self, result)

    monkeypatch.setattr(mig.Migration, "_finish", finish)

    report = migrate_storage(to="s3")

    assert (report.copied, report.failed, kinds(report)) == (0, 1, ["error"])
    row.refresh_from_db()
    assert row.bucket == ""


def test_a_deleted_row_keeps_its_source(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = make("v.txt", b"v")
    migrate_storage(to="s3")
    real_finish = mig.Migration._finish

    def finish(self: Any, result: Any) -> None:
        FileManager.objects.filter(pk=result.row.pk).delete()
        real_finish(self, result)

    monkeypatch.setattr(mig.Migration, "_finish", finish)

    report = migrate_storage(to="s3", delete_source=True)

    assert kinds(report) == ["error"]
    assert (media_root / row.file.name).exists()


def test_a_source_rewritten_right_after_its_copy_is_not_deleted(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = make("j.txt", b"version one")
    path = media_root / row.file.name
    real_copy = rowcopy.start_copy_file  # type: ignore[attr-defined]

    def copy_then_site_writes(*args: Any, **kwargs: Any) -> Any:
        waiting = real_copy(*args, **kwargs)

        def finish() -> Any:
            copied = waiting()
            path.write_bytes(b"version two, written by the site just after our read")
            return copied

        return finish

    monkeypatch.setattr(rowcopy, "start_copy_file", copy_then_site_writes)

    report = migrate_storage(to="s3", delete_source=True)

    assert kinds(report) == ["error"]
    assert path.read_bytes() == b"version two, written by the site just after our read"
    row.refresh_from_db()
    assert row.bucket == ""  # the row does not point at the stale copy
    # The copy of the earlier bytes is left (another run may point at it): never deleted.
    assert s3_bytes(s3_bucket, row.file.name) == b"version one"
    monkeypatch.setattr(rowcopy, "start_copy_file", real_copy)
    # The row's stored checksum describes the earlier bytes, which the destination holds: a
    # plain re-run skips it as the spec says; --delete-source reads the source, sees the
    # difference, and keeps it.
    assert migrate_storage(to="s3").problems == []
    assert kinds(migrate_storage(to="s3", delete_source=True)) == ["conflict"]
    assert path.exists()
    # Replacing it is a person's decision; the row's checksum is then reported as stale.
    replaced = migrate_storage(to="s3", overwrite=True, delete_source=True)
    assert kinds(replaced) == ["checksum_mismatch", "size_mismatch"]
    assert s3_bytes(s3_bucket, row.file.name) == path.read_bytes()


@pytest.mark.parametrize("destination", ["empty", "listed"])
def test_an_object_that_appears_before_our_write_is_not_overwritten(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, destination: str
) -> None:
    """Empty at the start (no listing: conditional writes protect) or not (listed per batch):
    a site upload landing just before our write is never replaced."""
    row = make("k.txt", b"ours")
    if destination == "listed":
        s3_client().put_object(Bucket=s3_bucket, Key="file_manager/other.txt", Body=b"other")
    real_start = engine.S3Engine.start

    def site_uploads_first(self: Any, key: str, source: Any, params: Any, **kw: Any) -> Any:
        s3_client().put_object(Bucket=self.endpoint.bucket, Key=key, Body=b"a site upload")
        return real_start(self, key, source, params, **kw)

    monkeypatch.setattr(engine.S3Engine, "start", site_uploads_first)

    report = migrate_storage(to="s3")

    assert kinds(report) == ["conflict"]
    assert s3_bytes(s3_bucket, row.file.name) == b"a site upload"


def test_an_empty_destination_is_not_listed_batch_by_batch(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage_migrate.endpoints.s3 import S3Endpoint

    for i in range(6):
        make(f"fresh {i}.txt", b"fresh")
    listings: list[int] = []
    real_stat_many = S3Endpoint.stat_many

    def counting(self: Any, names: Any) -> Any:
        listings.append(1)
        return real_stat_many(self, names)

    monkeypatch.setattr(S3Endpoint, "stat_many", counting)

    first = migrate_storage(to="s3", batch_size=2)
    assert (first.copied, first.problems, listings) == (6, [], [])
    again = migrate_storage(to="s3", batch_size=2)
    assert (again.skipped, len(listings)) == (6, 3)  # not empty any more: listed per batch


def test_a_corrupting_generic_storage_is_caught(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.files.storage import InMemoryStorage

    row = make("h.txt", b"the real bytes")
    FileManager.objects.filter(pk=row.pk).update(checksum="", file_size=None)
    memory = {"BACKEND": "django.core.files.storage.InMemoryStorage"}
    settings.STORAGES = {**settings.STORAGES, "memory": memory}
    reset_storages()
    real_save = InMemoryStorage._save  # type: ignore[attr-defined]

    def corrupting_save(self: Any, name: str, content: Any) -> Any:
        return real_save(self, name, ContentFile(b"CORRUPTED"))

    monkeypatch.setattr(InMemoryStorage, "_save", corrupting_save)

    report = migrate_storage(to="memory", source="local")

    assert kinds(report) == ["error"]
    row.refresh_from_db()
    assert (row.checksum, row.file_size) == ("", None)


def test_a_generic_storage_round_trip(settings: Any) -> None:
    memory = {"BACKEND": "django.core.files.storage.InMemoryStorage"}
    settings.STORAGES = {**settings.STORAGES, "memory": memory}
    reset_storages()
    make("g.txt", b"generic")

    report = migrate_storage(to="memory", source="local")

    assert (report.copied, report.problems) == (1, [])
    assert migrate_storage(to="memory", source="local").skipped == 1


def test_many_rows_sharing_one_file(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A default avatar: hundreds of rows, one file. Copied once; memory bounded by the window."""
    waiting: list[int] = []
    real_submit = mig.Migration._submit

    def submit(self: Any, row: Any, planned: Any) -> None:
        real_submit(self, row, planned)
        waiting.append(self._waiting_count)

    monkeypatch.setattr(mig.Migration, "_submit", submit)
    avatar = make("avatar.png", b"default avatar")
    FileManager.objects.bulk_create(
        FileManager(
            file=avatar.file.name,
            object_key=str(avatar.file.name),
            checksum=avatar.checksum,
            file_size=avatar.file_size,
        )
        for _ in range(300)
    )

    report = migrate_storage(to="s3", workers=2, batch_size=50)

    assert (report.rows, report.copied, report.skipped, report.problems) == (301, 1, 300, [])
    assert max(waiting) <= 2 * 4  # workers * 4: the window, not the 300 rows
    assert set(FileManager.objects.values_list("bucket", flat=True)) == {s3_bucket}


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_symlink_out_of_media_root_is_never_followed(
    s3_bucket: str, media_root: Path, link: str
) -> None:
    outside = media_root.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not for the bucket")
    row = make("innocent.txt", b"x")
    if link == "file":
        (media_root / "file_manager" / "leak.txt").symlink_to(outside / "secret.txt")
        name = "file_manager/leak.txt"
    else:
        (media_root / "file_manager" / "leaky").symlink_to(outside)
        name = "file_manager/leaky/secret.txt"
    FileManager.objects.filter(pk=row.pk).update(file=name)

    report = migrate_storage(to="s3")

    assert [(p.kind, p.pk) for p in report.problems] == [("unsafe_name", row.pk)]
    assert s3_client().list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0
    verified = verify_files()
    assert [(p.kind, p.pk) for p in verified.problems] == [("unsafe_name", row.pk)]


def test_a_retried_write_that_finds_its_own_object_is_a_success(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write landed, its answer was lost, the retry got 412 Precondition Failed."""
    from storage_migrate.errors import Conflict

    row = make("lost-answer.txt", b"written once")
    real_start = engine.S3Engine.start

    def put_then_lose_the_answer(self: Any, key: str, source: Any, params: Any, **kw: Any) -> Any:
        waiting = real_start(self, key, source, params, **kw)

        def finish() -> Any:
            waiting()
            raise Conflict("an object appeared under this name during the copy")

        return finish

    monkeypatch.setattr(engine.S3Engine, "start", put_then_lose_the_answer)

    report = migrate_storage(to="s3")

    assert (report.copied, report.problems) == (1, [])
    row.refresh_from_db()
    assert row.bucket == s3_bucket


def test_an_unreadable_source_is_an_error_not_missing(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = make("locked.txt", b"no read permission")
    fine = make("fine.txt", b"readable")
    real_open = os.open

    def guarded_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith(locked.file.name):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)  # sources are opened with os.open

    report = migrate_storage(to="s3")

    assert [(p.kind, p.pk) for p in report.problems] == [("error", locked.pk)]
    assert "Permission denied" in report.problems[0].detail
    assert s3_bytes(s3_bucket, fine.file.name) == b"readable"


def test_a_full_disk_leaves_no_partial_file(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    big = make("big.bin", b"B" * 300_000)
    small = make("small.txt", b"fits")
    assert migrate_storage(to="s3").problems == []
    for row in (big, small):
        (media_root / row.file.name).unlink()
    real_fdopen = os.fdopen

    class FillsUp:
        """A file on a disk with 100 kB left."""

        def __init__(self, raw: Any) -> None:
            self.raw, self.written = raw, 0

        def write(self, data: bytes) -> int:
            if self.written + len(data) > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return int(self.raw.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.raw, name)

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.raw.close()

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: FillsUp(real_fdopen(*a, **k)))

    report = migrate_storage(to="local", workers=1)

    assert [(p.kind, p.pk) for p in report.problems] == [("error", big.pk)]
    assert "No space left" in report.problems[0].detail
    assert not (media_root / big.file.name).exists()
    assert (media_root / small.file.name).read_bytes() == b"fits"
    leftovers = [p.name for p in media_root.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []
    big.refresh_from_db()
    assert big.bucket == s3_bucket  # the row still points where its file is

    monkeypatch.setattr(os, "fdopen", real_fdopen)  # space freed
    assert migrate_storage(to="local").problems == []
    assert (media_root / big.file.name).read_bytes() == b"B" * 300_000


def test_a_row_created_mid_run_is_migrated_or_left_whole(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(6):
        make(f"early {i}.txt", b"early")
    created: list[FileManager] = []
    real_finish = mig.Migration._finish

    def finish(self: Any, result: Any) -> None:
        if not created:  # an upload lands while the migration runs
            created.append(make("uploaded mid-run.txt", b"new upload"))
        real_finish(self, result)

    monkeypatch.setattr(mig.Migration, "_finish", finish)

    report = migrate_storage(to="s3", batch_size=2, workers=1)

    assert report.problems == []
    late = created[0]
    late.refresh_from_db()
    keys = {o["Key"] for o in s3_client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    if late.bucket:  # migrated in this run: whole
        assert s3_bytes(s3_bucket, late.object_key) == b"new upload"
    else:  # or left untouched for the next run
        assert late.file.name not in keys
    assert migrate_storage(to="s3").problems == []
    late.refresh_from_db()
    assert late.bucket == s3_bucket


def test_kms_metadata_proves_nothing_so_a_replaced_object_is_caught(
    s3_bucket: str, settings: Any, media_root: Path
) -> None:
    settings.AWS_S3_OBJECT_PARAMETERS = {"ServerSideEncryption": "aws:kms"}
    reset_storages()
    row = make("contract.pdf", b"A" * 500)
    assert migrate_storage(to="s3").problems == []
    # Someone replaces the bytes, keeping our md5 metadata; under KMS no ETag tells.
    s3_client().put_object(
        Bucket=s3_bucket,
        Key=row.file.name,
        Body=b"B" * 500,
        ServerSideEncryption="aws:kms",
        Metadata={"md5": md5(b"A" * 500)},
    )

    verified = verify_files(storage="s3")
    migrated = migrate_storage(to="s3", delete_source=True)

    assert kinds(verified) == ["checksum_mismatch"]
    assert verified.downloaded == 1
    assert kinds(migrated) == ["conflict"]
    assert (media_root / row.file.name).read_bytes() == b"A" * 500  # never deleted


def test_an_object_replaced_before_verification_is_not_deleted(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = make("raced.txt", b"our bytes")
    from storage_migrate.endpoints.proof import verify_s3 as real_verify

    def site_writes_first(endpoint: Any, name: str, digest: Any, etag: Any) -> Any:
        # Between our write and its verification, the site saves over it (overwrite on).
        s3_client().put_object(Bucket=endpoint.bucket, Key=name, Body=b"the site's newer bytes")
        return real_verify(endpoint, name, digest, None)

    monkeypatch.setattr(engine, "verify_s3", site_writes_first)

    report = migrate_storage(to="s3")

    assert kinds(report) == ["error"]
    assert s3_bytes(s3_bucket, row.file.name) == b"the site's newer bytes"
    row.refresh_from_db()
    assert row.bucket == ""


def test_a_commit_the_database_keeps_refusing_is_an_error_not_a_crash(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    rows = [make(f"c{i}.txt", b"commit me") for i in range(3)]
    monkeypatch.setattr(commit, "COMMIT_ATTEMPTS", 2)

    def refuse(self: Any, pending: Any) -> Any:
        raise OperationalError("deadlock detected")

    monkeypatch.setattr(mig.Migration, "_write_rows", refuse)

    report = migrate_storage(to="s3", delete_source=True)

    assert (report.copied, kinds(report)) == (0, ["error", "error", "error"])
    assert all("could not be committed" in p.detail for p in report.problems)
    for row in rows:
        row.refresh_from_db()
        assert row.bucket == ""
        assert (media_root / row.file.name).exists()  # nothing deleted


def test_a_storage_whose_files_live_in_its_instance_is_shared_by_the_threads(
    settings: Any,
) -> None:
    """Rebuilt per thread, an InMemoryStorage would take the copies into throwaway instances:
    rows would point at files that are nowhere. Every copy must be in the alias's instance."""
    settings.STORAGES = {
        **settings.STORAGES,
        "memory": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    reset_storages()
    rows = [make(f"m/{n}.txt", f"file {n}".encode()) for n in range(20)]
    report = migrate_storage(to="memory", source="local", workers=8)
    assert (report.copied, report.problems) == (20, [])
    memory = storages["memory"]
    for row in rows:
        with memory.open(str(row.file.name)) as f:
            assert f.read() == f"file {row.file.name.split('/')[-1][:-4]}".encode()
