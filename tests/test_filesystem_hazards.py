"""The filesystem under MEDIA_ROOT is not trusted: others change it during a run. A folder
swapped for a symlink after its first check, a name that is the root or a folder, a FIFO under a
row's name: nothing outside MEDIA_ROOT is read, written or deleted, and nothing hangs."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.models import FileManager
from storage_migrate import migrate_storage, verify_files
from storage_migrate.conf import get_conf
from storage_migrate.endpoints import s3write as engine
from storage_migrate.endpoints import sources
from storage_migrate.endpoints.factory import endpoint_for
from storage_migrate.endpoints.local import LocalEndpoint
from storage_migrate.testing import s3_client
from storage_migrate.verify import run as verification_module
from tests.conftest import reset_storages
from tests.helpers import make, s3_bytes, s3_keys

pytestmark = pytest.mark.django_db

SECRET = b"bytes that live outside MEDIA_ROOT"


@pytest.fixture
def outside(media_root: Path) -> Path:
    """A folder beside MEDIA_ROOT that the run must never touch."""
    folder = media_root.parent / "outside"
    folder.mkdir()
    return folder


def swap_for_link(folder: Path, target: Path) -> None:
    """What someone with write access to MEDIA_ROOT can do mid-run: the folder becomes a link."""
    folder.rename(folder.with_name(folder.name + ".moved"))
    folder.symlink_to(target, target_is_directory=True)


def after_first_check(
    monkeypatch: pytest.MonkeyPatch, name: str, change: Callable[[], None]
) -> None:
    """Run ``change`` right after the run first checks ``name``'s path (the planner's check)."""
    real = LocalEndpoint.local_path
    done: list[bool] = []

    def local_path(self: LocalEndpoint, checked: str) -> str:
        path = real(self, checked)
        if checked == name and not done:
            done.append(True)
            change()
        return path

    monkeypatch.setattr(LocalEndpoint, "local_path", local_path)


def sent_bytes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every byte a source hands the destination, whichever way it is sent."""
    sent: list[bytes] = []
    real_open = sources.Source.open
    real_load = sources.load_source

    def spying_open(self: sources.Source) -> Any:
        stream = real_open(self)
        data = stream.read()
        stream.close()
        sent.append(data)
        import io

        return io.BytesIO(data)

    def spying_load(*args: Any, **kwargs: Any) -> sources.Source:
        source = real_load(*args, **kwargs)
        if source.data is not None:
            sent.append(source.data)
        return source

    monkeypatch.setattr(sources.Source, "open", spying_open)
    monkeypatch.setattr("storage_migrate.endpoints.transfer.load_source", spying_load)
    return sent


def bucket_bytes(bucket: str) -> list[bytes]:
    return [s3_bytes(bucket, key) for key in s3_keys(bucket)]


def problems(report: Any) -> list[tuple[str, Any]]:
    return sorted((p.kind, p.pk) for p in report.problems)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- 8. a folder swapped for a symlink after its first check ------------------------------


@pytest.mark.parametrize(
    "size",
    [
        "in memory",
        pytest.param(
            "re-read from disk",
            marks=pytest.mark.skipif(
                not os.path.isdir("/proc/self/fd"),
                reason="a file re-read by path is pinned through /proc/self/fd",
            ),
        ),
    ],
)
def test_a_folder_swapped_for_a_link_after_its_check_is_never_read(
    s3_bucket: str,
    media_root: Path,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    size: str,
) -> None:
    own = b"the site's own bytes, the same length".ljust(len(SECRET), b".")[: len(SECRET)]
    row = make("report.txt", own)
    (outside / "report.txt").write_bytes(SECRET)
    folder = media_root / os.path.dirname(str(row.file.name))
    sent = sent_bytes(monkeypatch)
    if size == "in memory":
        after_first_check(monkeypatch, row.file.name, lambda: swap_for_link(folder, outside))
    else:
        # The source is hashed while the folder is real, then sent again from disk: the swap
        # comes between the two.
        settings.STORAGE_MIGRATE = {"IN_MEMORY_LIMIT": 8}
        real_start = engine.start_write_s3

        def swap_then_send(*args: Any, **kwargs: Any) -> Any:
            swap_for_link(folder, outside)
            return real_start(*args, **kwargs)

        monkeypatch.setattr("storage_migrate.endpoints.transfer.start_write_s3", swap_then_send)

    report = migrate_storage(to="s3", workers=1, batch_size=1)

    assert SECRET not in sent
    assert SECRET not in bucket_bytes(s3_bucket)
    if size == "in memory":
        assert problems(report) == [("unsafe_name", row.pk)]
    assert (outside / "report.txt").read_bytes() == SECRET


