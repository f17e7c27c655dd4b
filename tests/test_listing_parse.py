"""Listings parsed by storage_migrate.endpoints.s3parse give what botocore's own parser gives,
entry by entry, for every shape an entry can take; a disguised error or a page cut short is
still caught."""

from __future__ import annotations

import random
from typing import Any, cast

import pytest
from botocore import handlers, parsers
from botocore.session import get_session

from storage_migrate.endpoints.s3parse import install, listing_parser_class, looks_like_error
from storage_migrate.testing import s3_client

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HOSTILE = [
    "a b.txt",
    "ñandú/façade.bin",
    "日本語.png",
    "tom &amp; jerry",
    "x&lt;y&gt;.txt",
    "%41+%2F",
]


def entry(key: str, rng: random.Random) -> str:
    parts = [
        f"<Key>{key}</Key>",
        "<LastModified>2026-11-21T09:35:16.782Z</LastModified>",
        f'<ETag>"{rng.randbytes(16).hex()}{rng.choice(["", "-3"])}"</ETag>',
        f"<Size>{rng.randrange(0, 10**12)}</Size>",
        f"<StorageClass>{rng.choice(['STANDARD', 'GLACIER'])}</StorageClass>",
    ]
    if rng.random() < 0.3:
        parts += [
            f"<ChecksumAlgorithm>{a}</ChecksumAlgorithm>"
            for a in ["CRC32", "SHA256"][: rng.randrange(1, 3)]
        ]
    if rng.random() < 0.2:
        parts.append("<ChecksumType>FULL_OBJECT</ChecksumType>")
    if rng.random() < 0.2:
        parts.append("<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>")
    if rng.random() < 0.1:
        parts.append(
            "<RestoreStatus><IsRestoreInProgress>true</IsRestoreInProgress></RestoreStatus>"
        )
    if rng.random() < 0.1:
        parts.append("<SomethingNew>x</SomethingNew>")  # a tag this botocore does not know
    if rng.random() < 0.05:
        parts.append("<ETag></ETag>")  # repeated
    if rng.random() < 0.05:
        parts[2] = "<ETag/>"
    rng.shuffle(parts)
    return "<Contents>" + "".join(parts) + "</Contents>"


def page(rng: random.Random, count: int, namespace: bool = True) -> bytes:
    keys = [f"file_manager/{rng.choice(HOSTILE)} {i}" for i in range(count)]
    body = "".join(entry(k, rng) for k in keys)
    prefixes = "".join(f"<CommonPrefixes><Prefix>p{i}/</Prefix></CommonPrefixes>" for i in range(3))
    xmlns = f' xmlns="{NS}"' if namespace else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult{xmlns}><Name>b</Name>'
        f"<Prefix>file_manager/</Prefix><KeyCount>{count}</KeyCount><MaxKeys>1000</MaxKeys>"
        f"<IsTruncated>false</IsTruncated>{body}{prefixes}</ListBucketResult>"
    ).encode()


def plain(value: Any) -> Any:
    """Parsed results made comparable: botocore leaves a repeated scalar tag as the XML elements
    themselves (on both paths), which compare by identity."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "tag"):
        return ("element", value.tag, value.text)
    return value


def parse(parser_class: type[Any], body: bytes, operation: str) -> Any:
    model = get_session().get_service_model("s3").operation_model(operation)
    parser = parser_class(timestamp_parser=lambda value: value)
    return parser.parse({"status_code": 200, "headers": {}, "body": body}, model.output_shape)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("operation", ["ListObjectsV2", "ListObjects"])
def test_a_page_parses_as_botocore_parses_it(seed: int, operation: str) -> None:
    rng = random.Random(seed)
    body = page(rng, rng.randrange(0, 60), namespace=seed % 4 != 0)
    ours = plain(parse(listing_parser_class(), body, operation))
    theirs = plain(parse(parsers.RestXMLParser, body, operation))
    assert ours == theirs
    assert len(theirs.get("Contents", [])) == body.count(b"<Contents>")


def test_the_direct_path_is_taken_for_plain_entries() -> None:
    """Else the equality above would hold trivially."""
    calls = []
    parser_class = listing_parser_class()

    class Counting(parser_class):  # type: ignore[misc, valid-type]
        def _table(self, shape: Any) -> Any:
            calls.append(shape.name)
            return super()._table(shape)

    rng = random.Random(1)
    body = page(rng, 5)
    parse(Counting, body, "ListObjectsV2")
    assert "Object" in calls


def botocore_says_error(body: bytes) -> bool:
    check = getattr(handlers, "_looks_like_special_case_error")  # noqa: B009
    return bool(check(200, body))


def test_a_disguised_error_or_a_page_cut_short_is_caught_as_botocore_catches_it() -> None:
    body = page(random.Random(3), 4)
    for end in range(len(body) + 1):
        cut = body[:end]
        if not cut.strip():
            continue
        assert looks_like_error(cut) is botocore_says_error(cut), (end, cut[-40:])
    for error in (
        b"<Error><Code>InternalError</Code></Error>",
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code></Error>\n',
    ):
        assert looks_like_error(error) and botocore_says_error(error)
    assert not looks_like_error(body + b"\n")


def test_a_disguised_error_in_a_listing_becomes_a_500() -> None:
    session = get_session()
    install(session)
    events = session.get_component("event_emitter")
    model = session.get_service_model("s3").operation_model("ListObjectsV2")
    for body, status in (
        (b"<Error><Code>InternalError</Code></Error>", 500),
        (page(random.Random(2), 3)[:-30], 500),
        (page(random.Random(2), 3), 200),
    ):
        response = {"status_code": 200, "headers": {}, "body": body}
        events.emit(
            "before-parse.s3.ListObjectsV2",
            operation_model=model,
            response_dict=response,
            customized_response_dict={},
        )
        assert response["status_code"] == status


def test_a_real_listing_through_the_endpoints_client_equals_a_plain_clients(
    s3_bucket: str,
) -> None:
    from django.core.files.storage import storages

    from storage_migrate.conf import get_conf
    from storage_migrate.endpoints.s3 import S3Endpoint

    plain = s3_client()
    names = [f"d/{n} {i}.bin" for i, n in enumerate(HOSTILE * 3)] + ["d/a&b<c>.txt", "d/ \t.txt"]
    for i, name in enumerate(names):
        plain.put_object(Bucket=s3_bucket, Key=name, Body=b"x" * i, ChecksumAlgorithm="CRC32")
    endpoint = S3Endpoint("s3", storages["s3"], get_conf())
    ours: dict[str, Any] = dict(endpoint.client.list_objects_v2(Bucket=s3_bucket, Prefix="d/"))
    theirs: dict[str, Any] = dict(plain.list_objects_v2(Bucket=s3_bucket, Prefix="d/"))
    assert (
        type(
            cast(Any, endpoint.client)._endpoint._response_parser_factory.create_parser("rest-xml")
        )
        is listing_parser_class()
    )
    for listing in (ours, theirs):
        listing.pop("ResponseMetadata")
        for item in listing["Contents"]:
            item["LastModified"] = item["LastModified"].timestamp()  # parsed by other parsers
    assert ours == theirs
    assert sorted(o["Key"] for o in ours["Contents"]) == sorted(names)
