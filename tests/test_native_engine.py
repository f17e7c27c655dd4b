"""The native engine (awscrt) against moto's real HTTP server: the bytes, names, headers and
errors of its PUTs, when it turns itself off, and that migrate_storage really sends through it."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.base import ContentFile
from moto import mock_aws

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage
from storage_migrate.conf import Conf
from storage_migrate.endpoints.native import NativePut, native_put
from storage_migrate.testing import free_port, s3_client
from tests.conftest import reset_storages
from tests.faults import faulty_proxy
from tests.helpers import MiB, md5

T = TypeVar("T")

KEYS = [
    "plain.txt",
    "holiday photo.jpg",
    "scan+copy.pdf",
    "tom & jerry.csv",
    "100% done %41.txt",
    "façade ñandú 日本語.txt",
    "deep/nested/folders/leaf.bin",
    "it's (1) !*~$@=;:,.txt",
    "what?#[x].txt",
    "empty.txt",
]


def session() -> Any:
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


def client_for(endpoint: str | None, **config: Any) -> Any:
    options = {"request_checksum_calculation": "when_required", **config}
    return session().client("s3", endpoint_url=endpoint, config=Config(**options))


def native_for(endpoint: str, bucket: str, conf: Conf | None = None) -> NativePut:
    """The native engine for a bucket at an endpoint; ENGINE="native", so it cannot be None."""
    put = native_put(
        client_for(endpoint),
        bucket,
        dataclasses.replace(conf or Conf(), ENGINE="native"),
        credentials=session().get_credentials(),
    )
    assert put is not None
    return put


def content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


def send(native: NativePut, key: str, data: bytes, **params: Any) -> str:
    """One PUT from memory, with the Content-MD5 of the data unless one is given."""
    params.setdefault("ContentMD5", content_md5(data))
    return native.put(key, io.BytesIO(data), None, len(data), **params)


def within(seconds: float, call: Callable[[], T]) -> T:
    """call() in a thread; its result or exception, or a failed test if it takes longer."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]


@pytest.fixture
def native(moto_endpoint: str, http_bucket: str) -> Iterator[NativePut]:
    put = native_for(moto_endpoint, http_bucket)
    yield put
    put.close()


def keys(endpoint: str, bucket: str) -> list[str]:
    listing = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


# --- single PUTs ------------------------------------------------------------------------------


def test_put_lands_the_exact_bytes_under_awkward_keys(
    native: NativePut, moto_endpoint: str, http_bucket: str
) -> None:
    contents = {key: f"bytes of {key}\n".encode() * (i + 1) for i, key in enumerate(KEYS)}
    contents["empty.txt"] = b""

    etags = {key: send(native, key, data) for key, data in contents.items()}

    s3 = s3_client(moto_endpoint)
    assert keys(moto_endpoint, http_bucket) == sorted(contents)  # %41 is not decoded to A
    for key, data in contents.items():
        assert s3.get_object(Bucket=http_bucket, Key=key)["Body"].read() == data, key
        assert etags[key].strip('"') == md5(data), key


def test_put_sends_headers_and_metadata(
    native: NativePut, moto_endpoint: str, http_bucket: str
) -> None:
    data = b"%PDF-1.7 not really"

    etag = send(
        native,
        "docs/report 1.pdf",
        data,
        ContentType="application/pdf",
        CacheControl="max-age=86400",
        ContentDisposition='attachment; filename="report 1.pdf"',
        Metadata={"md5": md5(data)},
    )

    assert etag == f'"{md5(data)}"'
    head = s3_client(moto_endpoint).head_object(Bucket=http_bucket, Key="docs/report 1.pdf")
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "application/pdf"
    assert head["CacheControl"] == "max-age=86400"
    assert head["ContentDisposition"] == 'attachment; filename="report 1.pdf"'
    assert head["Metadata"] == {"md5": md5(data)}
    # moto keeps the Content-MD5 it was sent: the header reaches the store
    assert head["ResponseMetadata"]["HTTPHeaders"]["content-md5"] == content_md5(data)


