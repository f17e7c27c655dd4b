"""A second round of attacks on the trust fixes (an attacker's review): each test tries to lose a
file, adopt a foreign object or overwrite another writer's, and fails if that works."""

from __future__ import annotations

import io
import json
import os
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from django.core.files.storage import FileSystemStorage, Storage

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages
from tests.faults import FaultyProxy, _Handler
from tests.helpers import MiB, kinds, md5, s3_keys

pytestmark = pytest.mark.django_db

PARTS = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
S3 = {"BACKEND": "storages.backends.s3.S3Storage"}


def on_disk(media_root: Path, name: str, data: bytes) -> None:
    path = media_root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class Wrapped(Storage):
    """A storage that keeps files in a folder without being a FileSystemStorage."""

    def __init__(self, location: str) -> None:
        self.inner = FileSystemStorage(location=location)
        self.location = location

    def _open(self, name: str, mode: str = "rb") -> Any:
        return self.inner.open(name, mode)

    def _save(self, name: str, content: Any) -> str:
        return str(self.inner.save(name, content))

    def exists(self, name: str) -> bool:
        return bool(self.inner.exists(name))

    def size(self, name: str) -> int:
        return int(self.inner.size(name))

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def listdir(self, path: str) -> Any:
        return self.inner.listdir(path)

    def url(self, name: str | None) -> str:
        return str(self.inner.url(name))


WRAPPED = f"{__name__}.Wrapped"


# --- deletes that could not be proven safe are refused before anything is read ---------------


def test_delete_source_with_limit_is_refused(s3_bucket: str, media_root: Path) -> None:
    """A row beyond --limit may share the file (a symlinked folder, the same name in another
    field): it would lose it."""
    on_disk(media_root, "real/a.txt", b"the only copy")
    (media_root / "link").symlink_to(media_root / "real")
    FileManager.objects.create(file="real/a.txt")
    FileManager.objects.create(file="link/a.txt")

    with pytest.raises(ConfigurationError, match="--limit"):
        migrate_storage(to="s3", delete_source=True, limit=1)

    assert (media_root / "real" / "a.txt").read_bytes() == b"the only copy"
    assert s3_keys(s3_bucket) == []


def test_a_row_of_another_walked_field_not_yet_clean_keeps_the_file(
    s3_bucket: str, media_root: Path, request: pytest.FixtureRequest
) -> None:
    """The ledger counts the rows that refer to a name in every walked table and field."""
    from django.core.files.storage import storages

    from storage_migrate.conf import get_conf
    from storage_migrate.endpoints.factory import endpoint_for
    from storage_migrate.migrate.deletion import DeletionLedger
    from storage_migrate.report import COPIED
    from storage_migrate.rows import Row, RowResult
    from storage_migrate.targets import resolve_targets
    from tests.testapp.models import Document

    on_disk(media_root, "docs/y.pdf", b"scan and preview")
    document = Document.objects.create(scan="docs/y.pdf", preview="docs/y.pdf")
    scan, preview = resolve_targets(
        ["testapp.Document.scan", "testapp.Document.preview"], get_conf()
    )
    src = endpoint_for("local", get_conf())
    ledger = DeletionLedger()
    request.addfinalizer(ledger.close)
    result = RowResult(Row(scan, document.pk, "docs/y.pdf", {}), COPIED)
    result.fingerprint = src.fingerprint("docs/y.pdf")
    ledger.add(result, ("inode", 1, 2), [1, 2])  # only the scan row is clean

    problems: list[Any] = []
    deleted, _ = ledger.delete_sources(
        src, endpoint_for("s3", get_conf()), [scan, preview], problems.append
    )

    assert deleted == 0
    assert (media_root / "docs" / "y.pdf").exists()
    assert storages["local"].exists("docs/y.pdf")


@pytest.mark.parametrize("trailing", ["", "/"])
def test_a_generic_storage_never_gets_a_source_deleted(
    settings: Any, media_root: Path, trailing: str
) -> None:
    on_disk(media_root, "g/only.txt", b"the only copy")
    FileManager.objects.create(file="g/only.txt")
    settings.STORAGES = {
        **settings.STORAGES,
        "w1": {"BACKEND": WRAPPED, "OPTIONS": {"location": str(media_root)}},
        "w2": {"BACKEND": WRAPPED, "OPTIONS": {"location": str(media_root) + trailing}},
    }
    reset_storages()

    with pytest.raises(ConfigurationError, match="--delete-source works between"):
        migrate_storage(to="w2", source="local", delete_source=True)
    with pytest.raises(ConfigurationError, match=r"--delete-source works between|one place"):
        migrate_storage(to="w2", source="w1", delete_source=True)

    assert (media_root / "g" / "only.txt").read_bytes() == b"the only copy"


