"""Hot-path helpers: which names are unsafe, how S3 timestamps are parsed, the collector."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta, timezone

import pytest

from storage_migrate.conf import get_conf
from storage_migrate.endpoints.factory import endpoint_for
from storage_migrate.endpoints.s3 import S3Endpoint, _parse_timestamp
from storage_migrate.names import MAX_KEY_BYTES, unsafe_reason


@pytest.mark.parametrize("code", [*range(1, 32), 127])
def test_every_control_character_is_unsafe(code: int) -> None:
    assert unsafe_reason(f"a{chr(code)}b.txt") == "name contains a control character"


@pytest.mark.parametrize("name", ["tab\u00a0nbsp.txt", "façade ñandú 日本語.txt", "a~b.txt"])
def test_printable_names_are_safe(name: str) -> None:
    assert unsafe_reason(name) is None


def test_the_key_length_limit_counts_utf8_bytes() -> None:
    assert unsafe_reason("é" * (MAX_KEY_BYTES // 2)) is None  # 1024 bytes
    assert unsafe_reason("é" * (MAX_KEY_BYTES // 2 + 1)) is not None  # 1026 bytes
    assert unsafe_reason("a" * MAX_KEY_BYTES) is None
    assert unsafe_reason("a", "k" * (MAX_KEY_BYTES + 1)) is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T09:35:16.782Z", datetime(2026, 11, 21, 9, 35, 16, 782000, tzinfo=UTC)),
        ("2026-11-21T09:35:16Z", datetime(2026, 11, 21, 9, 35, 16, tzinfo=UTC)),
        ("2026-11-21T09:35:16", datetime(2026, 11, 21, 9, 35, 16, tzinfo=UTC)),
        (
            "2026-11-21T10:35:16+01:00",
            datetime(2026, 11, 21, 10, 35, 16, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("Sat, 21 Nov 2026 09:35:16 GMT", datetime(2026, 11, 21, 9, 35, 16, tzinfo=UTC)),
    ],
)
def test_timestamps_parse_to_aware_datetimes(text: str, expected: datetime) -> None:
    parsed = _parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_listings_through_an_endpoint_carry_aware_timestamps(s3_bucket: str) -> None:
    endpoint = endpoint_for("s3", get_conf())
    assert isinstance(endpoint, S3Endpoint)
    endpoint.client.put_object(Bucket=s3_bucket, Key="a.txt", Body=b"a")
    [entry] = endpoint.client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert isinstance(entry["LastModified"], datetime)
    assert abs(entry["LastModified"] - datetime.now(UTC)) < timedelta(minutes=5)


def test_a_run_leaves_the_garbage_collector_as_it_found_it() -> None:
    from storage_migrate.migrate.run import quiet_collector

    before = gc.get_threshold()
    frozen = gc.get_freeze_count()  # 0, or on Python 3.12 what the interpreter starts with
    with quiet_collector():
        assert gc.get_threshold()[0] >= 10_000
        assert gc.get_freeze_count() > frozen + 1000  # the objects of Django and botocore
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() <= frozen


def test_a_run_leaves_an_applications_own_freeze_alone() -> None:
    from storage_migrate.migrate.run import quiet_collector

    gc.freeze()  # as a preforking server does before it forks its workers
    try:
        frozen = gc.get_freeze_count()
        since = [[i] for i in range(20_000)]  # tracked objects made after the freeze
        with quiet_collector():
            inside = gc.get_freeze_count()
        after = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    # A frozen object may still be freed (its count drops by it), but none is frozen anew and
    # the application's freeze is not undone.
    assert frozen - 1000 < inside <= frozen, len(since)
    assert frozen - 1000 < after <= frozen