def test_each_put_carries_its_own_md5s(
    native: NativePut, moto_endpoint: str, http_bucket: str
) -> None:
    """Headers are serialized once per set of parameters, with stand-ins for the MD5s: every
    object still gets its own Content-MD5 and md5 metadata, and other parameters their values."""
    client = s3_client(moto_endpoint)
    bodies = {f"many/{i}.txt": f"body number {i}".encode() * (i + 1) for i in range(4)}
    types = ["text/plain", "text/plain", "text/csv", "text/plain"]
    for (key, data), content_type in zip(bodies.items(), types, strict=True):
        send(native, key, data, ContentType=content_type, Metadata={"md5": md5(data)})

    for (key, data), content_type in zip(bodies.items(), types, strict=True):
        head = client.head_object(Bucket=http_bucket, Key=key)
        assert head["Metadata"] == {"md5": md5(data)}
        assert head["ResponseMetadata"]["HTTPHeaders"]["content-md5"] == content_md5(data)
        assert head["ContentType"] == content_type
        assert client.get_object(Bucket=http_bucket, Key=key)["Body"].read() == data


def test_a_file_body_is_sent_from_its_path(
    native: NativePut, moto_endpoint: str, http_bucket: str, tmp_path: Path
) -> None:
    data = bytes(range(256)) * (3 * MiB // 256) + b"tail"
    path = tmp_path / "large file.bin"
    path.write_bytes(data)

    etag = native.put("from/a file.bin", None, str(path), len(data), ContentMD5=content_md5(data))

    assert etag.strip('"') == md5(data)
    body = s3_client(moto_endpoint).get_object(Bucket=http_bucket, Key="from/a file.bin")["Body"]
    assert body.read() == data


def test_if_none_match_refuses_to_replace_an_existing_key(
    native: NativePut, moto_endpoint: str, http_bucket: str
) -> None:
    send(native, "taken.txt", b"first", IfNoneMatch="*")

    with pytest.raises(ClientError) as refused:
        send(native, "taken.txt", b"second", IfNoneMatch="*")

    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    body = s3_client(moto_endpoint).get_object(Bucket=http_bucket, Key="taken.txt")["Body"]
    assert body.read() == b"first"


@pytest.mark.parametrize(
    ("digest", "code"),
    [(content_md5(b"other bytes"), "BadDigest"), ("not a digest", "InvalidDigest")],
    ids=["mismatch", "malformed"],
)
def test_a_wrong_content_md5_is_a_client_error_and_leaves_no_object(
    moto_endpoint: str, http_bucket: str, digest: str, code: str
) -> None:
    """moto's server does not check Content-MD5; S3 does, as the proxy in front of it here."""
    with faulty_proxy(moto_endpoint, rate=0, check_md5=True) as s3:
        native = native_for(s3.url, http_bucket)
        assert send(native, "good.txt", b"good").strip('"') == md5(b"good")

        with pytest.raises(ClientError) as refused:
            send(native, "bad.txt", b"the bytes", ContentMD5=digest)

    assert refused.value.response["Error"]["Code"] == code
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert keys(moto_endpoint, http_bucket) == ["good.txt"]


def test_serves_only_parameters_that_are_plain_headers() -> None:
    assert NativePut.serves({"ContentType": "image/png", "Metadata": {}, "IfNoneMatch": "*"})
    assert NativePut.serves({})
    assert not NativePut.serves({"ContentType": "image/png", "SSECustomerKey": "k" * 32})
    assert not NativePut.serves({"ChecksumAlgorithm": "CRC32"})


# --- when it turns itself off ------------------------------------------------------------------


def native_or_none(client: Any, bucket: str, engine: str, **conf: Any) -> NativePut | None:
    return native_put(
        client, bucket, Conf(ENGINE=engine, **conf), credentials=session().get_credentials()
    )


def test_off_inside_moto_in_process_mock() -> None:
    with mock_aws():
        client_for(None).create_bucket(Bucket="mocked")

        assert native_or_none(client_for(None), "mocked", "auto") is None
        with pytest.raises(ConfigurationError, match="native"):
            native_or_none(client_for(None), "mocked", "native")


def test_on_against_the_http_server_unless_boto3_is_asked_for(
    moto_endpoint: str, http_bucket: str
) -> None:
    assert isinstance(native_or_none(client_for(moto_endpoint), http_bucket, "auto"), NativePut)
    assert native_or_none(client_for(moto_endpoint), http_bucket, "boto3") is None


@pytest.mark.parametrize(
    ("config", "conf"),
    [
        ({"proxies": {"http": "http://127.0.0.1:9"}}, {}),
        ({"signature_version": UNSIGNED}, {}),
        ({}, {"REQUEST_CHECKSUM_CALCULATION": "when_supported"}),
    ],
    ids=["proxy", "unsigned", "crc-checksums"],
)
def test_off_for_what_it_cannot_honour(
    moto_endpoint: str, http_bucket: str, config: dict[str, Any], conf: dict[str, Any]
) -> None:
    client = client_for(moto_endpoint, **config)

    assert native_or_none(client, http_bucket, "auto", **conf) is None
    with pytest.raises(ConfigurationError):
        native_or_none(client, http_bucket, "native", **conf)


# --- failures ----------------------------------------------------------------------------------


def test_an_unreachable_endpoint_raises_and_does_not_hang(http_bucket: str) -> None:
    native = native_for(f"http://127.0.0.1:{free_port()}", http_bucket, Conf(MAX_ATTEMPTS=1))

    with pytest.raises(BotoCoreError, match=r"(?i)refused"):
        within(30, lambda: send(native, "nowhere.txt", b"x"))


class _Refusing(ThreadingHTTPServer):
    """A store that answers every PUT with one S3 error, and counts the requests."""

    daemon_threads = True

    def __init__(self, status: int, code: str) -> None:
        super().__init__(("127.0.0.1", 0), _RefusingHandler)
        self.status, self.code = status, code
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RefusingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Refusing

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests += 1
        payload = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{self.server.code}</Code>'
            "<Message>refused by the test</Message></Error>"
        ).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def refusing(status: int, code: str) -> Iterator[_Refusing]:
    server = _Refusing(status, code)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, "AccessDenied"),
        (404, "NoSuchBucket"),
        (501, "NotImplemented"),  # a store without conditional writes: engine.py looks for it
        (500, "InternalError"),
        (503, "SlowDown"),
    ],
)
def test_an_error_answer_is_a_client_error_with_the_store_code(
    http_bucket: str, status: int, code: str
) -> None:
    """As boto3 raises it (after its retries, for the retryable ones)."""
    with refusing(status, code) as store:
        native = native_for(store.url, http_bucket, Conf(MAX_ATTEMPTS=2))

        with pytest.raises(ClientError) as refused:
            within(60, lambda: send(native, "k.txt", b"x"))

    assert refused.value.response["Error"]["Code"] == code
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


