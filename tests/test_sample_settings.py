"""The sample project's settings: the USE_S3_STORAGE switch, DATABASE_URL forms, MEDIA_URL."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import FileSystemStorage, default_storage, storages
from storages.backends.s3 import S3Storage

from tests.conftest import REPO

SETTINGS_FILE = REPO / "sample_project" / "shams_vision" / "settings.py"


def load_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """Evaluate the settings module afresh with the given environment."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return runpy.run_path(str(SETTINGS_FILE))


def test_local_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USE_S3_STORAGE", raising=False)
    conf = load_settings(monkeypatch)
    assert conf["USE_S3_STORAGE"] is False
    assert conf["STORAGES"]["default"]["BACKEND"].endswith("FileSystemStorage")
    assert conf["MEDIA_URL"] == "/media/"


def test_switch_on_makes_s3_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_settings(monkeypatch, USE_S3_STORAGE="True", AWS_STORAGE_BUCKET_NAME="media-bucket")
    assert conf["STORAGES"]["default"]["BACKEND"] == "storages.backends.s3.S3Storage"
    assert conf["MEDIA_URL"] == "https://media-bucket.s3.us-east-1.amazonaws.com/"


@pytest.mark.parametrize("switch", ["True", "False"])
def test_local_and_s3_aliases_exist_whatever_the_switch(
    monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    conf = load_settings(monkeypatch, USE_S3_STORAGE=switch)
    assert conf["STORAGES"]["local"]["BACKEND"].endswith("FileSystemStorage")
    assert conf["STORAGES"]["s3"]["BACKEND"] == "storages.backends.s3.S3Storage"


def test_s3_settings_as_our_users_have_them(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_settings(monkeypatch)
    assert conf["AWS_S3_SIGNATURE_VERSION"] == "s3v4"
    assert conf["AWS_S3_FILE_OVERWRITE"] is False
    assert conf["AWS_DEFAULT_ACL"] is None
    assert conf["AWS_S3_OBJECT_PARAMETERS"] == {"CacheControl": "max-age=86400"}
    assert conf["AWS_S3_REGION_NAME"] == "us-east-1"


def test_media_url_follows_endpoint_and_custom_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_settings(
        monkeypatch,
        USE_S3_STORAGE="True",
        AWS_STORAGE_BUCKET_NAME="b",
        AWS_S3_ENDPOINT_URL="http://127.0.0.1:9000/",
        AWS_LOCATION="media",
    )
    assert conf["AWS_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000/"
    assert conf["MEDIA_URL"] == "http://127.0.0.1:9000/b/media/"
    conf = load_settings(monkeypatch, AWS_S3_CUSTOM_DOMAIN="cdn.example.com")
    assert conf["AWS_S3_CUSTOM_DOMAIN"] == "cdn.example.com"
    assert conf["MEDIA_URL"] == "https://cdn.example.com/media/"


def test_empty_endpoint_means_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_settings(monkeypatch, AWS_S3_ENDPOINT_URL="", AWS_S3_CUSTOM_DOMAIN="")
    assert conf["AWS_S3_ENDPOINT_URL"] is None
    assert conf["AWS_S3_CUSTOM_DOMAIN"] is None


def test_dotenv_file_next_to_manage_py_is_read(tmp_path: Path) -> None:
    import subprocess
    import sys

    project = tmp_path / "project"
    (project / "shams_vision").mkdir(parents=True)
    (project / "shams_vision" / "settings.py").write_text(SETTINGS_FILE.read_text())
    (project / ".env").write_text("USE_S3_STORAGE=True\nAWS_STORAGE_BUCKET_NAME=from-dotenv\n")
    code = (
        "import runpy, sys; c = runpy.run_path(sys.argv[1]);"
        "print(c['USE_S3_STORAGE'], c['AWS_STORAGE_BUCKET_NAME'])"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in {"USE_S3_STORAGE"}}
    env.pop("AWS_STORAGE_BUCKET_NAME", None)
    out = subprocess.run(
        [sys.executable, "-c", code, str(project / "shams_vision" / "settings.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["True", "from-dotenv"]


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:///tmp/x/db.sqlite3", "/tmp/x/db.sqlite3"),
        ("sqlite:////tmp/x/db.sqlite3", "/tmp/x/db.sqlite3"),
    ],
)
def test_sqlite_database_url_is_an_absolute_path(
    monkeypatch: pytest.MonkeyPatch, url: str, name: str
) -> None:
    db = load_settings(monkeypatch, DATABASE_URL=url)["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == name


def test_postgres_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgres://postgres@127.0.0.1:5432/test"
    db = load_settings(monkeypatch, DATABASE_URL=url)["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["HOST"], db["PORT"], db["NAME"]) == (
        "postgres",
        "127.0.0.1",
        5432,
        "test",
    )


def test_storage_classes_follow_the_switch(default_storage_is: Any) -> None:
    default_storage_is("local")
    wrapped = lambda: default_storage._wrapped  # type: ignore[attr-defined]  # noqa: E731
    assert isinstance(wrapped(), FileSystemStorage)
    default_storage_is("s3")
    assert isinstance(wrapped(), S3Storage)
    assert isinstance(storages["local"], FileSystemStorage)
    assert isinstance(storages["s3"], S3Storage)
