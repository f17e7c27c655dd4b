"""Settings of the sample project, read from the environment (or .env) with python-decouple."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dj_database_url
from decouple import AutoConfig, Csv

BASE_DIR = Path(__file__).resolve().parent.parent

# Looks for a .env file next to manage.py; real environment variables take precedence.
config = AutoConfig(search_path=str(BASE_DIR))


def database_from_url(url: str) -> dict[str, Any]:
    """Parse DATABASE_URL; ``sqlite:///ABS/PATH`` (three slashes) is an absolute path too."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:////" + url[len("sqlite:///") :]
    return dict(dj_database_url.parse(url, conn_max_age=0))


SECRET_KEY = config("SECRET_KEY", default="django-insecure-sample-project-only")
DEBUG = config("DEBUG", default=True, cast=bool)
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

USE_S3_STORAGE = config("USE_S3_STORAGE", default=False, cast=bool)
MEDIA_ROOT = config("MEDIA_ROOT", default=str(BASE_DIR / "media"))

AWS_ACCESS_KEY_ID = config("AWS_ACCESS_KEY_ID", default="")
AWS_SECRET_ACCESS_KEY = config("AWS_SECRET_ACCESS_KEY", default="")
AWS_STORAGE_BUCKET_NAME = config("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_REGION_NAME = config("AWS_S3_REGION_NAME", default="us-east-1")
AWS_S3_ENDPOINT_URL = config("AWS_S3_ENDPOINT_URL", default="") or None
AWS_S3_CUSTOM_DOMAIN = config("AWS_S3_CUSTOM_DOMAIN", default="") or None
AWS_QUERYSTRING_AUTH = config("AWS_QUERYSTRING_AUTH", default=True, cast=bool)
AWS_LOCATION = config("AWS_LOCATION", default="").strip("/")
AWS_S3_SIGNATURE_VERSION = "s3v4"
AWS_S3_FILE_OVERWRITE = False
AWS_DEFAULT_ACL = None  # private objects; the bucket policy decides
AWS_S3_OBJECT_PARAMETERS = {"CacheControl": "max-age=86400"}

_LOCAL_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
_S3_STORAGE = {"BACKEND": "storages.backends.s3.S3Storage"}

STORAGES = {
    "default": _S3_STORAGE if USE_S3_STORAGE else _LOCAL_STORAGE,
    # Always defined, whatever the switch says: a migration reads one and writes the other.
    "local": _LOCAL_STORAGE,
    "s3": _S3_STORAGE,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


def s3_media_url() -> str:
    """The bucket's base URL (the S3 backend signs its own URLs when querystring auth is on)."""
    prefix = f"{AWS_LOCATION}/" if AWS_LOCATION else ""
    if AWS_S3_CUSTOM_DOMAIN:
        return f"https://{AWS_S3_CUSTOM_DOMAIN}/{prefix}"
    if AWS_S3_ENDPOINT_URL:
        return f"{AWS_S3_ENDPOINT_URL.rstrip('/')}/{AWS_STORAGE_BUCKET_NAME}/{prefix}"
    return f"https://{AWS_STORAGE_BUCKET_NAME}.s3.{AWS_S3_REGION_NAME}.amazonaws.com/{prefix}"


MEDIA_URL = s3_media_url() if USE_S3_STORAGE else "/media/"

# django-storage-migrate (every key is optional; see its README).
STORAGE_MIGRATE = {
    "MULTIPART_THRESHOLD": config(
        "STORAGE_MIGRATE_MULTIPART_THRESHOLD", default=64 * 1024 * 1024, cast=int
    ),
    # "auto" (the native engine where it can serve the storage), "native" or "boto3".
    "ENGINE": config("STORAGE_MIGRATE_ENGINE", default="auto"),
}
