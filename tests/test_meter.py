"""What a run costs (requests by pricing class, bytes), what a dry run says it would cost, and
the ceilings --max-rate and --max-requests keep, for every engine, fairly across threads."""

from __future__ import annotations

import os
import threading
import time
from io import StringIO
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from storage_migrate import ConfigurationError, migrate_storage
from storage_migrate.endpoints.native import NativePut
from storage_migrate.meter import CLASS_A, CLASS_B, Meter, Throttle, add_costs, request_class
from tests.conftest import reset_storages
from tests.helpers import MiB, make

pytestmark = pytest.mark.django_db


def test_pricing_classes() -> None:
    assert [
        request_class(op)
        for op in ("PutObject", "UploadPartCopy", "ListObjectsV2", "GetObject", "HeadObject")
    ] == [CLASS_A, CLASS_A, CLASS_A, CLASS_B, CLASS_B]
    assert request_class("DeleteObject") == request_class("AbortMultipartUpload") == "delete"


def test_a_throttle_holds_its_rate_and_serves_threads_in_turn() -> None:
    throttle = Throttle(rate=200, burst=0.0)
    done: list[int] = []
    lock = threading.Lock()

    def worker(number: int) -> None:
        for _ in range(4):
            throttle.take(10)
            with lock:
                done.append(number)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    # 200 units in slots of 10 at 200 a second: the last slot starts 0.95 s after the first.
    assert elapsed >= 0.95 * 0.99, elapsed
    # Slots are reserved in the order asked: no thread takes its 3rd before each has its 1st.
    firsts = {n: done.index(n) for n in range(5)}
    thirds = {n: [i for i, x in enumerate(done) if x == n][2] for n in range(5)}
    assert max(firsts.values()) < min(thirds.values()), done


def test_a_real_run_counts_its_requests_and_bytes(s3_bucket: str) -> None:
    sizes = [0, 10, 1000, 200_000]
    for number, size in enumerate(sizes):
        make(f"docs/f{number}.bin", os.urandom(size))
    report = migrate_storage(to="s3")
    cost = report.to_dict()["cost"]
    assert cost["bytes_sent"] == sum(sizes)
    assert cost["bytes_received"] == cost["bytes_copied_in_store"] == 0
    # A PUT for each file, beside the preflight's own (its conditional-write probe).
    assert cost["requests"][CLASS_A] >= len(sizes) + 2
    assert cost["requests"][CLASS_B] >= 1  # the bucket's HEAD at least
    assert cost["seconds_held_back"] == 0


def test_an_empty_table_costs_the_bucket_check_alone(s3_bucket: str, settings: Any) -> None:
    # Nothing to copy: no conditional-write probe (two PUTs and a DELETE), no writer made (its
    # address probe is a HEAD); the bucket is still checked: a broken setup is exit 2 even then.
    report = migrate_storage(to="s3")
    assert (report.rows, report.exit_code) == (0, 0)
    assert report.to_dict()["cost"]["requests"] == {CLASS_A: 0, CLASS_B: 1, "delete": 0}

    settings.AWS_STORAGE_BUCKET_NAME = "no-such-bucket"
    reset_storages()
    with pytest.raises(ConfigurationError, match="'no-such-bucket' of storage 's3' does not exist"):
        migrate_storage(to="s3")


def test_a_dry_run_prices_the_move(s3_bucket: str) -> None:
    sizes = [10, 3000, 17 * MiB]  # one in parts (the multipart threshold is 16 MiB in tests?)
    for number, size in enumerate(sizes):
        make(f"docs/g{number}.bin", os.urandom(size))
    dry = migrate_storage(to="s3", dry_run=True)
    real = migrate_storage(to="s3")
    predicted, sent = dry.to_dict()["cost"], real.to_dict()["cost"]
    assert predicted["bytes_sent"] == sent["bytes_sent"] == sum(sizes)
    # The dry run sends no probe: the real run's writes and listings within a few requests.
    assert abs(predicted["requests"][CLASS_A] - sent["requests"][CLASS_A]) <= 3, (predicted, sent)
    out = StringIO()
    make("docs/h.bin", b"more")
    call_command("migrate_storage", "--to", "s3", "--dry-run", "--no-progress", stdout=out)
    assert "A real run would send about" in out.getvalue()
    assert "PUT/COPY/POST/LIST and" in out.getvalue()


