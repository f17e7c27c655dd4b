"""Small helpers the API tests share: make a row with a file, read S3 directly, name outcomes."""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.files.base import ContentFile

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.testapp.models import HashedFile

MiB = 1024 * 1024


def md5(data: bytes) -> str:
    """Computed here, not by the project's code, so that tests check the project."""
    return hashlib.md5(data).hexdigest()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hashed(name: str, data: bytes, **columns: Any) -> HashedFile:
    """A tests.testapp HashedFile row (SHA-1 and SHA-256 columns, no MD5) with its file."""
    return HashedFile.objects.create(file=ContentFile(data, name=name), **columns)


def make(name: str, data: bytes, **fields: Any) -> FileManager:
    """A FileManager row whose file is stored through the default storage."""
    return FileManager.objects.create(file=ContentFile(data, name=name), **fields)


def s3_bytes(bucket: str, key: str) -> bytes:
    return bytes(s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())


def s3_keys(bucket: str) -> list[str]:
    listing = s3_client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def kinds(report: Any) -> list[str]:
    """The problem kinds of a report, sorted."""
    return sorted(p.kind for p in report.problems)