@pytest.mark.parametrize("attempts", [1, 3])
def test_max_attempts_is_the_number_of_requests(http_bucket: str, attempts: int) -> None:
    """As with boto3 (botocore's max_attempts): MAX_ATTEMPTS=1 is one request, no retry."""
    with refusing(503, "SlowDown") as store:
        native = native_for(store.url, http_bucket, Conf(MAX_ATTEMPTS=attempts))

        with pytest.raises((ClientError, BotoCoreError)):
            within(60, lambda: send(native, "busy.txt", b"x"))

    assert store.requests == attempts


@pytest.mark.slow
def test_a_silent_server_fails_within_read_timeout(http_bucket: str) -> None:
    """A store that accepts the connection and never answers: boto3 gives up after
    READ_TIMEOUT, and so must the native engine (not after the runtime's own 30 s)."""
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    conf = Conf(MAX_ATTEMPTS=1, READ_TIMEOUT=2, CONNECT_TIMEOUT=2)
    try:
        boto = client_for(url, read_timeout=2, connect_timeout=2, retries={"max_attempts": 1})
        started = time.monotonic()
        with pytest.raises(BotoCoreError):
            boto.put_object(Bucket=http_bucket, Key="k", Body=b"x")
        assert time.monotonic() - started < 10  # what boto3 does with these settings

        native = native_for(url, http_bucket, conf)
        with pytest.raises(BotoCoreError):
            within(10, lambda: send(native, "k", b"x"))
    finally:
        silent.close()


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture
def s3_over_http(settings: Any, moto_endpoint: str, http_bucket: str) -> Iterator[str]:
    """The `s3` storage alias pointed at a fresh bucket on moto's HTTP server."""
    settings.AWS_S3_ENDPOINT_URL = moto_endpoint
    settings.AWS_STORAGE_BUCKET_NAME = http_bucket
    reset_storages()
    yield http_bucket
    reset_storages()


@pytest.fixture
def native_puts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, str | None]]:
    """Every PUT the native engine sends (key, whether from memory, path), through
    NativePut.start (put() calls it too); the real method runs."""
    calls: list[tuple[str, bool, str | None]] = []
    real_start = NativePut.start

    def start(self: NativePut, key: str, body: Any, path: str | None, size: int, **kw: Any) -> Any:
        calls.append((key, body is not None, path))
        return real_start(self, key, body, path, size, **kw)

    monkeypatch.setattr(NativePut, "start", start)
    return calls


