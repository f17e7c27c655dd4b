"""Reading a listing ahead: its next pages are fetched in a thread while the caller works through
the current one.

verify_files merges the rows, read from the database in name order, with one listing of the
folder that holds their files. Read in turn, each waits for the other: the store answers a
listing request while the database and our own code sit idle, and the other way round. Read
ahead, the two overlap; at most ``depth`` chunks wait in memory, so memory stays flat.

An error of the listing reaches the caller where it would have come without the thread, at the
next item it asks for. Closing the iterator (or leaving it to an error) tells the thread to stop;
the thread is a daemon, so a request still in flight never keeps the process alive."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

from . import stopping

T = TypeVar("T")

CHUNK = 1000  # items handed over at a time (one listing page)
DEPTH = 3  # chunks fetched ahead at most


class _End:
    """The items ran out (error None) or failed (the error to raise in the caller)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def read_ahead(
    items: Iterator[T], depth: int = DEPTH, chunk: int = CHUNK
) -> Generator[T, None, None]:
    """The items of ``items``, fetched by a thread at most ``depth`` chunks ahead."""
    handover: queue.Queue[list[T] | _End] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: list[T] | _End) -> bool:
        while not stop.is_set():
            try:
                handover.put(value, timeout=stopping.STOP_POLL)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        ready: list[T] = []
        try:
            for item in items:
                ready.append(item)
                if len(ready) >= chunk:
                    if not put(ready):
                        return
                    ready = []
            if ready and not put(ready):
                return
            put(_End())
        except BaseException as exc:  # handed to the caller, raised there
            if not ready or put(ready):  # the items before the error first
                put(_End(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # the caller has what it needs
                    close()

    thread = threading.Thread(target=fetch, name="storage-migrate-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            try:
                got = handover.get(timeout=stopping.STOP_POLL)
            except queue.Empty:
                stopping.check()
                continue
            if isinstance(got, _End):
                if got.error is not None:
                    raise got.error
                return
            yield from got
    finally:
        stop.set()
        # Free a thread blocked on a full queue; it sees the stop at its next put.
        while True:
            try:
                handover.get_nowait()
            except queue.Empty:
                break
