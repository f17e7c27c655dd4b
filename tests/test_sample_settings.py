"""The sample project's settings: the USE_S3_STORAGE switch, DATABASE_URL forms, MEDIA_URL."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import FileSystemStorage, default_storage, storages
from storages.backends.s3 import S3Storage

from tests.conftest import MANAGE, REPO
from tests.settings import TEST_ENV

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
    project = tmp_path / "project"
    (project / "shams_vision").mkdir(parents=True)
    (project / "shams_vision" / "settings.py").write_text(SETTINGS_FILE.read_text())
    (project / ".env").write_text("USE_S3_STORAGE=True\nAWS_STORAGE_BUCKET_NAME=from-dotenv\n")
    code = (
        "import runpy, sys; c = runpy.run_path(sys.argv[1]);"
        "print(c['USE_S3_STORAGE'], c['AWS_STORAGE_BUCKET_NAME'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"USE_S3_STORAGE"}}
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


# A bad variable: one line naming it and what it must be, exit 2, never a traceback (and never
# the DATABASE_URL itself, which may hold a password).
BAD_ENVIRONMENTS = [
    ({"DATABASE_URL": "garbage"}, "DATABASE_URL must be a database URL"),
    ({"DATABASE_URL": "http://secret@example.com/x"}, "DATABASE_URL must be a database URL"),
    ({"DATABASE_URL": "postgres://u:secret@h:port/db"}, "DATABASE_URL must be a database URL"),
    ({"DATABASE_URL": "postgres://u:secret@h:5432"}, "DATABASE_URL must end with a database name"),
    ({"DATABASE_URL": "mysql2://secret@x"}, "DATABASE_URL must name a database whose driver"),
    (
        {"STORAGE_MIGRATE_MULTIPART_THRESHOLD": "big"},
        "STORAGE_MIGRATE_MULTIPART_THRESHOLD must be a whole number of bytes",
    ),
    ({"STORAGE_MIGRATE_MULTIPART_THRESHOLD": ""}, "STORAGE_MIGRATE_MULTIPART_THRESHOLD must be"),
    ({"USE_S3_STORAGE": "maybe"}, "USE_S3_STORAGE must be True or False (got 'maybe')"),
    ({"DEBUG": "sometimes"}, "DEBUG must be True or False"),
]
BAD_IDS = [next(iter(bad.items()))[1] or "empty" for bad, _ in BAD_ENVIRONMENTS]


@pytest.mark.parametrize(("bad", "message"), BAD_ENVIRONMENTS, ids=BAD_IDS)
def test_a_bad_variable_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    bad: dict[str, str],
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exited:
        load_settings(monkeypatch, **bad)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Bad setting: {message}")
    assert err.count("\n") == 1
    assert "secret" not in err


def manage_py_with(*args: str, **bad: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))},
        **TEST_ENV,
        "DJANGO_SETTINGS_MODULE": "shams_vision.settings",
        **bad,
    }
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env=env,
        cwd=MANAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("bad", "message"), BAD_ENVIRONMENTS, ids=BAD_IDS)
def test_manage_py_says_which_variable_is_wrong(bad: dict[str, str], message: str) -> None:
    result = manage_py_with("migrate_storage", "--to", "s3", **bad)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Bad setting: {message}")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "secret" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["check"], ["verify_files"], ["migrate", "--noinput"]])
def test_every_command_stops_on_a_bad_variable(command: list[str]) -> None:
    result = manage_py_with(*command, DATABASE_URL="mysql2://x")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Bad setting: DATABASE_URL must name a database")


@pytest.mark.parametrize(
    ("use_s3", "primary", "fallback"), [("True", "s3", "local"), ("False", "local", "s3")]
)
def test_storage_fallback_makes_default_read_the_new_place_then_the_old(
    monkeypatch: pytest.MonkeyPatch, use_s3: str, primary: str, fallback: str
) -> None:
    conf = load_settings(monkeypatch, USE_S3_STORAGE=use_s3, STORAGE_FALLBACK="True")
    default = conf["STORAGES"]["default"]
    assert default["BACKEND"] == "storage_migrate.storage.FallbackStorage"
    assert default["OPTIONS"] == {"primary": primary, "fallback": fallback}
    # Files not moved yet are served from local disk, whatever MEDIA_URL says.
    assert conf["STORAGES"]["local"]["OPTIONS"]["base_url"] == "/media/"


def test_storage_fallback_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_FALLBACK", raising=False)
    conf = load_settings(monkeypatch, USE_S3_STORAGE="True")
    assert conf["STORAGES"]["default"]["BACKEND"] == "storages.backends.s3.S3Storage"


def test_a_bad_storage_fallback_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STORAGE_FALLBACK", "maybe")
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(SETTINGS_FILE))
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "Bad setting: STORAGE_FALLBACK must be True or False (got 'maybe').\n"
    )
