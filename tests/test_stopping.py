"""Ctrl-C and SIGTERM stop a run at a safe point: the signal only asks, the run's next check
raises. A KeyboardInterrupt raised inside concurrent.futures' wait() could leave a future's lock
held, and the run then waited for ever for its own worker (seen once in CI, and shown by the
fault handler: the worker in Future.set_result, the main thread in shutdown's join)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from storage_migrate import stopping


@pytest.mark.parametrize(
    ("sig", "kind"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, stopping.Terminated)]
)
def test_a_signal_asks_and_the_next_check_stops(sig: int, kind: type[BaseException]) -> None:
    with stopping.stop_at_safe_points():
        os.kill(os.getpid(), sig)
        time.sleep(0.05)  # the handler has run: nothing was raised here
        with pytest.raises(kind) as raised:
            stopping.check()
    assert type(raised.value) is kind
    stopping.check()  # outside the block nothing is pending


def test_a_second_signal_stops_at_once() -> None:
    with stopping.stop_at_safe_points():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def test_the_handlers_are_put_back() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stopping.stop_at_safe_points():
        assert signal.getsignal(signal.SIGINT) is not before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_run_waiting_for_its_workers_still_looks_every_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from storage_migrate.verify.run import Verification

    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool, stopping.stop_at_safe_points():
        slow = pool.submit(time.sleep, 3)
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(stopping.Terminated):
            Verification._collect(object(), {slow})
    assert time.monotonic() - started < 4  # seen before the worker was done (plus its join)
