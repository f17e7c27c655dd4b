"""Fixtures: a temporary MEDIA_ROOT for every test, moto buckets (in-process and over HTTP), and a
way to run manage.py as a subprocess against the test database.

End-to-end tests marked with ``BOTH_SERVERS`` run twice: against moto's HTTP server and against
`rclone serve s3`, an independent S3 implementation (``s3_endpoint`` is the one of the round)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import Storage, storages
from django.db import connection
from moto import mock_aws

from storage_migrate.testing import (
    SFTPServer,
    moto_server,
    rclone_s3_server,
    s3_client,
    sftp_server,
)
from tests.settings import TEST_ENV

REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "sample_project" / "manage.py"
SERVERS = ("moto", "rclone")
# pytestmark = BOTH_SERVERS: every test of the module, once per S3 server.
BOTH_SERVERS = pytest.mark.parametrize("s3_endpoint", SERVERS, indirect=True)


WAGTAIL_SETTINGS = "tests.wagtail_site.settings"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The Wagtail site's tests need its settings (one settings module a process): `make test`
    runs them in a second pytest run, with --ds tests.wagtail_site.settings."""
    wagtail_run = os.environ.get("DJANGO_SETTINGS_MODULE") == WAGTAIL_SETTINGS
    if collection_path.name == "wagtail_site" and not wagtail_run:
        return True
    return None


@pytest.fixture(autouse=True)
def media_root(tmp_path: Path, settings: Any) -> Path:
    """Every test gets its own MEDIA_ROOT; nothing is written into the sample project."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    return root


def reset_storages() -> None:
    """Forget cached storage instances, so the next lookup sees the current settings and mocks."""
    from django.core.files.storage import default_storage

    storages._storages = {}  # type: ignore[attr-defined]
    default_storage._setup()  # type: ignore[attr-defined]


@pytest.fixture
def s3_bucket(settings: Any) -> Iterator[str]:
    """An in-process moto S3 with an empty bucket; the `s3` storage alias points at it."""
    with mock_aws():
        bucket = f"test-{uuid.uuid4().hex[:12]}"
        s3_client().create_bucket(Bucket=bucket)
        settings.AWS_STORAGE_BUCKET_NAME = bucket
        reset_storages()
        yield bucket
    reset_storages()


@pytest.fixture(params=["local", "s3"])
def storage_alias(request: pytest.FixtureRequest) -> str:
    """Run a test once against the local disk and once against S3 (moto)."""
    if request.param == "s3":
        request.getfixturevalue("s3_bucket")
    return str(request.param)


@pytest.fixture
def storage(storage_alias: str) -> Storage:
    return storages[storage_alias]


@pytest.fixture
def default_storage_is(settings: Any) -> Any:
    """Point the `default` alias at `local` or `s3`, as flipping USE_S3_STORAGE does."""

    def switch(alias: str) -> None:
        settings.STORAGES = {**settings.STORAGES, "default": settings.STORAGES[alias]}
        settings.USE_S3_STORAGE = alias == "s3"
        reset_storages()

    return switch


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's real HTTP server on loopback, shared by the end-to-end tests of a session."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def rclone_endpoint() -> Iterator[str]:
    """`rclone serve s3` on loopback over a temporary folder, shared by a session's tests."""
    with rclone_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_endpoint(request: pytest.FixtureRequest) -> str:
    """The HTTP S3 server of this test: moto's, or the one BOTH_SERVERS gives this round."""
    kind = getattr(request, "param", "moto")
    return str(request.getfixturevalue(f"{kind}_endpoint"))


@pytest.fixture
def s3_kind(request: pytest.FixtureRequest) -> str:
    """'moto' or 'rclone': which server s3_endpoint is this round."""
    callspec = getattr(request.node, "callspec", None)
    return str(callspec.params.get("s3_endpoint", "moto")) if callspec else "moto"


