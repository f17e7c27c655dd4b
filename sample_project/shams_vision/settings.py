"""Settings of the sample project, read from the environment (or .env) with python-decouple."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import dj_database_url
from decouple import AutoConfig, Csv

BASE_DIR = Path(__file__).resolve().parent.parent

# Looks for a .env file next to manage.py; real environment variables take precedence.
config = AutoConfig(search_path=str(BASE_DIR))

T = TypeVar("T")

DATABASE_URL_FORMS = "sqlite:////ABS/PATH/db.sqlite3 or postgres://USER:PASSWORD@HOST:5432/NAME"
# The module each database backend imports, and how to install it.
DATABASE_DRIVERS = {
    "postgresql": (("psycopg", "psycopg2"), "pip install 'psycopg[binary]'"),
    "postgis": (("psycopg", "psycopg2"), "pip install 'psycopg[binary]'"),
    "mysql": (("MySQLdb",), "pip install mysqlclient"),
    "oracle": (("oracledb", "cx_Oracle"), "pip install oracledb"),
}


def bad_setting(message: str) -> NoReturn:
    """Say in one line which variable is wrong and what it must be, and exit 2.

    Settings run at import, where Django would turn any exception into a traceback; these are
    the project's own settings, so stopping the process here is theirs to do."""
    sys.stderr.write(f"Bad setting: {message}\n")
    raise SystemExit(2)


def env(name: str, default: T, cast: Callable[[str], T], must_be: str) -> T:
    """A variable from the environment (or .env), cast, or a one-line error naming it."""
    try:
        return config(name, default=default, cast=cast)  # type: ignore[no-any-return]
    except ValueError:
        bad_setting(f"{name} must be {must_be} (got {config(name)!r}).")


def database_from_url(url: str) -> dict[str, Any]:
    """Parse DATABASE_URL; ``sqlite:///ABS/PATH`` (three slashes) is an absolute path too.

    The value is never echoed: it may hold a password."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:////" + url[len("sqlite:///") :]
    try:
        db: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=0))
    except dj_database_url.UnknownSchemeError:
        scheme = urlsplit(url).scheme
        got = f"its scheme {scheme + '://'!r} names no database" if scheme else "it has no scheme"
        bad_setting(f"DATABASE_URL must be a database URL like {DATABASE_URL_FORMS} ({got}).")
    except ValueError:  # dj_database_url.ParseError, or a port that is not a number
        bad_setting(
            f"DATABASE_URL must be a database URL like {DATABASE_URL_FORMS} (it does not parse: "
            "is the port a number? write special characters in the password as %XX)."
        )
    engine = str(db.get("ENGINE", ""))
    modules, install = DATABASE_DRIVERS.get(
        engine.rsplit(".", 1)[-1], ((engine,), f"install the package of {engine}")
    )
    if not any(_importable(module) for module in modules):
        bad_setting(
            f"DATABASE_URL must name a database whose driver is installed ({engine}: {install})."
        )
    if not engine.endswith(("sqlite3", "spatialite")) and not (
        db.get("NAME") or db.get("OPTIONS", {}).get("service")
    ):
        bad_setting(f"DATABASE_URL must end with a database name, like {DATABASE_URL_FORMS}.")
    return db


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


SECRET_KEY = config("SECRET_KEY", default="django-insecure-sample-project-only")
DEBUG = env("DEBUG", True, bool, "True or False")
ALLOWED_HOSTS = config("ALLOWED_HOSTS", default="localhost,127.0.0.1", cast=Csv())

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "storages",
    "storage_migrate",
    "core",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shams_vision.urls"
WSGI_APPLICATION = "shams_vision.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(
        config("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Files -------------------------------------------------------------------------------------

USE_S3_STORAGE = env("USE_S3_STORAGE", False, bool, "True or False")
MEDIA_ROOT = config("MEDIA_ROOT", default=str(BASE_DIR / "media"))

AWS_ACCESS_KEY_ID = config("AWS_ACCESS_KEY_ID", default="")
AWS_SECRET_ACCESS_KEY = config("AWS_SECRET_ACCESS_KEY", default="")
AWS_STORAGE_BUCKET_NAME = config("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_REGION_NAME = config("AWS_S3_REGION_NAME", default="us-east-1")
AWS_S3_ENDPOINT_URL = config("AWS_S3_ENDPOINT_URL", default="") or None
AWS_S3_CUSTOM_DOMAIN = config("AWS_S3_CUSTOM_DOMAIN", default="") or None
AWS_QUERYSTRING_AUTH = env("AWS_QUERYSTRING_AUTH", True, bool, "True or False")
AWS_LOCATION = config("AWS_LOCATION", default="").strip("/")
AWS_S3_SIGNATURE_VERSION = "s3v4"
AWS_S3_FILE_OVERWRITE = False
AWS_DEFAULT_ACL = None  # private objects; the bucket policy decides
AWS_S3_OBJECT_PARAMETERS = {"CacheControl": "max-age=86400"}

# Where files on local disk are served, whatever MEDIA_URL says once the switch is on (a
# FallbackStorage still serves the files not moved yet from there).
LOCAL_MEDIA_URL = "/media/"
_LOCAL_STORAGE = {
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {"base_url": LOCAL_MEDIA_URL},
}
_S3_STORAGE = {"BACKEND": "storages.backends.s3.S3Storage"}

# While the files move: the default storage reads the new place, then the old one; writes go to
# the new place only; deletes go to both (see the README's cut-over runbook).
STORAGE_FALLBACK = env("STORAGE_FALLBACK", False, bool, "True or False")
_NEW, _OLD = ("s3", "local") if USE_S3_STORAGE else ("local", "s3")
_FALLBACK_STORAGE = {
    "BACKEND": "storage_migrate.storage.FallbackStorage",
    "OPTIONS": {"primary": _NEW, "fallback": _OLD},
}

STORAGES = {
    "default": (
        _FALLBACK_STORAGE
        if STORAGE_FALLBACK
        else (_S3_STORAGE if USE_S3_STORAGE else _LOCAL_STORAGE)
    ),
    # Always defined, whatever the switch says: a migration reads one and writes the other.
    "local": _LOCAL_STORAGE,
    "s3": _S3_STORAGE,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# A second bucket, for a move between buckets, regions, accounts or providers: the alias
# "s3_new", defined when NEW_AWS_STORAGE_BUCKET_NAME is set. Its endpoint, region and keys are
# the first bucket's unless given (one endpoint and one set of keys: copies stay server-side).
NEW_AWS_STORAGE_BUCKET_NAME = config("NEW_AWS_STORAGE_BUCKET_NAME", default="")
if NEW_AWS_STORAGE_BUCKET_NAME:
    _new_secret = config("NEW_AWS_SECRET_ACCESS_KEY", default="") or AWS_SECRET_ACCESS_KEY
    STORAGES["s3_new"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": NEW_AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": config("NEW_AWS_S3_ENDPOINT_URL", default="") or AWS_S3_ENDPOINT_URL,
            "region_name": config("NEW_AWS_S3_REGION_NAME", default="") or AWS_S3_REGION_NAME,
            "access_key": config("NEW_AWS_ACCESS_KEY_ID", default="") or AWS_ACCESS_KEY_ID,
            "secret_key": _new_secret,
            "location": config("NEW_AWS_LOCATION", default="").strip("/"),
        },
    }

# An SFTP server, only when SFTP_HOST is set (django-storages' SFTPStorage, which needs paramiko:
# pip install 'django-storages[sftp]'): `manage.py migrate_storage --from local --to sftp`.
SFTP_HOST = config("SFTP_HOST", default="")
SFTP_KEY_FILENAME = config("SFTP_KEY_FILENAME", default="") or None
if SFTP_HOST:
    STORAGES["sftp"] = {
        "BACKEND": "storages.backends.sftpstorage.SFTPStorage",
        "OPTIONS": {
            "host": SFTP_HOST,
            "params": {
                "port": env("SFTP_PORT", 22, int, "a port number, such as 22"),
                "username": config("SFTP_USERNAME", default="") or None,
                "key_filename": SFTP_KEY_FILENAME,
                # The key named, or else the user's own (~/.ssh, the agent).
                "look_for_keys": SFTP_KEY_FILENAME is None,
                "allow_agent": SFTP_KEY_FILENAME is None,
            },
            "known_host_file": config("SFTP_KNOWN_HOSTS", default="") or None,
            "root_path": config("SFTP_ROOT", default=""),
            "base_url": config("SFTP_BASE_URL", default="") or None,
        },
    }


def s3_media_url() -> str:
    """The bucket's base URL (the S3 backend signs its own URLs when querystring auth is on)."""
    prefix = f"{AWS_LOCATION}/" if AWS_LOCATION else ""
    if AWS_S3_CUSTOM_DOMAIN:
        return f"https://{AWS_S3_CUSTOM_DOMAIN}/{prefix}"
    if AWS_S3_ENDPOINT_URL:
        return f"{AWS_S3_ENDPOINT_URL.rstrip('/')}/{AWS_STORAGE_BUCKET_NAME}/{prefix}"
    return f"https://{AWS_STORAGE_BUCKET_NAME}.s3.{AWS_S3_REGION_NAME}.amazonaws.com/{prefix}"


