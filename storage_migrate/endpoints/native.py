"""The native hot path: single PUTs sent and signed by the AWS Common Runtime's S3 client (awscrt,
AWS's own native runtime, the one boto3's ``crt`` extra installs).

botocore spends about 2 ms of Python per small PUT (event hooks, endpoint rules, signing,
parsing); the runtime signs and sends in C, off the GIL. botocore still does what it is cheap
at and what must match boto3 exactly: it serializes every request (headers, the key's
percent-encoding), resolves the bucket's address once (one HEAD, answered just before it
would be sent, shows the host, path-style or virtual-hosted addressing and the signing region)
and parses every error into a ``ClientError``, so the
rest of the code sees what boto3 would have raised. Anything this engine cannot serve as the
storage is configured (proxies, client certificates, customer-key encryption, unsigned
requests, CRC checksums asked for) goes to boto3; so do files too large to hold in memory
(see s3write.py) and multipart uploads."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO, Any
from urllib.parse import urlsplit

from ..conf import Conf

logger = logging.getLogger("storage_migrate")
# PutObject parameters that botocore turns into plain headers, with nothing computed by an event
# hook (customer-key encryption is: its key MD5). Any other parameter goes to boto3.
HEADER_PARAMS = frozenset(
    {
        "ACL",
        "BucketKeyEnabled",
        "CacheControl",
        "ContentDisposition",
        "ContentEncoding",
        "ContentLanguage",
        "ContentMD5",
        "ContentType",
        "Expires",
        "GrantFullControl",
        "GrantRead",
        "GrantReadACP",
        "GrantWriteACP",
        "IfNoneMatch",
        "Metadata",
        "ObjectLockLegalHoldStatus",
        "ObjectLockMode",
        "ObjectLockRetainUntilDate",
        "SSEKMSEncryptionContext",
        "SSEKMSKeyId",
        "ServerSideEncryption",
        "StorageClass",
        "Tagging",
        "WebsiteRedirectLocation",
    }
)


_PROBE_KEY = "storage-migrate-probe"
_B64_STANDIN = "storage-migrate-content-md5"
_HEX_STANDIN = "storage-migrate-md5-metadata"
# The runtime's errors for answers it retried until it gave up: the answer, as S3 sends it.
_GAVE_UP = {
    "AWS_ERROR_S3_SLOW_DOWN": (503, "SlowDown"),
    "AWS_ERROR_S3_INTERNAL_ERROR": (500, "InternalError"),
}


class Unsupported(Exception):
    """The native engine cannot serve this storage as configured; boto3 will."""


class NativePut:
    """Single PUTs through ``awscrt.s3.S3Client``, for one bucket of one boto3 client."""

    def __init__(
        self, client: Any, bucket: str, conf: Conf, *, credentials: Any, verify: Any = None
    ) -> None:
        try:
            from awscrt import auth, http, io, s3
        except ImportError:  # pragma: no cover - awscrt is a dependency
            raise Unsupported("awscrt is not installed") from None
        from botocore import UNSIGNED
        from botocore.parsers import create_parser
        from botocore.serialize import create_serializer
        from botocore.utils import percent_encode

        config = client.meta.config
        if conf.REQUEST_CHECKSUM_CALCULATION != "when_required":
            raise Unsupported("CRC request checksums were asked for")
        if config.proxies or config.client_cert:
            raise Unsupported("a proxy or a client certificate is configured")
        if config.signature_version is UNSIGNED:
            raise Unsupported("requests are unsigned")
        if bucket.endswith("--x-s3"):
            raise Unsupported("S3 Express directory bucket")
        if credentials is None:
            raise Unsupported("no credentials")

        url, region = _address(client, bucket)
        split = urlsplit(url)
        if split.path == f"/{bucket}/{_PROBE_KEY}":
            self._prefix = f"/{bucket}"
        elif split.path == f"/{_PROBE_KEY}":
            self._prefix = ""
        else:
            raise Unsupported(f"unexpected object address {split.path!r}")
        self._host = split.netloc
        self.bucket = bucket
        self.region = region

        tls = None
        if split.scheme == "https":
            options = io.TlsContextOptions()
            ca_bundle = verify if isinstance(verify, str) else os.environ.get("AWS_CA_BUNDLE")
            if verify is False:
                options.verify_peer = False
            elif ca_bundle:
                options.override_default_trust_store_from_path(ca_filepath=ca_bundle)
            tls = io.ClientTlsContext(options).new_connection_options()
            tls.set_server_name(split.hostname or "")
        elif split.scheme != "http":
            raise Unsupported(f"scheme {split.scheme!r}")

        def current() -> Any:  # botocore's credentials, refreshed as botocore would
            frozen = credentials.get_frozen_credentials()
            return auth.AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

        provider = auth.AwsCredentialsProvider.new_delegate(current)
        self._signing = s3.create_default_s3_signing_config(
            region=self.region, credential_provider=provider
        )
        self._s3 = s3
        self._http = http
        self._client = s3.S3Client(
            bootstrap=io.ClientBootstrap.get_or_create_static_default(),
            region=self.region,
            signing_config=self._signing,
            tls_mode=s3.S3RequestTlsMode.ENABLED if tls else s3.S3RequestTlsMode.DISABLED,
            tls_connection_options=tls,
            # Never split: what goes in parts goes to boto3's transfer manager.
            part_size=8 * 1024 * 1024,
            multipart_upload_threshold=1 << 62,
            # MAX_ATTEMPTS counts requests, as botocore's max_attempts does (0 retries would
            # mean the runtime's default, 5).
            retry_config=(
                s3.S3RetryConfig(max_retries=conf.MAX_ATTEMPTS - 1)
                if conf.MAX_ATTEMPTS > 1
                else s3.S3RetryConfig(retry_mode=s3.S3RetryMode.NONE)
            ),
            connect_timeout_ms=int(conf.CONNECT_TIMEOUT * 1000),
        )
        self._operation = client.meta.service_model.operation_model("PutObject")
        self._serializer = create_serializer("rest-xml", include_validation=False)
        self._parser = create_parser("rest-xml")
        self._encode = percent_encode
        self._templates: dict[str, list[tuple[str, str]]] = {}
        self._user_agent = f"django-storage-migrate awscrt/{_awscrt_version()}"
        # The runtime has no read timeout: a store that accepts a request and never answers
        # would hold it for the runtime's own 30 s an attempt. A request gets what boto3 would
        # give it at most, then is cancelled.
        self._budget = (conf.CONNECT_TIMEOUT + conf.READ_TIMEOUT) * conf.MAX_ATTEMPTS
        self._endpoint_url = f"{split.scheme}://{self._host}"

    @staticmethod
    def serves(params: dict[str, Any]) -> bool:
        return set(params) <= HEADER_PARAMS

    def put(
        self, key: str, body: IO[bytes] | None, path: str | None, size: int, **params: Any
    ) -> str:
        """PUT one object and wait for it; see ``start``."""
        return self.start(key, body, path, size, **params)()

    def start(
        self, key: str, body: IO[bytes] | None, path: str | None, size: int, **params: Any
    ) -> Callable[[], str]:
        """Send one PUT from memory (``body``) or a file (``path``) and return at once; the
        returned callable waits for the answer and returns the object's ETag as the store sent
        it, or raises botocore's ``ClientError`` for an error answer, as boto3 would."""
        headers = self._http.HttpHeaders(
            [
                ("Host", self._host),
                ("Content-Length", str(size)),
                ("User-Agent", self._user_agent),
                *self._headers(params),
            ]
        )
        http_request = self._http.HttpRequest(
            method="PUT",
            # The key encoded as botocore's serializer encodes a greedy URI label.
            path=f"{self._prefix}/{self._encode(key, safe='/~')}",
            headers=headers,
            body_stream=body,
        )
        answer: dict[str, Any] = {}

        def on_headers(status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
            answer["headers"] = headers

        crt_request = self._client.make_request(
            type=self._s3.S3RequestType.PUT_OBJECT,
            request=http_request,
            send_filepath=path,
            on_headers=on_headers,
        )

        started = time.monotonic()

        def wait() -> str:
            future = crt_request.finished_future
            try:
                error = future.exception(timeout=self._budget - (time.monotonic() - started))
            except FutureTimeout:
                from botocore.exceptions import ReadTimeoutError

                crt_request.cancel()
                with contextlib.suppress(Exception):
                    future.exception(timeout=5)
                raise ReadTimeoutError(endpoint_url=self._endpoint_url) from None
            if error is not None:
                self._raise(error)
            for name, value in answer.get("headers") or []:
                if name.lower() == "etag":
                    return str(value)
            return ""

        return wait

    def _headers(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        """The headers botocore's serializer makes of these parameters. The objects of a run
        differ only in their MD5s, so the serializer runs once for each distinct rest, with
        stand-ins for the MD5s, which are put back here."""
        metadata = params.get("Metadata") or {}
        actual = {_B64_STANDIN: params.get("ContentMD5"), _HEX_STANDIN: metadata.get("md5")}
        shape = dict(params)
        if actual[_B64_STANDIN] is not None:
            shape["ContentMD5"] = _B64_STANDIN
        if actual[_HEX_STANDIN] is not None:
            shape["Metadata"] = {**metadata, "md5": _HEX_STANDIN}
        cache_key = repr(sorted(shape.items()))
        template = self._templates.get(cache_key)
        if template is None:
            serialized = self._serializer.serialize_to_request(
                {"Bucket": self.bucket, "Key": _PROBE_KEY, **shape}, self._operation
            )
            template = [(str(k), str(v)) for k, v in serialized["headers"].items()]
            wanted = {standin for standin, value in actual.items() if value is not None}
            if wanted - {value for _, value in template}:  # a stand-in did not survive
                serialized = self._serializer.serialize_to_request(
                    {"Bucket": self.bucket, "Key": _PROBE_KEY, **params}, self._operation
                )
                return [(str(k), str(v)) for k, v in serialized["headers"].items()]
            if len(self._templates) >= 256:
                self._templates.clear()
            self._templates[cache_key] = template
        return [(name, actual.get(value) or value) for name, value in template]

    def _raise(self, error: BaseException) -> None:
        from botocore.awsrequest import HeadersDict
        from botocore.exceptions import ClientError, HTTPClientError

        status = getattr(error, "status_code", None)
        headers = getattr(error, "headers", None)
        if not status or headers is None:
            known = _GAVE_UP.get(getattr(error, "name", ""))
            if known is None:  # no answer: the connection failed
                raise HTTPClientError(error=error)
            # The runtime's retries ended on an answer it names but does not pass on.
            status, code = known
            answer: Any = {"Error": {"Code": code, "Message": str(error)}}
            answer["ResponseMetadata"] = {"HTTPStatusCode": status}
            raise ClientError(answer, "PutObject")
        parsed = self._parser.parse(
            {
                "status_code": status,
                "headers": HeadersDict(headers),
                "body": getattr(error, "body", None) or b"",
            },
            self._operation.output_shape,
        )
        if not parsed.get("Error", {}).get("Code"):
            parsed.setdefault("Error", {})["Code"] = str(status)
        raise ClientError(parsed, "PutObject")

    def close(self) -> None:
        # The runtime's threads finish its requests; dropping the client releases them.
        self._client = None


class _NoBody:
    def stream(self, **_: Any) -> Any:
        return iter(())


_PROBE_STATUS = 418  # no store answers a HEAD with it, and botocore does not retry it


def _address(client: Any, bucket: str) -> tuple[str, str]:
    """The URL and signing region of a request for an object of this bucket, as botocore builds
    and signs it (endpoint rules, addressing style, region): a HEAD answered by us just before it
    would be sent. If another handler answers it first (moto's in-process mock, a stubber),
    requests do not go to the network, and neither may ours."""
    from botocore.awsrequest import AWSResponse, HTTPHeaders
    from botocore.exceptions import ClientError

    seen: dict[str, str] = {}

    def answer(request: Any, **_: Any) -> Any:
        seen["url"] = request.url
        seen["authorization"] = str(request.headers.get("Authorization", b""), "ascii")
        return AWSResponse(request.url, _PROBE_STATUS, HTTPHeaders(), _NoBody())

    # "before-send", not more specific: handlers of the same event name run in the order they
    # were registered (ours last), and the first answer wins.
    client.meta.events.register_last("before-send", answer, unique_id="storage-migrate-address")
    try:
        client.head_object(Bucket=bucket, Key=_PROBE_KEY)
        status = 200
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    finally:
        client.meta.events.unregister("before-send", unique_id="storage-migrate-address")
    if status != _PROBE_STATUS or "url" not in seen:
        raise Unsupported("requests are answered before they reach the network (a mock?)")
    # "AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/s3/aws4_request, SignedHeaders=..."
    algorithm, _, rest = seen["authorization"].partition(" ")
    scope = rest.split(",")[0].removeprefix("Credential=").split("/")
    if algorithm != "AWS4-HMAC-SHA256" or len(scope) != 5 or scope[3] != "s3":
        raise Unsupported(f"requests are not signed with SigV4 for s3 ({algorithm or 'unsigned'})")
    return seen["url"], scope[2]


def _awscrt_version() -> str:
    try:
        from importlib.metadata import version

        return version("awscrt")
    except Exception:  # pragma: no cover
        return "unknown"


def native_put(
    client: Any, bucket: str, conf: Conf, *, credentials: Any, verify: Any = None
) -> NativePut | None:
    """The native engine for this bucket, or None (and why, at debug level) where boto3 must
    serve it: ``STORAGE_MIGRATE["ENGINE"] = "boto3"``, or a configuration it cannot honour."""
    if conf.ENGINE == "boto3":
        return None
    try:
        return NativePut(client, bucket, conf, credentials=credentials, verify=verify)
    except Unsupported as exc:
        if conf.ENGINE == "native":
            from ..errors import ConfigurationError

            raise ConfigurationError(f"STORAGE_MIGRATE['ENGINE'] is 'native', but {exc}.") from None
        logger.debug("native engine not used for bucket %s: %s", bucket, exc)
        return None
