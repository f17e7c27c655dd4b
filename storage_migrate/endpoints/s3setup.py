"""Before an S3 run: is the endpoint a URL, does the bucket answer (quickly, whatever the copy's
timeouts), do the credentials work, and (before the first write) does the store honour
conditional writes?"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ..log import log
from .places import strip_userinfo

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from .s3 import S3Endpoint


# The preflight's requests (quick_client): QUICK_ATTEMPTS requests, each of at most QUICK_TIMEOUT
# to connect and QUICK_TIMEOUT for an answer, and backoff between them: a store that does not
# answer fails in under 25 s (the README promises well under 30 s).
# The preflight's requests (quick_client): 2 attempts, each of at most 5 s to connect and 5 s
# for an answer, and under 1 s of backoff between them: a store that does not answer fails one
# request in about 21 s (the README promises well under 30 s).
QUICK_ATTEMPTS = 3  # a flaky store (a 503, a dropped connection) gets a second retry
QUICK_TIMEOUT = 3.5  # 3 x (3.5 + 3.5) s and backoff: under 25 s


def check_endpoint_url(alias: str, url: str | None) -> None:
    """An endpoint URL must be http(s)://host[:port][/path]; botocore's ValueError would be a
    traceback."""
    if not url:
        return
    from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

    try:
        split = urlsplit(url)
        valid = (
            split.scheme in ("http", "https")
            and bool(split.hostname)
            and (split.port is None or split.port > 0)
            and bool(is_valid_endpoint_url(url) or is_valid_ipv6_endpoint_url(url))
        )
    except ValueError:  # a port that is not a number, a bracket left open
        valid = False
    if not valid:
        raise ConfigurationError(
            f"Storage {alias!r} has the endpoint URL {strip_userinfo(url)!r}, which is not "
            "http(s)://host[:port]: check AWS_S3_ENDPOINT_URL or the storage's endpoint_url "
            "option."
        )


def preflight_s3(
    endpoint: S3Endpoint, *, as_source: bool, create_bucket: bool = False, dry_run: bool = False
) -> None:
    """The bucket answers the quick client, with these credentials (else ConfigurationError, one
    line), even when there is nothing to copy: a run over an empty table still says that its
    setup is broken. A destination's store is asked whether it honours conditional writes
    before the run's first write (S3Endpoint.conditional_writes), not here."""
    from botocore.exceptions import BotoCoreError, ClientError

    quick = endpoint.quick_client
    where = strip_userinfo(endpoint.s3storage.endpoint_url) or "AWS S3"
    try:
        quick.head_bucket(Bucket=endpoint.bucket)
        if not as_source and not dry_run:
            endpoint.probe_conditional_writes_later()  # before the first write, if there is one
        return
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or status == 404:
            if create_bucket and not as_source:
                if dry_run:
                    endpoint.assume_empty = True  # a real run would create it empty
                else:
                    make_bucket(endpoint, quick)
                    endpoint.probe_conditional_writes_later()
                return
            hint = "" if as_source else " or pass --create-bucket"
            raise ConfigurationError(
                f"Bucket {endpoint.bucket!r} of storage {endpoint.alias!r} does not exist at "
                f"{where}: create it{hint}."
            ) from exc
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ConfigurationError(
                f"S3 refused the credentials of storage {endpoint.alias!r} for bucket "
                f"{endpoint.bucket!r} at {where} ({code or status}): check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY."
            ) from exc
        raise ConfigurationError(
            f"Bucket {endpoint.bucket!r} of storage {endpoint.alias!r} at {where}: "
            f"{code or status}."
        ) from exc
    except BotoCoreError as exc:
        raise ConfigurationError(
            f"Cannot reach S3 for storage {endpoint.alias!r} at {where}: {exc}"
        ) from exc


def probe_conditional_writes(endpoint: S3Endpoint, client: S3Client) -> bool | None:
    """Does the store honour If-None-Match on writes? A scratch key is written twice with it:
    the second write must be refused (412). A store that refuses the header (501) or that
    ignores it (the second write succeeds) has no conditional writes: the run then checks
    for an object before each write. None when the store would not say (no permission)."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = f"{endpoint.key_prefix}.storage-migrate-probe-{uuid.uuid4().hex}"
    answer: bool | None = None
    params = endpoint.probe_params(key)
    try:
        for attempt in (1, 2):
            client.put_object(Bucket=endpoint.bucket, Key=key, Body=b"", IfNoneMatch="*", **params)
            if attempt == 2:
                answer = False  # accepted twice: the header is ignored
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
            answer = True
        elif code == "NotImplemented" or status == 501:
            answer = False
    except BotoCoreError:
        pass
    finally:
        with contextlib.suppress(ClientError, BotoCoreError):
            client.delete_object(Bucket=endpoint.bucket, Key=key)
    log.debug("storage %s: conditional writes %s", endpoint.alias, answer)
    return answer


def make_bucket(endpoint: S3Endpoint, client: S3Client) -> None:
    region = endpoint.s3storage.region_name
    if region and region != "us-east-1":
        client.create_bucket(
            Bucket=endpoint.bucket,
            CreateBucketConfiguration={"LocationConstraint": region},
        )
    else:
        client.create_bucket(Bucket=endpoint.bucket)