@pytest.mark.parametrize("folders", ["existing", "created by the run"])
def test_a_destination_folder_swapped_for_a_link_is_never_written(
    s3_bucket: str,
    media_root: Path,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
    folders: str,
) -> None:
    row = make("incoming.txt", b"from the bucket")
    other = make("elsewhere.txt", b"fine")
    assert migrate_storage(to="s3", delete_source=True).problems == []
    folder = media_root / os.path.dirname(str(row.file.name))
    FileManager.objects.filter(pk=other.pk).update(file="other/elsewhere.txt")
    s3_client().put_object(Bucket=s3_bucket, Key="other/elsewhere.txt", Body=b"fine")
    if folders == "created by the run":
        # Only file_manager/ is left: the date folders are made during the run, inside a
        # file_manager/ that has meanwhile become a link out.
        for parent in (folder, folder.parent, folder.parent.parent):
            parent.rmdir()
        folder = media_root / "file_manager"
    after_first_check(monkeypatch, row.file.name, lambda: swap_for_link(folder, outside))

    report = migrate_storage(to="local", workers=1, batch_size=1)

    assert tree(outside) == []
    assert problems(report) == [("unsafe_name", row.pk)]
    assert (media_root / "other" / "elsewhere.txt").read_bytes() == b"fine"
    row.refresh_from_db()
    assert row.bucket == s3_bucket  # the row still points where its file is