def test_one_bucket_through_two_endpoint_spellings_is_one_place(
    moto_endpoint: str, http_bucket: str, settings: Any
) -> None:
    other = moto_endpoint.replace("127.0.0.1", "localhost")
    assert other != moto_endpoint
    settings.STORAGES = {
        **settings.STORAGES,
        "old": {**S3, "OPTIONS": {"bucket_name": http_bucket, "endpoint_url": moto_endpoint}},
        "new": {**S3, "OPTIONS": {"bucket_name": http_bucket, "endpoint_url": other}},
    }
    reset_storages()
    s3_client(moto_endpoint).put_object(Bucket=http_bucket, Key="v/only.txt", Body=b"only copy")
    FileManager.objects.create(file="v/only.txt")

    with pytest.raises(ConfigurationError, match="one place"):
        migrate_storage(to="new", source="old", delete_source=True)

    keys = s3_client(moto_endpoint).list_objects_v2(Bucket=http_bucket).get("Contents", [])
    assert [k["Key"] for k in keys] == ["v/only.txt"]


def test_two_local_aliases_of_one_folder_found_by_a_marker(
    settings: Any, media_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where no comparison of settings can tell (a bind mount), the marker does."""
    from storage_migrate.endpoints import places

    on_disk(media_root, "m/only.txt", b"the only copy")
    FileManager.objects.create(file="m/only.txt")
    elsewhere = tmp_path / "looks-elsewhere"
    elsewhere.symlink_to(media_root)
    settings.STORAGES = {
        **settings.STORAGES,
        "mount": {**settings.STORAGES["local"], "OPTIONS": {"location": str(elsewhere)}},
    }
    reset_storages()
    # As a bind mount would look: another real path.
    real = places.place_of
    monkeypatch.setattr(
        places,
        "place_of",
        lambda endpoint: (
            places.Place("local", (), f"/mnt/{endpoint.alias}")
            if endpoint.kind == "local"
            else real(endpoint)
        ),
    )

    with pytest.raises(ConfigurationError, match="one place"):
        migrate_storage(to="mount", source="local", delete_source=True)

    assert (media_root / "m" / "only.txt").read_bytes() == b"the only copy"
    assert not [p for p in media_root.iterdir() if "probe" in p.name]


# --- proofs --------------------------------------------------------------------------------


def test_a_foreign_object_is_not_adopted_on_its_own_metadata(
    s3_bucket: str, media_root: Path
) -> None:
    """A row without checksum whose source is missing; a stranger's object at its key carries
    md5 metadata that matches its own bytes: nothing proves it is the row's file, so it is
    counted as found only at the destination (as an upload made after the switch would be) and
    nothing of it is written to the row."""
    row = FileManager.objects.create(file="file_manager/2024/01/01/contract.pdf")
    foreign = b"not the contract"
    s3_client().put_object(
        Bucket=s3_bucket,
        Key="file_manager/2024/01/01/contract.pdf",
        Body=foreign,
        Metadata={"md5": md5(foreign)},
    )

    report = migrate_storage(to="s3")

    assert (report.skipped, report.at_destination, kinds(report)) == (0, 1, [])
    row.refresh_from_db()
    assert (row.bucket, row.object_key, row.file_size) == ("", "", None)


def test_an_unproven_download_is_not_left_at_a_generic_destination(
    through_proxy: Any,
    moto_endpoint: str,
    http_bucket: str,
    tmp_path: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from storage_migrate.endpoints.s3 import S3Endpoint

    data = os.urandom(6 * MiB)
    s3_client(moto_endpoint).upload_fileobj(
        io.BytesIO(data), http_bucket, "v/clip.mp4", Config=PARTS
    )
    FileManager.objects.create(file="v/clip.mp4")  # no stored checksum
    monkeypatch.setattr(S3Endpoint, "part_size", lambda self, name, info: None)
    other = tmp_path / "other"
    other.mkdir()
    proxy = through_proxy(flip_gets=True)
    settings.STORAGES = {
        **settings.STORAGES,
        "wrapped": {"BACKEND": WRAPPED, "OPTIONS": {"location": str(other)}},
    }
    reset_storages()

    report = migrate_storage(to="wrapped", source="s3")

    assert proxy.flipped >= 1
    assert kinds(report) == ["unverifiable"]
    assert not (other / "v" / "clip.mp4").exists()


def test_a_rerun_of_an_s3_to_s3_move_reads_no_multipart_object_again(
    s3_bucket: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": 5 * MiB, "MULTIPART_CHUNKSIZE": 5 * MiB}
    settings.STORAGES = {
        **settings.STORAGES,
        "old": {**S3, "OPTIONS": {"bucket_name": s3_bucket, "location": "old"}},
        "new": {**S3, "OPTIONS": {"bucket_name": s3_bucket, "location": "new"}},
    }
    reset_storages()
    data = os.urandom(11 * MiB)
    s3_client().upload_fileobj(
        io.BytesIO(data), s3_bucket, "old/file_manager/big.bin", Config=PARTS
    )
    row = FileManager.objects.create(file="file_manager/big.bin")
    FileManager.objects.filter(pk=row.pk).update(checksum=md5(data), file_size=len(data))
    first = migrate_storage(to="new", source="old")
    assert first.copied == 1, list(first.problems)
    from storage_migrate.endpoints.s3 import S3Endpoint

    reads: list[str] = []
    real = S3Endpoint.open_info

    def counting(self: Any, name: str) -> Any:
        reads.append(f"{self.alias}:{name}")
        return real(self, name)

    monkeypatch.setattr(S3Endpoint, "open_info", counting)

    again = migrate_storage(to="new", source="old")

    assert again.skipped == 1
    assert reads == []


def test_a_local_destination_replaced_before_the_commit_keeps_the_source(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage_migrate.migrate import run as migration

    name = "file_manager/2024/01/01/photo.jpg"
    s3_client().put_object(Bucket=s3_bucket, Key=name, Body=b"the real photo")
    FileManager.objects.create(file=name)
    real = migration.Migration._commit

    def swapped(self: Any, **kw: Any) -> None:
        path = media_root / name
        if path.exists() and path.read_bytes() == b"the real photo":
            path.write_bytes(b"someone else's bytes")  # after our verify, before our commit
        real(self, **kw)

    monkeypatch.setattr(migration.Migration, "_commit", swapped)

    report = migrate_storage(to="local", delete_source=True)

    assert s3_keys(s3_bucket) == [name]
    assert "no longer holds the verified copy" in report.problems[0].detail


# --- conditional writes ----------------------------------------------------------------------


class _Refusing(_Handler):
    def _relay(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "deny-probe" and self.command == "PUT" and "storage-migrate-probe" in self.path:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self._error(403, "AccessDenied", "Access Denied")
            return
        completing = self.command == "POST" and "uploadId" in self.path
        if mode == "ignore-on-complete" and completing and "If-None-Match" in self.headers:
            del self.headers["If-None-Match"]
        super()._relay()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay


def _race(
    media_root: Path,
    moto_endpoint: str,
    http_bucket: str,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    *,
    conditional: str,
    mode: str,
    size: int,
    hook: str,
) -> tuple[Any, bytes]:
    from storage_migrate.endpoints import s3write as engine
    from storage_migrate.migrate import run as migration

    proxy = FaultyProxy(moto_endpoint, 0.0, 7, False, conditional, False)
    proxy.RequestHandlerClass = _Refusing
    proxy.mode = mode  # type: ignore[attr-defined]
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        settings.AWS_STORAGE_BUCKET_NAME = http_bucket
        settings.AWS_S3_ENDPOINT_URL = proxy.url
        settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": 5 * MiB, "MULTIPART_CHUNKSIZE": 5 * MiB}
        reset_storages()
        name = "file_manager/2024/01/01/report.bin"
        on_disk(media_root, name, os.urandom(size))
        FileManager.objects.create(file=name)
        theirs = b"another writer's object, written after the listing"
        direct = s3_client(moto_endpoint)
        if hook == "planning":
            # Another writer, after the preflight found the destination empty, before the
            # batch is planned: a store without conditional writes is listed batch by batch,
            # so the listing finds it. (Between a batch's listing and its writes, well under a
            # second, nothing in such a store can refuse a replacement.)
            real_plan = migration.Migration._destination_was_empty

            def plan_racing(self: Any) -> bool:
                empty = real_plan(self)
                direct.put_object(Bucket=http_bucket, Key=name, Body=theirs)
                return bool(empty)

            monkeypatch.setattr(migration.Migration, "_destination_was_empty", plan_racing)
        else:
            real = getattr(engine.S3Engine, hook)

            def racing(self: Any, key: str, *args: Any, **kw: Any) -> Any:
                if key == name:  # another writer, between the run's look and its write
                    direct.put_object(Bucket=http_bucket, Key=key, Body=theirs)
                return real(self, key, *args, **kw)

            monkeypatch.setattr(engine.S3Engine, hook, racing)
        report = migrate_storage(to="s3")
        return report, bytes(direct.get_object(Bucket=http_bucket, Key=name)["Body"].read())
    finally:
        proxy.shutdown()
        proxy.server_close()
        reset_storages()


@pytest.mark.parametrize(
    ("conditional", "mode", "size", "hook"),
    [
        pytest.param("ignore", "deny-probe", 1000, "planning", id="probe-unanswered"),
        pytest.param("ignore", "none", 1000, "planning", id="probe-answered"),
        pytest.param("refuse", "none", 1000, "planning", id="refusing-store"),
        pytest.param("honour", "none", 1000, "_start", id="conditional-store"),
        pytest.param("honour", "ignore-on-complete", 11 * MiB, "abort_leftovers", id="multipart"),
    ],
)
def test_another_writers_object_is_never_overwritten(
    media_root: Path,
    moto_endpoint: str,
    http_bucket: str,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    conditional: str,
    mode: str,
    size: int,
    hook: str,
) -> None:
    report, now = _race(
        media_root,
        moto_endpoint,
        http_bucket,
        settings,
        monkeypatch,
        conditional=conditional,
        mode=mode,
        size=size,
        hook=hook,
    )

    assert now.startswith(b"another writer"), kinds(report)
    assert kinds(report) == ["conflict"]


# --- memory ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_deletion_pass_holds_no_row_in_memory() -> None:
    from storage_migrate.conf import get_conf
    from storage_migrate.endpoints.base import Endpoint
    from storage_migrate.migrate.deletion import DeletionLedger
    from storage_migrate.targets import resolve_targets

    class Gone(Endpoint):
        kind = "local"

        def __init__(self) -> None:
            from django.core.files.storage import storages

            super().__init__("local", storages["local"], get_conf())

        def fingerprint(self, name: str) -> Any:
            return None  # "already gone": only the pass itself is measured

    def peak(n: int) -> int:
        target = resolve_targets(["core.FileManager"], get_conf())[0]
        ledger = DeletionLedger()
        ledger.db.executemany(
            "INSERT INTO cand VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    json.dumps(["inode", 1, i]),
                    target.label,
                    target.field_name,
                    str(i),
                    f"file_manager/2024/01/01/some-upload-name-{i:08d}.jpg",
                    "[1, 2, 3, 4]",
                    "[1, 2]",
                )
                for i in range(n)
            ),
        )
        tracemalloc.start()
        ledger.delete_sources(Gone(), Gone(), [target], lambda p: None)
        _, top = tracemalloc.get_traced_memory()
        ledger.close()
        tracemalloc.stop()
        ledger.close()
        return top

    small, large = peak(20_000), peak(200_000)
    assert large < 3 * small, (small, large)


# --- a third round ---------------------------------------------------------------------------


class _EncryptionRequired(_Handler):
    """A bucket policy that refuses unencrypted PUTs (DenyUnEncryptedObjectUploads)."""

    def _relay(self) -> None:
        headers = {k.lower() for k in self.headers}
        if (
            self.command == "PUT"
            and "x-amz-server-side-encryption" not in headers
            and "uploadId" not in self.path
        ):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self._error(403, "AccessDenied", "Access Denied (encryption required)")
            return
        super()._relay()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay


def test_the_marker_is_written_as_the_storage_writes_and_never_fails_open(
    moto_endpoint: str, http_bucket: str, settings: Any
) -> None:
    proxy = FaultyProxy(moto_endpoint, 0.0, 1)
    proxy.RequestHandlerClass = _EncryptionRequired
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        port = proxy.server_address[1]
        params = {"ServerSideEncryption": "AES256"}

        def alias(host: str, **extra: Any) -> dict[str, Any]:
            options = {"bucket_name": http_bucket, "endpoint_url": f"http://{host}:{port}"}
            return {**S3, "OPTIONS": {**options, **extra}}

        settings.STORAGES = {
            **settings.STORAGES,
            "old": alias("127.0.0.1", object_parameters=params),
            "new": alias("localhost", object_parameters=params),
            "bare": alias("localhost"),  # its marker is refused: it cannot be told apart
        }
        reset_storages()
        s3_client(moto_endpoint).put_object(
            Bucket=http_bucket, Key="v/only.txt", Body=b"only copy", ServerSideEncryption="AES256"
        )
        FileManager.objects.create(file="v/only.txt")

        with pytest.raises(ConfigurationError, match="one place"):
            migrate_storage(to="new", source="old", delete_source=True)
        with pytest.raises(ConfigurationError, match="Cannot tell"):
            migrate_storage(to="bare", source="old", delete_source=True)
    finally:
        proxy.shutdown()
        proxy.server_close()
        reset_storages()
    keys = s3_client(moto_endpoint).list_objects_v2(Bucket=http_bucket).get("Contents", [])
    assert [k["Key"] for k in keys] == ["v/only.txt"]


def test_a_row_swapped_for_another_during_the_run_keeps_the_file(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app deletes the walked row and makes a new one for the same file before the
    deletion pass: the counts balance, the rows do not."""
    from storage_migrate.migrate import deletion

    on_disk(media_root, "file_manager/logo.png", b"the logo")
    walked = FileManager.objects.create(file="file_manager/logo.png")
    real = deletion.DeletionLedger.delete_sources

    def app_meanwhile(self: Any, *args: Any, **kwargs: Any) -> tuple[int, int]:
        FileManager.objects.filter(pk=walked.pk).delete()
        FileManager.objects.create(file="file_manager/logo.png")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(deletion.DeletionLedger, "delete_sources", app_meanwhile)

    migrate_storage(to="s3", delete_source=True)

    assert (media_root / "file_manager" / "logo.png").read_bytes() == b"the logo"


def test_a_model_not_walked_that_shares_the_file_keeps_it(s3_bucket: str, media_root: Path) -> None:
    from tests.testapp.models import Attachment

    on_disk(media_root, "shared/logo.png", b"the logo")
    FileManager.objects.create(file="shared/logo.png")
    Attachment.objects.create(upload="shared/logo.png")

    report = migrate_storage(to="s3", models=["core.FileManager"], delete_source=True)

    assert (report.copied, report.problems) == (1, [])
    assert (media_root / "shared" / "logo.png").read_bytes() == b"the logo"


@pytest.mark.parametrize(("old", "new"), [("", "media"), ("media", "")])
def test_adding_or_removing_a_prefix_in_one_bucket_is_a_real_move(
    s3_bucket: str, settings: Any, old: str, new: str
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "old": {**S3, "OPTIONS": {"bucket_name": s3_bucket, "location": old}},
        "new": {**S3, "OPTIONS": {"bucket_name": s3_bucket, "location": new}},
    }
    reset_storages()
    key = (old + "/" if old else "") + "file_manager/a.txt"
    s3_client().put_object(Bucket=s3_bucket, Key=key, Body=b"hello")
    FileManager.objects.create(file="file_manager/a.txt")

    assert migrate_storage(to="new", source="old").copied == 1
    with pytest.raises(ConfigurationError, match="lies inside"):
        migrate_storage(to="new", source="old", delete_source=True)


def test_a_dry_run_predicts_an_unverifiable_download(
    s3_bucket: str, media_root: Path, settings: Any
) -> None:
    settings.AWS_S3_OBJECT_PARAMETERS = {"ServerSideEncryption": "aws:kms"}
    reset_storages()
    s3_client().put_object(Bucket=s3_bucket, Key="file_manager/a.txt", Body=b"hello")
    FileManager.objects.create(file="file_manager/a.txt")

    dry = migrate_storage(to="local", dry_run=True)
    real = migrate_storage(to="local")

    assert (dry.copied, kinds(dry)) == (real.copied, kinds(real)) == (0, ["unverifiable"])
    assert not (media_root / "file_manager" / "a.txt").exists()
