"""A small Wagtail site, the proving ground of the toolkit on a real third-party app: images,
renditions and documents are Wagtail's own models, uploaded through Wagtail's own APIs.

Read from the environment, so that the tests and `manage.py` subprocesses share one setup:
DATABASE_URL, MEDIA_ROOT, AWS_S3_ENDPOINT_URL, AWS_STORAGE_BUCKET_NAME, and SITE_STORAGE
(``local`` or ``s3``: the storage the site reads, the switch of a real site).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import dj_database_url

HERE = Path(__file__).resolve().parent
_sqlite_dir = Path(tempfile.mkdtemp(prefix="storage-migrate-wagtail-"))

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.wagtail_site.urls"
WAGTAIL_SITE_NAME = "Proving ground"
WAGTAILADMIN_BASE_URL = "http://testserver"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

INSTALLED_APPS = [
    "tests.wagtail_site.home",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.users",
    "wagtail.sites",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "storage_migrate",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [HERE / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
MEDIA_URL = "/media/"
MEDIA_ROOT = os.environ.get("MEDIA_ROOT") or str(_sqlite_dir / "media")

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{_sqlite_dir / 'db.sqlite3'}"
    )
}
# A file, not :memory:, so that manage.py subprocesses see the test database.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": str(_sqlite_dir / "test.sqlite3")}

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

# The aliases a real site defines for the move, with django-storages' OPTIONS.
# (No location: FileSystemStorage follows MEDIA_ROOT, which each test sets.)
_LOCAL = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
_S3 = {
    "BACKEND": "storages.backends.s3.S3Storage",
    "OPTIONS": {
        "bucket_name": os.environ.get("AWS_STORAGE_BUCKET_NAME", "wagtail-site"),
        "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
        "region_name": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
        "file_overwrite": False,
        "querystring_auth": True,  # signed URLs: the bucket stays private
        "signature_version": "s3v4",  # (rclone serve s3 refuses the older query signature)
    },
}
# Multipart from 5 MiB, so that a document of 6 MiB goes in parts; STORAGE_MIGRATE_JSON adds
# keys (bench/wagtail_verify.py compares with what was known before).
STORAGE_MIGRATE = {
    "MULTIPART_THRESHOLD": 5 * 1024 * 1024,
    "MULTIPART_CHUNKSIZE": 5 * 1024 * 1024,
    **json.loads(os.environ.get("STORAGE_MIGRATE_JSON") or "{}"),
}
STORAGES = {
    "default": _S3 if os.environ.get("SITE_STORAGE") == "s3" else _LOCAL,
    "local": _LOCAL,
    "s3": _S3,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