def test_delete_source_through_a_swapped_folder_deletes_nothing_outside(
    s3_bucket: str, media_root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = make("old.txt", b"copied, then deleted")
    (outside / "old.txt").write_bytes(SECRET)
    folder = media_root / os.path.dirname(str(row.file.name))
    # Every check before the delete (fingerprint, destination proof) sees the real folder; the
    # swap comes between them and the unlink.
    real_remove = LocalEndpoint.remove_if_unchanged

    def remove(self: LocalEndpoint, name: str, *args: Any, **kwargs: Any) -> str | None:
        if not folder.is_symlink():
            swap_for_link(folder, outside)
        return real_remove(self, name, *args, **kwargs)

    monkeypatch.setattr(LocalEndpoint, "remove_if_unchanged", remove)

    report = migrate_storage(to="s3", delete_source=True, workers=1)

    assert (outside / "old.txt").read_bytes() == SECRET
    assert [p.kind for p in report.problems] == ["error"]
    assert "could not be deleted" in report.problems[0].detail
    assert s3_bytes(s3_bucket, row.file.name) == b"copied, then deleted"


def test_a_link_that_stays_inside_the_root_is_still_followed(
    s3_bucket: str, media_root: Path
) -> None:
    row = make("kept.txt", b"kept")
    folder = media_root / os.path.dirname(str(row.file.name))
    swap_for_link(folder, folder.with_name(folder.name + ".moved"))  # a link within the root

    report = migrate_storage(to="s3")

    assert (report.copied, problems(report)) == (1, [])
    assert s3_bytes(s3_bucket, row.file.name) == b"kept"


# --- 9. a name that is the root, or a folder -----------------------------------------------


@pytest.mark.parametrize("name", [".", "./.", ".\\.", "./", "a/.."])
def test_a_name_that_is_the_root_is_unsafe(
    s3_bucket: str, media_root: Path, settings: Any, name: str
) -> None:
    settings.AWS_LOCATION = "site/media"
    reset_storages()
    row = make("placeholder.txt", b"x")
    (media_root / row.file.name).unlink()
    FileManager.objects.filter(pk=row.pk).update(file=name)
    key = endpoint_for("s3", get_conf()).key(name)
    s3_client().put_object(Bucket=s3_bucket, Key=key, Body=b"an object at the prefix itself")
    parent_before = sorted(p.name for p in media_root.parent.iterdir())
    media_before = tree(media_root)

    report = migrate_storage(to="local")

    assert problems(report) == [("unsafe_name", row.pk)]
    assert sorted(p.name for p in media_root.parent.iterdir()) == parent_before
    assert tree(media_root) == media_before


def test_a_root_name_is_refused_by_the_name_rules() -> None:
    from storage_migrate.names import unsafe_reason

    for name in (".", "./.", ".\\.", "./././"):
        assert unsafe_reason(name) is not None, name
    assert unsafe_reason(".") == "name is the storage's root"
    assert unsafe_reason("a/.b") is None
    assert unsafe_reason(".hidden") is None


def test_a_name_that_is_a_folder_is_unsafe(s3_bucket: str, media_root: Path) -> None:
    row = make("placeholder.txt", b"x")
    fine = make("fine.txt", b"fine")
    (media_root / "file_manager" / "albums").mkdir()
    (media_root / "file_manager" / "albums" / "inside.jpg").write_bytes(b"jpg")
    FileManager.objects.filter(pk=row.pk).update(file="file_manager/albums")

    assert problems(verify_files(level="deep")) == [("unsafe_name", row.pk)]
    report = migrate_storage(to="s3")

    assert problems(report) == [("unsafe_name", row.pk)]
    assert s3_keys(s3_bucket) == [fine.file.name]


def test_a_file_replaced_by_a_folder_after_planning_is_unsafe(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = make("becomes-a-folder.txt", b"x")
    path = media_root / row.file.name

    def to_folder() -> None:
        path.unlink()
        path.mkdir()

    after_first_check(monkeypatch, row.file.name, to_folder)

    report = migrate_storage(to="s3")

    assert problems(report) == [("unsafe_name", row.pk)]
    assert "folder" in report.problems[0].detail
    assert s3_keys(s3_bucket) == []


def test_a_destination_name_that_is_a_folder_is_unsafe(s3_bucket: str, media_root: Path) -> None:
    row = make("to-be-a-folder.txt", b"x")
    assert migrate_storage(to="s3", delete_source=True).problems == []
    (media_root / row.file.name).mkdir()

    report = migrate_storage(to="local")

    assert problems(report) == [("unsafe_name", row.pk)]
    assert tree(media_root / row.file.name) == []


# --- 10. a FIFO under a row's name ----------------------------------------------------------


@contextlib.contextmanager
def finishes_within(seconds: float, fifo: Path) -> Iterator[None]:
    """Fails if the body is still running after ``seconds``; then frees anything blocked on the
    FIFO (by opening it for writing and closing it) so that the test itself ends."""
    stop = threading.Event()
    hung: list[bool] = []

    def watchdog() -> None:
        if stop.wait(seconds):
            return
        hung.append(True)
        while not stop.wait(0.05):
            with contextlib.suppress(OSError):  # ENXIO: nobody is reading it right now
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert not hung, f"still running after {seconds} s: it waited on the FIFO"
    assert time.monotonic() - started < seconds


@pytest.fixture
def fifo_rows(media_root: Path) -> tuple[FileManager, list[FileManager], Path]:
    rows = [make(f"fine {i}.txt", f"fine {i}".encode()) for i in range(2)]
    row = make("pipe.txt", b"x")
    fifo = media_root / row.file.name
    fifo.unlink()
    os.mkfifo(fifo)
    return row, rows, fifo


def test_a_fifo_under_a_row_name_never_hangs_a_migration(
    s3_bucket: str, fifo_rows: tuple[FileManager, list[FileManager], Path]
) -> None:
    row, fine, fifo = fifo_rows

    with finishes_within(10, fifo):
        report = migrate_storage(to="s3")

    assert problems(report) == [("unsafe_name", row.pk)]
    assert report.copied == len(fine)
    assert s3_keys(s3_bucket) == sorted(str(r.file.name) for r in fine)


@pytest.mark.parametrize("path", ["one row at a time", "joined with a listing"])
def test_a_fifo_under_a_row_name_never_hangs_a_deep_verification(
    fifo_rows: tuple[FileManager, list[FileManager], Path],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    row, fine, fifo = fifo_rows
    if path == "joined with a listing":
        monkeypatch.setattr(verification_module, "JOIN_MIN_ROWS", 2)

    with finishes_within(10, fifo):
        report = verify_files(level="deep", orphans=True)

    assert problems(report) == [("unsafe_name", row.pk)]
    assert report.ok == len(fine)


def test_a_file_replaced_by_a_fifo_after_planning_never_hangs(
    s3_bucket: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fine = make("fine.txt", b"fine")
    row = make("later-a-pipe.txt", b"x")
    fifo = media_root / row.file.name

    def to_fifo() -> None:
        fifo.unlink()
        os.mkfifo(fifo)

    after_first_check(monkeypatch, row.file.name, to_fifo)

    with finishes_within(10, fifo):
        report = migrate_storage(to="s3")

    assert problems(report) == [("unsafe_name", row.pk)]
    assert "not a regular file" in report.problems[0].detail
    assert s3_keys(s3_bucket) == [fine.file.name]