@pytest.fixture
def http_bucket(s3_endpoint: str) -> str:
    """A fresh bucket on the test's HTTP S3 server (moto's unless BOTH_SERVERS)."""
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def through_proxy(s3_endpoint: str, http_bucket: str, settings: Any) -> Iterator[Any]:
    """Point the `s3` alias at a fresh bucket on moto's HTTP server through tests/faults.py's
    proxy, started with the given behaviour (``through_proxy(flip_gets=True)``)."""
    from tests.faults import faulty_proxy

    opened: list[Any] = []

    def start(**behaviour: Any) -> Any:
        context = faulty_proxy(s3_endpoint, rate=0.0, **behaviour)
        proxy = context.__enter__()
        settings.AWS_STORAGE_BUCKET_NAME = http_bucket
        settings.AWS_S3_ENDPOINT_URL = proxy.url
        reset_storages()
        opened.append(context)
        return proxy

    yield start
    for context in opened:
        context.__exit__(None, None, None)
    reset_storages()


@pytest.fixture(scope="session")
def sftp_service() -> Iterator[SFTPServer]:
    """OpenSSH's sshd on loopback, serving SFTP, shared by a session's tests. No sshd is a
    failure, never a skip (.ci/run installs openssh-server)."""
    with sftp_server() as server:
        yield server


@dataclass
class SFTPRoot:
    """The `sftp` alias of a test: its root on the server, and where that lies on this disk."""

    server: SFTPServer
    root_path: str
    path: Path

    def options(self) -> dict[str, Any]:
        return {**self.server.options(self.root_path), "base_url": "/sftp-media/"}


@pytest.fixture
def sftp_root(sftp_service: SFTPServer, settings: Any) -> Iterator[SFTPRoot]:
    """The `sftp` storage alias (django-storages' SFTPStorage) at a fresh folder of the test
    SFTP server; its connections are closed afterwards."""
    root_path = f"/t-{uuid.uuid4().hex[:12]}/media"
    sftp = SFTPRoot(sftp_service, root_path, sftp_service.local_path(root_path))
    backend = "storages.backends.sftpstorage.SFTPStorage"
    settings.STORAGES = {
        **settings.STORAGES,
        "sftp": {"BACKEND": backend, "OPTIONS": sftp.options()},
    }
    reset_storages()
    yield sftp
    close_storages()
    reset_storages()


def close_storages() -> None:
    """Close the connections of storages that keep one open (SFTP)."""
    for storage in storages._storages.values():  # type: ignore[attr-defined]
        close = getattr(storage, "close", None)
        if callable(close):
            close()


def database_url() -> str:
    """A DATABASE_URL for the test database that this pytest process uses."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    if connection.vendor == "postgresql":
        user = params.get("USER") or "postgres"
        password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
        host = params.get("HOST") or "127.0.0.1"
        port = params.get("PORT") or 5432
        return f"postgres://{user}{password}@{host}:{port}/{params['NAME']}"
    raise NotImplementedError(f"No DATABASE_URL for {connection.vendor}")


@dataclass
class ManagePy:
    """Runs `python manage.py ...` with the sample project's real settings, as a user would."""

    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=self.env,
            cwd=MANAGE.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The same, in the background (to signal or race it), its output piped. Python's
        fault handler is on: a process that hangs is made to say where (see finish)."""
        return subprocess.Popen(
            [sys.executable, str(MANAGE), *args],
            env={**self.env, "PYTHONFAULTHANDLER": "1"},
            cwd=MANAGE.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def finish(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
        """(stdout, stderr) of a started process once it ends. One still running after
        ``timeout`` fails the test with every thread's stack (SIGABRT: the fault handler), and
        is not left behind."""
        try:
            return process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            try:
                stdout, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            pytest.fail(f"manage.py still ran after {timeout} s:\n{stdout}\n{stderr}")


@pytest.fixture
def manage_py(
    transactional_db: None, media_root: Path, s3_endpoint: str, http_bucket: str
) -> ManagePy:
    """manage.py against the test database (committed rows are visible), this test's MEDIA_ROOT
    and a fresh bucket on the test's HTTP S3 server."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))},
        **TEST_ENV,
        "DJANGO_SETTINGS_MODULE": "shams_vision.settings",
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(media_root),
        "AWS_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_STORAGE_BUCKET_NAME": http_bucket,
        # Multipart from 16 MiB, so that end-to-end tests exercise it with small files.
        "STORAGE_MIGRATE_MULTIPART_THRESHOLD": str(16 * 1024 * 1024),
    }
    return ManagePy(env=env)