MEDIA_URL = s3_media_url() if USE_S3_STORAGE else LOCAL_MEDIA_URL

# django-storage-migrate (every key is optional; see its README).
STORAGE_MIGRATE = {
    "MULTIPART_THRESHOLD": env(
        "STORAGE_MIGRATE_MULTIPART_THRESHOLD",
        64 * 1024 * 1024,
        int,
        "a whole number of bytes, such as 67108864 for 64 MiB",
    ),
    # "auto" (the native engine where it can serve the storage), "native" or "boto3".
    "ENGINE": config("STORAGE_MIGRATE_ENGINE", default="auto"),
    # Server-side copies (two S3 storages on one store) above this size go in parts.
    "COPY_CUTOFF": env(
        "STORAGE_MIGRATE_COPY_CUTOFF",
        4710 * 1024 * 1024,
        int,
        "a whole number of bytes from 5 MiB to 5 GiB, such as 4938792960 for 4710 MiB",
    ),
    # The site's Celery app, imported only by migrate_storage --enqueue (and the workers).
    "CELERY_APP": "shams_vision.celery.app",
}

# --- Celery (the celery extra: migrate_storage --enqueue) ---------------------------------------

CELERY_BROKER_URL = config("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = config("CELERY_RESULT_BACKEND", default="redis://127.0.0.1:6379/0")
# Redis delivers again a message not acknowledged within this many seconds (tasks acknowledge
# once done): longer than any batch takes, or a batch runs twice (harmless, but wasted).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env(
        "CELERY_VISIBILITY_TIMEOUT", 3600, int, "a whole number of seconds, such as 3600"
    ),
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = CELERY_BROKER_TRANSPORT_OPTIONS
# A worker process takes one batch at a time: a batch waiting behind a long one in a process's
# prefetch could run elsewhere.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = config("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
