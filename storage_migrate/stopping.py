"""Stopping a run at a safe point.

A signal handler that raises wherever the main thread happens to be can leave a lock of
concurrent.futures held (a KeyboardInterrupt between two of the acquires in ``wait()``); the run
then waits for ever for its own worker, which waits for that lock. So while a command runs,
Ctrl-C and SIGTERM only ask the run to stop, and the run stops where it checks: between rows,
and at least every STOP_POLL seconds while it waits for its workers. A second Ctrl-C (or
SIGTERM) stops at once, as Python would.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

STOP_POLL = 0.5  # seconds: the longest a run waits for its workers without looking

_requested: list[int] = []  # the signals received, in the order they came


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Kubernetes and systemd send to stop a Job), handled as Ctrl-C is."""


def _interruption(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def check() -> None:
    """Raise KeyboardInterrupt (Terminated for SIGTERM) if the run was asked to stop."""
    if _requested:
        raise _interruption(_requested[0])


def sleep(seconds: float) -> None:
    """time.sleep(), cut short (raising as check() does) when the run is asked to stop."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        check()
        time.sleep(min(left, STOP_POLL))
    check()


@contextlib.contextmanager
def stop_at_safe_points() -> Iterator[None]:
    """While the block runs, Ctrl-C and SIGTERM ask the run to stop at its next check()."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return

    def ask(signum: int, frame: Any) -> None:
        if _requested:  # asked again: at once
            raise _interruption(signum)
        _requested.append(signum)

    _requested.clear()
    previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _requested.clear()
