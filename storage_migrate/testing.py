"""Helpers for tests and demos: an S3-compatible server on loopback (moto), no AWS account needed.

moto is a test dependency (``pip install django-storage-migrate[test]``), imported only when used.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Run moto's S3 HTTP server in a thread; yield its endpoint URL; stop it on exit."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "moto's server is not installed: pip install 'django-storage-migrate[test]'"
        ) from exc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on the terminal
    server = ThreadedMotoServer(ip_address=host, port=port or free_port(host), verbose=False)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.stop()


def s3_client(endpoint_url: str | None = None, region_name: str = "us-east-1") -> S3Client:
    """A boto3 S3 client for a test server, with throwaway credentials (never the user's)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region_name,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
