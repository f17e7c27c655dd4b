"""The endpoint of a STORAGES alias or of a storage instance, by the kind of its storage."""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.files.storage.handler import InvalidStorageError

from ..conf import Conf
from ..errors import ConfigurationError
from .base import Endpoint
from .generic import StorageEndpoint
from .local import LocalEndpoint


def endpoint_for(alias: str, conf: Conf) -> Endpoint:
    """The endpoint of a STORAGES alias, by the kind of its storage."""
    try:
        storage = storages[alias]
    except InvalidStorageError:
        known = ", ".join(sorted(getattr(settings, "STORAGES", {}) or {}))
        raise ConfigurationError(
            f"Storage alias {alias!r} is not in STORAGES (known: {known})"
        ) from None
    return endpoint_for_storage(alias, storage, conf)


def endpoint_for_storage(alias: str, storage: Storage, conf: Conf) -> Endpoint:
    """An endpoint for a storage instance (a field's own storage, or an alias's)."""
    if isinstance(storage, FileSystemStorage):
        return LocalEndpoint(alias, storage, conf)
    from storages.backends.s3 import S3Storage  # here: boto3 only for a site that uses S3

    if isinstance(storage, S3Storage):
        from .s3 import S3Endpoint

        return S3Endpoint(alias, storage, conf)
    return StorageEndpoint(alias, storage, conf)
