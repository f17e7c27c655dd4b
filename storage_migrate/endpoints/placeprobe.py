"""Is one place seen through two storages, when either is neither local disk nor S3 (an SFTP
server whose folder is MEDIA_ROOT, or a bucket; two names of one server)? A marker written
through the destination's API is looked for through the source's."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from django.core.files.base import ContentFile

if TYPE_CHECKING:
    from .base import Endpoint


def seen_through_api(source: Endpoint, destination: Endpoint, marker: str) -> bool | None:
    """Does ``marker``, written through the destination, show through the source? None when
    that is not known (the marker could not be written, or the source would not answer)."""
    if destination.kind == "local":
        root = str(getattr(destination.storage, "location", ""))
        if not os.path.isdir(root):
            return False  # not there yet: not the source's folder, which is
    try:
        if not _write(destination, marker):
            return None
    except Exception:
        return None
    try:
        return _sees(source, marker)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            _remove(destination, marker)


def _write(endpoint: Endpoint, marker: str) -> bool:
    if endpoint.kind == "local":
        root = str(getattr(endpoint.storage, "location", ""))
        os.close(os.open(os.path.join(root, marker), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return True
    if endpoint.kind == "s3":
        s3: Any = endpoint
        key = f"{s3.key_prefix}{marker}"
        s3.quick_client.put_object(Bucket=s3.bucket, Key=key, Body=b"", **s3.probe_params(key))
        return True
    saved = endpoint.storage.save(marker, ContentFile(b""))
    if saved != marker:  # a name taken: not a marker of ours
        endpoint.storage.delete(saved)
        return False
    return True


def _sees(endpoint: Endpoint, marker: str) -> bool:
    if endpoint.kind == "local":
        root = str(getattr(endpoint.storage, "location", ""))
        return os.path.lexists(os.path.join(root, marker))
    if endpoint.kind == "s3":
        s3: Any = endpoint
        return s3.stat(marker) is not None
    return bool(endpoint.storage.exists(marker))


def _remove(endpoint: Endpoint, marker: str) -> None:
    if endpoint.kind == "local":
        root = str(getattr(endpoint.storage, "location", ""))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(root, marker))
        return
    if endpoint.kind == "s3":
        s3: Any = endpoint
        s3.quick_client.delete_object(Bucket=s3.bucket, Key=f"{s3.key_prefix}{marker}")
        return
    endpoint.storage.delete(marker)