def make_named(media_root: Path, name: str, data: bytes) -> FileManager:
    """A row whose file has exactly this name (Django's get_valid_name would change it)."""
    row = FileManager.objects.create(file=ContentFile(data, name="upload.bin"))
    wanted = f"{str(row.file.name).rsplit('/', 1)[0]}/{name}"
    (media_root / row.file.name).rename(media_root / wanted)
    FileManager.objects.filter(pk=row.pk).update(file=wanted, object_key=wanted)
    row.refresh_from_db()
    return row


@pytest.mark.django_db
def test_migrate_storage_sends_single_puts_through_the_native_engine(
    s3_over_http: str,
    moto_endpoint: str,
    media_root: Path,
    settings: Any,
    native_puts: list[tuple[str, bool, str | None]],
) -> None:
    settings.STORAGE_MIGRATE = {"MULTIPART_THRESHOLD": 5 * MiB, "ENGINE": "native"}
    contents = {
        "holiday photo.jpg": b"\xff\xd8\xff\xe0" * 100,
        "scan+copy & more %41.pdf": b"%PDF" * 300,
        "façade 日本語.txt": "ünïcödé\n".encode() * 10,
        "empty.txt": b"",
        "streamed.bin": bytes(range(256)) * (2 * MiB // 256),  # above IN_MEMORY_LIMIT: a file
        "multipart.bin": b"m" * (6 * MiB),  # at the threshold: boto3's transfer manager
    }
    rows = {name: make_named(media_root, name, data) for name, data in contents.items()}
    FileManager.objects.update(checksum="", file_size=None)

    report = migrate_storage(to="s3")

    assert (report.copied, report.problems) == (6, []), report.problems
    by_key = {key: (in_memory, path) for key, in_memory, path in native_puts}
    assert len(native_puts) == len(by_key)  # one PUT per file
    in_memory = [
        str(r.file.name) for n, r in rows.items() if n not in ("streamed.bin", "multipart.bin")
    ]
    assert {key: by_key.get(key) for key in in_memory} == dict.fromkeys(in_memory, (True, None))
    assert str(rows["multipart.bin"].file.name) not in by_key
    # A file above IN_MEMORY_LIMIT goes to boto3 (engine.py), or is sent from its path.
    streamed = str(rows["streamed.bin"].file.name)
    assert by_key.get(streamed, (False, str(media_root / streamed))) == (
        False,
        str(media_root / streamed),
    )
    s3 = s3_client(moto_endpoint)
    for name, row in rows.items():
        row.refresh_from_db()
        data = contents[name]
        assert (row.bucket, row.object_key) == (s3_over_http, row.file.name), name
        assert (row.checksum, row.file_size) == (md5(data), len(data)), name
        obj = s3.get_object(Bucket=s3_over_http, Key=row.object_key)
        assert obj["Body"].read() == data, name
        assert obj["Metadata"]["md5"] == md5(data), name
        assert obj["CacheControl"] == "max-age=86400", name


@pytest.mark.django_db
def test_migrate_storage_with_engine_boto3_never_uses_it(
    s3_over_http: str,
    media_root: Path,
    settings: Any,
    native_puts: list[tuple[str, bool, str | None]],
) -> None:
    settings.STORAGE_MIGRATE = {"ENGINE": "boto3"}
    row = make_named(media_root, "a b.txt", b"boto3 bytes")

    report = migrate_storage(to="s3")

    assert (report.copied, report.problems) == (1, [])
    assert native_puts == []
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (s3_over_http, md5(b"boto3 bytes"))


@pytest.mark.django_db
def test_engine_native_under_moto_mock_is_a_configuration_error(
    s3_bucket: str, settings: Any, native_puts: list[tuple[str, bool, str | None]]
) -> None:
    """ConfigurationError promises that nothing was written: the run must not start."""
    settings.STORAGE_MIGRATE = {"ENGINE": "native"}
    row = FileManager.objects.create(file=ContentFile(b"x", name="x.txt"))

    with pytest.raises(ConfigurationError, match="native"):
        migrate_storage(to="s3")

    row.refresh_from_db()
    assert row.bucket == ""
    assert s3_client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
