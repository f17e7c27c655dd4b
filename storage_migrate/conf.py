"""The STORAGE_MIGRATE setting: one home for every option, read lazily (override_settings works)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MiB = 1024 * 1024

METADATA_ROLES = (
    "bucket",
    "object_key",
    "checksum",
    "sha1",
    "sha256",
    "file_size",
    "content_type",
)
# The roles of checksum columns, and the algorithm of each: `checksum` is an MD5 (what an ETag
# can prove); `sha1` and `sha256` are checked by reading the bytes (Wagtail's file_hash: sha1).
DIGEST_ROLES = {"checksum": "md5", "sha1": "sha1", "sha256": "sha256"}


@dataclass(frozen=True)
class Conf:
    """Every STORAGE_MIGRATE key with its default. An unknown key is an error."""

    # "app_label.Model" or "app_label.Model.field" to walk when --model is not given.
    MODELS: tuple[str, ...] = ()
    # {"app_label.Model": {"checksum": "md5_hex", "file_size": None}}: a role -> column name,
    # or None to say the model has no such column. Unmapped roles are found by name.
    # "checksum" holds an MD5; "sha1" and "sha256" hold those digests (hex).
    METADATA_FIELDS: Any = None
    # {"app_label.Model.field": ["folder/", ...]}: where verify_files --orphans looks for a
    # field whose upload_to is a function (Wagtail's are known without it).
    ORPHAN_FOLDERS: Any = None
    WORKERS: int = 32
    BATCH_SIZE: int = 500
    # Files at or above this size go to S3 in parts, concurrently (boto3's transfer manager).
    # Measured on loopback: one PUT of a 16-64 MiB file is 1.3-1.8 times faster than parts.
    MULTIPART_THRESHOLD: int = 64 * MiB
    MULTIPART_CHUNKSIZE: int = 16 * MiB
    # The engine of single PUTs: "auto" sends them through the AWS Common Runtime (awscrt) where
    # it can serve the storage as configured, else boto3; "native" requires awscrt (an error
    # when it cannot serve the storage); "boto3" never uses it. Multipart uploads use boto3.
    ENGINE: str = "auto"
    # Files up to this size are read into memory once; larger ones are streamed.
    IN_MEMORY_LIMIT: int = 1 * MiB
    # botocore's request_checksum_calculation: "when_required" sends only our Content-MD5
    # (works with every S3-compatible store); "when_supported" adds boto3's default CRC checksums.
    REQUEST_CHECKSUM_CALCULATION: str = "when_required"
    RESPONSE_CHECKSUM_VALIDATION: str = "when_required"
    # Attempts per S3 request, with exponential backoff and jitter (botocore "standard" mode).
    MAX_ATTEMPTS: int = 5
    # Copies between two S3 storages on one endpoint stay inside the store: "auto" when both
    # use one set of credentials, "always" when the destination's credentials can read the
    # source's bucket (the settings say so), "never" to stream every file through this process.
    SERVER_SIDE_COPY: str = "auto"
    # Server-side copies up to this size are one CopyObject (at most 5 GB), larger ones parts.
    COPY_CUTOFF: int = 4710 * MiB
    CONNECT_TIMEOUT: float = 10.0
    READ_TIMEOUT: float = 60.0
    # The dotted path of the project's Celery app ("proj.celery.app"), imported only where a
    # task is sent (migrate_storage --enqueue, storage_migrate.tasks): every other start skips
    # Celery. None: the app the project's package imports at start, as Celery's docs have it.
    CELERY_APP: str | None = None

    def validate(self) -> None:
        for name in ("WORKERS", "BATCH_SIZE", "MAX_ATTEMPTS"):
            if int(getattr(self, name)) < 1:
                raise ImproperlyConfigured(f"STORAGE_MIGRATE[{name!r}] must be at least 1.")
        for name in ("MULTIPART_CHUNKSIZE", "MULTIPART_THRESHOLD"):
            if int(getattr(self, name)) < 5 * MiB:
                raise ImproperlyConfigured(
                    f"STORAGE_MIGRATE[{name!r}] must be at least 5 MiB (S3's smallest part)."
                )
        if self.SERVER_SIDE_COPY not in ("auto", "always", "never"):
            raise ImproperlyConfigured(
                "STORAGE_MIGRATE['SERVER_SIDE_COPY'] must be 'auto', 'always' or 'never'."
            )
        if not 5 * MiB <= int(self.COPY_CUTOFF) <= 5 * 1024 * MiB:
            raise ImproperlyConfigured(
                "STORAGE_MIGRATE['COPY_CUTOFF'] must be between 5 MiB and 5 GiB (one CopyObject "
                "copies at most 5 GB)."
            )
        if self.ENGINE not in ("auto", "native", "boto3"):
            raise ImproperlyConfigured(
                "STORAGE_MIGRATE['ENGINE'] must be 'auto', 'native' or 'boto3'."
            )
        if self.CELERY_APP is not None and not (
            isinstance(self.CELERY_APP, str) and "." in self.CELERY_APP.strip(".")
        ):
            raise ImproperlyConfigured(
                "STORAGE_MIGRATE['CELERY_APP'] must be the dotted path of the project's Celery "
                "app, such as 'proj.celery.app'."
            )
        for name in ("REQUEST_CHECKSUM_CALCULATION", "RESPONSE_CHECKSUM_VALIDATION"):
            if getattr(self, name) not in ("when_required", "when_supported"):
                raise ImproperlyConfigured(
                    f"STORAGE_MIGRATE[{name!r}] must be 'when_required' or 'when_supported'."
                )


def get_conf(**overrides: Any) -> Conf:
    """The settings, with keyword overrides (constructor arguments win over settings)."""
    raw = dict(getattr(settings, "STORAGE_MIGRATE", None) or {})
    known = {f.name for f in fields(Conf)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown STORAGE_MIGRATE key(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if "MODELS" in raw:
        raw["MODELS"] = tuple(raw["MODELS"])
    conf = Conf(**raw)
    conf.validate()
    return conf
