"""Any storage to any storage through the Storage API, on a real remote storage: django-storages'
SFTPStorage against OpenSSH's sshd on loopback (tests/conftest.sftp_root). Local disk, SFTP and
S3 (moto) in every direction; names, sizes, re-runs, conflicts, a killed copy's leftover, unsafe
names, two aliases of one server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage, verify_files
from storage_migrate.endpoints.generic import MARKERS, StorageEndpoint
from tests.conftest import SFTPRoot, reset_storages
from tests.helpers import MiB, kinds, make, md5, s3_bytes

pytestmark = pytest.mark.django_db

# Spaces, non-ASCII, '+' and '%', a zero-byte file, and one larger than IN_MEMORY_LIMIT and
# than a read's chunk (1 MiB each).
FILES = {
    "a photo.jpg": os.urandom(1000),
    "résumé ünïcode.pdf": os.urandom(2000),
    "plus+and%20percent.txt": os.urandom(300),
    "empty.txt": b"",
    "big.bin": os.urandom(3 * MiB + 7),
}


def make_rows(files: dict[str, bytes] = FILES) -> dict[int, bytes]:
    """A row per file, named exactly so (an upload would have its name cleaned up by Django)."""
    rows = {}
    for name, data in files.items():
        exact = f"file_manager/odd names/{name}"
        path = Path(django_settings.MEDIA_ROOT) / exact
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        row = FileManager.objects.create(file=exact, file_size=len(data), checksum=md5(data))
        rows[row.pk] = data
    return rows


def sftp_files(sftp: SFTPRoot) -> dict[str, bytes]:
    """Every file under the SFTP root, read on this disk (not through the code under test)."""
    return {
        str(p.relative_to(sftp.path)): p.read_bytes()
        for p in sftp.path.rglob("*")
        if p.is_file() and MARKERS not in p.parts
    }


def assert_rows_at(files: dict[str, bytes], rows: dict[int, bytes], bucket: str = "") -> None:
    for row in FileManager.objects.all():
        data = rows[row.pk]
        assert files[str(row.file.name)] == data, row.file.name
        assert (row.bucket, row.object_key) == (bucket, row.file.name)
        assert (row.file_size, row.checksum) == (len(data), md5(data))


def test_local_to_sftp_copies_every_name_and_size_and_a_rerun_copies_nothing(
    sftp_root: SFTPRoot, media_root: Path
) -> None:
    rows = make_rows()

    report = migrate_storage(to="sftp", source="local")

    assert report.exit_code == 0, list(report.problems)
    assert (report.copied, report.skipped, report.bytes_copied) == (
        5,
        0,
        sum(len(d) for d in FILES.values()),
    )
    files = sftp_files(sftp_root)
    assert len(files) == 5
    assert_rows_at(files, rows)
    assert not any((sftp_root.path / MARKERS).iterdir())  # every mark of a copy removed
    written = {p: p.stat().st_ino for p in sftp_root.path.rglob("*") if p.is_file()}

    again = migrate_storage(to="sftp", source="local")

    assert (again.copied, again.skipped, again.bytes_copied, list(again.problems)) == (0, 5, 0, [])
    # Nothing was written again: the very same files, not copies of them.
    assert {p: p.stat().st_ino for p in sftp_root.path.rglob("*") if p.is_file()} == written
    # The source is untouched.
    for row in FileManager.objects.all():
        assert (media_root / row.file.name).read_bytes() == rows[row.pk]


def test_sftp_to_s3_and_back_to_another_sftp_folder(
    sftp_root: SFTPRoot, s3_bucket: str, settings: Any
) -> None:
    rows = make_rows()
    assert migrate_storage(to="sftp", source="local").copied == 5

    to_s3 = migrate_storage(to="s3", source="sftp")

    assert (to_s3.exit_code, to_s3.copied) == (0, 5), list(to_s3.problems)
    assert_rows_at(
        {str(r.file.name): s3_bytes(s3_bucket, r.file.name) for r in FileManager.objects.all()},
        rows,
        bucket=s3_bucket,
    )
    # S3 -> SFTP, into an empty folder of the server.
    settings.STORAGES["sftp"]["OPTIONS"]["root_path"] = sftp_root.root_path + "-back"
    reset_storages()

    back = migrate_storage(to="sftp", source="s3")

    assert (back.exit_code, back.copied) == (0, 5), list(back.problems)
    assert_rows_at(sftp_files(SFTPRoot(sftp_root.server, "", Path(f"{sftp_root.path}-back"))), rows)


def test_sftp_to_local(sftp_root: SFTPRoot, settings: Any, tmp_path: Path) -> None:
    rows = make_rows()
    assert migrate_storage(to="sftp", source="local").copied == 5
    settings.MEDIA_ROOT = str(tmp_path / "new-media")  # an empty local disk
    reset_storages()

    report = migrate_storage(to="local", source="sftp")

    assert (report.exit_code, report.copied) == (0, 5), list(report.problems)
    local = {str(p.relative_to(tmp_path / "new-media")): p.read_bytes()
             for p in (tmp_path / "new-media").rglob("*") if p.is_file()}  # fmt: skip
    assert_rows_at(local, rows)
    assert migrate_storage(to="local", source="sftp").skipped == 5


def test_dry_run_from_sftp_predicts_the_copy_of_rows_without_a_checksum(
    sftp_root: SFTPRoot, settings: Any, tmp_path: Path
) -> None:
    make_rows()
    migrate_storage(to="sftp", source="local")
    FileManager.objects.update(checksum="")
    settings.MEDIA_ROOT = str(tmp_path / "new-media")
    reset_storages()

    dry = migrate_storage(to="local", source="sftp", dry_run=True)
    real = migrate_storage(to="local", source="sftp")

    assert (dry.copied, kinds(dry)) == (real.copied, kinds(real)) == (5, [])


def test_pending_walks_every_row_when_a_storage_records_no_bucket(sftp_root: SFTPRoot) -> None:
    # Rows on local disk and rows on SFTP both record an empty bucket and their name: the
    # columns cannot tell which storage holds them, so --pending walks them all.
    make_rows()

    report = migrate_storage(to="sftp", source="local", pending=True)

    assert report.copied == 5
    assert report.walked_whole


def test_a_different_file_at_the_destination_is_a_conflict_and_untouched(
    sftp_root: SFTPRoot,
) -> None:
    row = make("taken.txt", b"the site's bytes")
    theirs = sftp_root.path / row.file.name
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"someone else's")

    report = migrate_storage(to="sftp", source="local")

    assert (report.copied, kinds(report)) == (0, ["conflict"])
    assert theirs.read_bytes() == b"someone else's"
    row.refresh_from_db()
    assert row.bucket == "" and row.file_size == len(b"the site's bytes")


def killed_copy(sftp: SFTPRoot, name: str, data: bytes, *, marked: bool = True) -> Path:
    """What a copy killed half way leaves: the first bytes under the final name and, when
    ``marked``, the mark of the copy in progress (written first by write_generic)."""
    partial = sftp.path / name
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(data)
    if marked:
        (sftp.path / MARKERS).mkdir(exist_ok=True)
        (sftp.path / StorageEndpoint.marker(name)).write_bytes(name.encode())
    return partial


def test_a_killed_copys_part_of_a_file_is_replaced_by_the_next_run(sftp_root: SFTPRoot) -> None:
    data = os.urandom(2 * MiB)
    row = make("video.mp4", data)
    partial = killed_copy(sftp_root, row.file.name, data[: MiB + 5])

    report = migrate_storage(to="sftp", source="local")

    assert (report.copied, list(report.problems)) == (1, [])
    assert partial.read_bytes() == data
    assert not (sftp_root.path / StorageEndpoint.marker(row.file.name)).exists()


@pytest.mark.parametrize(
    "leftover",
    ["unmarked prefix", "marked, not a prefix", "marked, as long as the source"],
)
def test_a_file_that_is_not_our_leftover_stays_a_conflict(
    sftp_root: SFTPRoot, leftover: str
) -> None:
    data = os.urandom(5000)
    row = make("doc.pdf", data)
    theirs = {
        "unmarked prefix": data[:1000],
        "marked, not a prefix": os.urandom(1000),
        # The last byte flipped: never the source's (a fixed byte would be, 1 time in 256).
        "marked, as long as the source": data[:-1] + bytes([data[-1] ^ 0xFF]),
    }[leftover]
    partial = killed_copy(sftp_root, row.file.name, theirs, marked=leftover.startswith("marked"))

    report = migrate_storage(to="sftp", source="local")

    assert (report.copied, kinds(report)) == (0, ["conflict"])
    assert partial.read_bytes() == theirs


def test_a_rerun_removes_the_mark_of_a_copy_killed_after_its_write(sftp_root: SFTPRoot) -> None:
    data = os.urandom(3000)
    row = make("done.txt", data)
    killed_copy(sftp_root, row.file.name, data)  # whole, but never proven nor committed

    report = migrate_storage(to="sftp", source="local")

    assert (report.skipped, list(report.problems)) == (1, [])
    assert not (sftp_root.path / StorageEndpoint.marker(row.file.name)).exists()


def test_verify_files_reads_back_and_finds_a_file_corrupted_at_the_destination(
    sftp_root: SFTPRoot,
) -> None:
    rows = make_rows()
    migrate_storage(to="sftp", source="local")
    assert verify_files(storage="sftp").exit_code == 0
    victim = FileManager.objects.get(file__endswith="big.bin")
    path = sftp_root.path / victim.file.name
    corrupted = bytearray(path.read_bytes())
    corrupted[MiB + 3] ^= 0xFF  # same size: only reading the bytes finds it
    path.write_bytes(bytes(corrupted))

    size_level = verify_files(storage="sftp", level="size")
    report = verify_files(storage="sftp", level="checksum")

    assert size_level.exit_code == 0
    assert kinds(report) == ["checksum_mismatch"]
    assert [p.pk for p in report.problems] == [victim.pk]
    assert report.bytes_read == sum(len(d) for d in rows.values())


def test_verify_files_lists_orphans_on_sftp(sftp_root: SFTPRoot) -> None:
    make_rows({"kept.txt": b"kept"})
    migrate_storage(to="sftp", source="local")
    folder = (sftp_root.path / FileManager.objects.get().file.name).parent
    (folder / "stray.txt").write_bytes(b"no row")

    report = verify_files(storage="sftp", orphans=True)

    assert [(p.kind, p.name) for p in report.problems] == [
        ("orphan", str((folder / "stray.txt").relative_to(sftp_root.path)))
    ]


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/outside.txt", "a/../../outside.txt"])
def test_a_name_that_leaves_the_root_is_unsafe_and_nothing_is_written_outside(
    sftp_root: SFTPRoot, name: str, media_root: Path
) -> None:
    (media_root.parent / "outside.txt").write_bytes(b"source outside")
    row = make("fine.txt", b"ok")
    FileManager.objects.filter(pk=row.pk).update(file=name)
    server_root = sftp_root.server.local_path("/")

    report = migrate_storage(to="sftp", source="local")

    assert kinds(report) == ["unsafe_name"]
    assert not any(p.name == "outside.txt" for p in server_root.rglob("*"))
    assert kinds(verify_files(storage="sftp")) == ["unsafe_name"]


def test_delete_source_is_refused_to_and_from_sftp(sftp_root: SFTPRoot) -> None:
    make_rows({"a.txt": b"a"})
    for source, to in (("local", "sftp"), ("sftp", "local")):
        with pytest.raises(ConfigurationError, match="--delete-source works between local"):
            migrate_storage(to=to, source=source, delete_source=True)


def alias(settings: Any, name: str, **options: Any) -> None:
    backend = settings.STORAGES["sftp"]["BACKEND"]
    merged = {**settings.STORAGES["sftp"]["OPTIONS"], **options}
    settings.STORAGES = {**settings.STORAGES, name: {"BACKEND": backend, "OPTIONS": merged}}
    reset_storages()


def test_two_aliases_of_one_sftp_folder_are_one_place(sftp_root: SFTPRoot, settings: Any) -> None:
    # Another spelling of the same root, and another base URL: still one place.
    alias(settings, "mirror", root_path=sftp_root.root_path + "/", base_url="/other/")
    make_rows({"a.txt": b"a"})

    with pytest.raises(ConfigurationError, match="one place"):
        migrate_storage(to="mirror", source="sftp", dry_run=True)


def test_an_sftp_folder_inside_another_is_refused_where_it_could_overwrite(
    sftp_root: SFTPRoot, settings: Any
) -> None:
    alias(settings, "inner", root_path=sftp_root.root_path + "/file_manager")
    make_rows({"a.txt": b"a"})

    with pytest.raises(ConfigurationError, match="lies inside"):
        migrate_storage(to="inner", source="sftp", overwrite=True)


def test_another_name_of_the_server_is_found_by_the_probe(
    sftp_root: SFTPRoot, settings: Any
) -> None:
    alias(settings, "by_name", host="localhost")  # 127.0.0.1 under another name
    make_rows({"a.txt": b"a"})
    migrate_storage(to="sftp", source="local")

    with pytest.raises(ConfigurationError, match="one place"):
        migrate_storage(to="by_name", source="sftp")
    assert not any(p.name.startswith(".storage-migrate-probe") for p in sftp_root.path.iterdir())


def test_an_sftp_server_over_the_local_folder_is_one_place(
    sftp_root: SFTPRoot, settings: Any
) -> None:
    sftp_root.path.mkdir(parents=True)
    settings.MEDIA_ROOT = str(sftp_root.path)  # the server's folder is MEDIA_ROOT itself
    reset_storages()
    make_rows({"a.txt": b"a"})

    with pytest.raises(ConfigurationError, match="one place"):
        migrate_storage(to="sftp", source="local")


def test_a_server_that_cannot_be_reached_is_a_configuration_error(
    sftp_root: SFTPRoot, settings: Any
) -> None:
    from storage_migrate.testing import free_port

    options = settings.STORAGES["sftp"]["OPTIONS"]
    alias(settings, "down", params={**options["params"], "port": free_port()})
    make_rows({"a.txt": b"a"})

    with pytest.raises(ConfigurationError, match=r"Storage .down. .* cannot be listed"):
        migrate_storage(to="down", source="local")


def test_each_worker_thread_has_its_own_connection(sftp_root: SFTPRoot) -> None:
    # One paramiko session shared by threads mixes up their answers: 32 workers, 40 files.
    rows = make_rows({f"f{i}.txt": os.urandom(2000 + i) for i in range(40)})

    report = migrate_storage(to="sftp", source="local", workers=32)

    assert (report.copied, list(report.problems)) == (40, [])
    assert_rows_at(sftp_files(sftp_root), rows)


def test_the_marker_name_is_a_digest_of_the_name() -> None:
    name = "file_manager/a b/ü+%.txt"
    digest = hashlib.sha256(name.encode()).hexdigest()
    assert StorageEndpoint.marker(name) == f"{MARKERS}/{digest}"
