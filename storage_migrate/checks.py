"""Django system checks of STORAGE_MIGRATE: what can be known without a network call.

Each check calls the validation the commands run, so a check and a command never disagree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from django.conf import settings
from django.core.checks import Error
from django.core.exceptions import ImproperlyConfigured

from .conf import Conf, get_conf
from .targets import metadata_settings, mismatched_digest, orphan_settings, parse_target

SETTING = "settings.STORAGE_MIGRATE"
HINTS = {
    "E001": "STORAGE_MIGRATE is a dict of the keys the README lists under Settings.",
    "E002": "Fix the value; the README's Settings section gives each key's default.",
    "E003": "List 'app_label.Model' or 'app_label.Model.field' with a FileField in MODELS.",
    "E004": (
        "Map roles (bucket, object_key, checksum, sha1, sha256, file_size, content_type) of an "
        "installed model's FileField to its columns of the right type, or to None."
    ),
    "E005": "Map 'app_label.Model.field' to a list of folders inside its storage.",
    "E006": (
        "Map each checksum column under the role of the algorithm its values are in: "
        "'checksum' (MD5), 'sha1' or 'sha256'."
    ),
}


def _error(code: str, message: str) -> Error:
    return Error(message, hint=HINTS[code], obj=SETTING, id=f"storage_migrate.{code}")


def _in_context(where: str, message: str) -> str:
    """The message, prefixed with the setting it is about unless it names it already."""
    return message if message.startswith("STORAGE_MIGRATE") else f"{where}: {message}"


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E001 (shape), E002 (values), E003 (MODELS), E004 (METADATA_FIELDS)."""
    raw = getattr(settings, "STORAGE_MIGRATE", None)
    if raw is not None and not isinstance(raw, Mapping):
        return [_error("E001", f"STORAGE_MIGRATE must be a dict, not {type(raw).__name__}.")]
    known = {f.name for f in fields(Conf)}
    unknown = sorted(set(raw or {}) - known)
    if unknown:
        return [
            _error(
                "E001",
                f"Unknown STORAGE_MIGRATE key(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})",
            )
        ]
    try:
        conf = get_conf()
    except ImproperlyConfigured as exc:
        return [_error("E002", str(exc))]
    except (TypeError, ValueError) as exc:  # e.g. "WORKERS": "many"
        return [_error("E002", f"STORAGE_MIGRATE has a value of the wrong type: {exc}")]
    return _check_models(conf) + _check_metadata_fields(conf) + _check_orphan_folders(conf)


def _check_orphan_folders(conf: Conf) -> list[Error]:
    try:
        orphan_settings(conf)
    except ImproperlyConfigured as exc:
        return [_error("E005", str(exc))]
    return []


def check_digest_columns(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Error]:
    """E006: a checksum column whose values are another algorithm's digests (`check
    --database default`). Skipped when the settings are wrong (E001-E004 say so) or a table
    cannot be read yet (before `migrate`)."""
    from django.db import DatabaseError, router, transaction

    from .targets import resolve_targets

    if not databases:
        return []
    try:
        targets = resolve_targets(None, get_conf())
    except (ImproperlyConfigured, TypeError, ValueError):
        return []
    errors = []
    for target in targets:
        alias = router.db_for_read(target.model)
        try:
            with transaction.atomic(using=alias):  # a failed query leaves no broken transaction
                reason = mismatched_digest(target, alias)
        except DatabaseError:
            continue
        if reason:
            errors.append(_error("E006", reason))
    return errors


def _check_models(conf: Conf) -> list[Error]:
    # Without METADATA_FIELDS, so that a bad mapping is reported once, under E004.
    bare = replace(conf, METADATA_FIELDS=None)
    errors = []
    for spec in conf.MODELS:
        try:
            parse_target(spec, bare)
        except ImproperlyConfigured as exc:
            errors.append(_error("E003", _in_context("STORAGE_MIGRATE['MODELS']", str(exc))))
    return errors


def _check_metadata_fields(conf: Conf) -> list[Error]:
    try:
        keys = list(metadata_settings(conf))
    except ImproperlyConfigured as exc:
        return [_error("E004", str(exc))]
    errors = []
    for key in keys:
        try:
            parse_target(key, conf)  # the model, its field, and metadata_columns() of each
        except ImproperlyConfigured as exc:
            where = f"STORAGE_MIGRATE['METADATA_FIELDS'][{key!r}]"
            errors.append(_error("E004", _in_context(where, str(exc))))
    return errors
