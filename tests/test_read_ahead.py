"""read_ahead(): a listing fetched by a thread while the caller works. It must hand over every
item once and in order, raise the listing's own error where the listing would have raised it,
stay within its bound, stop its thread and close the listing when the caller leaves, and never
keep a run from stopping when asked to."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage, InMemoryStorage, Storage

from storage_migrate import stopping
from storage_migrate.conf import get_conf
from storage_migrate.endpoints.base import ObjectInfo
from storage_migrate.endpoints.factory import endpoint_for_storage
from storage_migrate.endpoints.generic import StorageEndpoint
from storage_migrate.readahead import read_ahead


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False


def helper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "storage-migrate-read-ahead"]


def endless_listing(closed: threading.Event) -> Iterator[int]:
    """A listing longer than any caller reads, which says when it is closed."""
    try:
        yield from range(1_000_000)
    finally:
        closed.set()


@pytest.mark.parametrize("count", [0, 1, 6, 7, 8, 21, 22, 100])
@pytest.mark.parametrize("chunk", [1, 7])
def test_every_item_once_in_order(count: int, chunk: int) -> None:
    items = [(f"name-{i:03d}", i) for i in range(count)]

    assert list(read_ahead(iter(items), depth=2, chunk=chunk)) == items
    assert wait_for(lambda: not helper_threads())


def test_the_listing_error_comes_after_the_items_before_it() -> None:
    failure = ConnectionError("connection reset while listing page 3")

    def listing() -> Iterator[int]:
        yield from range(25)
        raise failure

    got: list[int] = []
    with pytest.raises(ConnectionError) as raised:
        for item in read_ahead(listing(), depth=1, chunk=10):
            got.append(item)
    assert raised.value is failure
    assert got == list(range(25))  # nothing lost, nothing made up before the error


def test_bounded_and_ahead() -> None:
    """The thread reads ahead of the caller (that is the point), but by a few chunks at most:
    memory stays flat on a listing of millions."""
    produced = []

    def listing() -> Iterator[int]:
        for i in range(10_000):
            produced.append(i)
            yield i

    depth, chunk = 2, 10
    items = read_ahead(listing(), depth=depth, chunk=chunk)
    assert next(items) == 0
    # Queue full (depth chunks), one chunk in the thread's hands, one in the caller's.
    bound = (depth + 2) * chunk
    assert wait_for(lambda: len(produced) >= bound - chunk)
    time.sleep(0.3)
    assert chunk < len(produced) <= bound
    rest = list(items)
    assert rest == list(range(1, 10_000))


def test_leaving_early_stops_the_thread_and_closes_the_listing() -> None:
    closed = threading.Event()

    with contextlib.closing(read_ahead(endless_listing(closed), depth=2, chunk=10)) as items:
        assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert closed.wait(5)
    assert wait_for(lambda: not helper_threads())


def test_the_caller_failing_stops_the_thread() -> None:
    closed = threading.Event()

    def caller() -> None:
        with contextlib.closing(read_ahead(endless_listing(closed), depth=1, chunk=10)) as items:
            for item in items:
                if item == 15:
                    raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError, match="database went away"):
        caller()
    assert closed.wait(5)
    assert wait_for(lambda: not helper_threads())


def test_a_stop_request_is_seen_while_the_listing_hangs() -> None:
    """A store that never answers must not keep Ctrl-C from stopping the run: the caller looks
    for a stop request while it waits."""
    release = threading.Event()

    def listing() -> Iterator[int]:
        yield 1
        release.wait(30)  # a request that hangs
        yield 2

    items = read_ahead(listing(), depth=1, chunk=1)
    assert next(items) == 1
    timer = threading.Timer(0.2, stopping._requested.append, args=(signal.SIGINT,))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(items)
    finally:
        stopping._requested.clear()
        release.set()
        timer.cancel()
    assert time.monotonic() - started < 0.2 + 2 * stopping.STOP_POLL + 1
    items.close()
    assert wait_for(lambda: not helper_threads())


@pytest.mark.parametrize("kind", ["local", "connection per thread"])
def test_a_storage_that_opens_a_connection_per_thread_is_listed_in_the_calling_thread(
    kind: str, tmp_path: Path
) -> None:
    """Local disk (and S3) are listed ahead by a thread; a storage that gets one instance, and
    so one connection, per thread (SFTP, FTP: StorageEndpoint) is not, or verify_files would
    open one connection more than the server takes (GENERIC_THREADS)."""
    storage: Storage = FileSystemStorage(location=tmp_path)
    if kind != "local":
        storage = InMemoryStorage()
    endpoint = endpoint_for_storage(kind, storage, get_conf())
    assert isinstance(endpoint, StorageEndpoint) == (kind != "local")
    listed_by: list[threading.Thread] = []

    def listing(prefix: str = "") -> Iterator[tuple[str, ObjectInfo]]:
        listed_by.append(threading.current_thread())
        yield from [("a.txt", ObjectInfo(size=1)), ("b.txt", ObjectInfo(size=2))]

    endpoint.iter_objects = listing  # type: ignore[method-assign]
    with contextlib.closing(endpoint.iter_objects_ahead("")) as items:
        assert [name for name, _info in items] == ["a.txt", "b.txt"]
    ahead = listed_by == [t for t in listed_by if t is not threading.current_thread()]
    assert len(listed_by) == 1
    assert ahead == (kind == "local")
