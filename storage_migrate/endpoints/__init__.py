"""Our view of a storage: stat, list, read, write and prove its objects, by FileField name.

``base`` is what every storage is (and any Django storage is through its own API), ``local``
and ``s3`` the two we know closely; ``s3write`` and ``native`` write to S3, ``transfer`` copies
one file between any two, ``proof`` says what proves bytes, ``places`` where a storage keeps
them. Nothing here touches the database.
"""

from __future__ import annotations

from .base import Endpoint, Fingerprint, ObjectInfo, alias_of
from .factory import endpoint_for, endpoint_for_storage
from .local import LocalEndpoint

__all__ = [
    "Endpoint",
    "Fingerprint",
    "LocalEndpoint",
    "ObjectInfo",
    "alias_of",
    "endpoint_for",
    "endpoint_for_storage",
]