def test_max_requests_is_a_ceiling(s3_bucket: str) -> None:
    for number in range(12):
        make(f"docs/r{number}.txt", b"x" * number)
    started = time.monotonic()
    report = migrate_storage(to="s3", max_requests=10, workers=8)
    elapsed = time.monotonic() - started
    assert (report.copied, list(report.problems)) == (12, [])
    cost = report.to_dict()["cost"]
    sent = sum(cost["requests"].values())
    # The meter was set before the preflight: every request is paced (a quarter second of
    # credit at most).
    assert elapsed >= (sent - 1) / 10 - 0.25, (elapsed, sent)
    assert cost["max_requests"] == 10 and cost["seconds_held_back"] > 0


def test_max_rate_is_a_ceiling_for_the_native_engine_too(
    s3_endpoint: str, http_bucket: str, settings: Any
) -> None:
    """Over HTTP (moto's server), where the native engine sends the single PUTs itself."""
    settings.AWS_S3_ENDPOINT_URL, settings.AWS_STORAGE_BUCKET_NAME = s3_endpoint, http_bucket
    reset_storages()
    for number in range(4):
        make(f"docs/m{number}.bin", os.urandom(500_000))
    sent: list[int] = []
    original = NativePut.start

    def start(self: NativePut, key: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(1)
        return original(self, key, *args, **kwargs)

    started = time.monotonic()
    with mock.patch.object(NativePut, "start", start):
        report = migrate_storage(to="s3", max_rate=1.0)
    elapsed = time.monotonic() - started
    assert len(sent) == 4  # every file went through the native engine
    assert (report.copied, list(report.problems)) == (4, [])
    # 2 MB at 1 MB a second, after a quarter second of credit.
    assert elapsed >= 2.0 - 0.25 - 0.5, elapsed
    assert report.to_dict()["cost"]["seconds_held_back"] > 1.0


def test_a_meter_counts_server_side_bytes_as_copied_in_the_store() -> None:
    meter = Meter(max_rate=None)
    meter.data(123, "in_store")
    meter.request("CopyObject")
    assert meter.cost()["bytes_copied_in_store"] == 123
    assert meter.cost()["requests"][CLASS_A] == 1


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "fast"])
@pytest.mark.parametrize("option", ["--max-rate", "--max-requests"])
def test_bad_ceilings_are_refused(option: str, value: str, s3_bucket: Any) -> None:
    make("docs/kept.txt", b"kept")
    with pytest.raises(CommandError) as caught:
        call_command("migrate_storage", "--to", "s3", option, value, "--no-progress")
    assert caught.value.returncode == 2
    assert option in str(caught.value) or "must be above 0" in str(caught.value)


def test_each_shard_keeps_to_its_share(s3_bucket: str) -> None:
    make("docs/s.txt", b"shared ceilings")
    report = migrate_storage(to="s3", shard=(1, 4), max_rate=8.0, max_requests=100)
    cost = report.to_dict()["cost"]
    assert (cost["max_rate"], cost["max_requests"]) == (2.0, 25.0)


def test_the_costs_of_batches_add_up() -> None:
    one = Meter(max_rate=4.0)
    one.predict("PutObject", 3, sent=30)
    two = Meter()
    two.predict("GetObject", 2, received=20)
    two.predict("CopyObject", 1, in_store=5)
    total = add_costs(add_costs({}, one.cost()), two.cost())
    assert total["requests"] == {CLASS_A: 4, CLASS_B: 2, "delete": 0}
    assert (total["bytes_sent"], total["bytes_received"], total["bytes_copied_in_store"]) == (
        30,
        20,
        5,
    )
    assert "max_rate" not in total  # a ceiling is no count
