"""Which models and FileFields to walk, and which metadata columns each model has."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

from .conf import DIGEST_ROLES, METADATA_ROLES, Conf
from .hashing import NAMES, algorithm_of, looks_like
from .known import known_columns, known_folders


@dataclass(frozen=True)
class Target:
    """One FileField of one model, and the model's metadata columns (role -> column name)."""

    model: type[models.Model]
    field: models.FileField
    columns: dict[str, str]

    @property
    def label(self) -> str:
        return self.model._meta.label

    @property
    def field_name(self) -> str:
        return str(self.field.name)

    def __str__(self) -> str:
        return f"{self.label}.{self.field_name}"

    @property
    def digests(self) -> dict[str, str]:
        """Role -> algorithm of the checksum columns this field has (MD5, SHA-1, SHA-256)."""
        return {role: a for role, a in DIGEST_ROLES.items() if role in self.columns}

    @property
    def others(self) -> tuple[str, ...]:
        """The algorithms other than MD5 its columns keep: hashed too whenever bytes are read."""
        return tuple(a for a in self.digests.values() if a != "md5")


def file_fields(model: type[models.Model]) -> list[models.FileField]:
    """The concrete FileFields (ImageFields included) of a model, in declaration order."""
    return [
        f
        for f in model._meta.get_fields()
        if isinstance(f, models.FileField) and f.concrete and f.model is model
    ]


def metadata_columns(
    model: type[models.Model], field: models.FileField, conf: Conf
) -> dict[str, str]:
    """The metadata columns of one FileField: STORAGE_MIGRATE['METADATA_FIELDS'] under
    "app.Model.field" (or "app.Model"), else what is known of the model (Wagtail's file_hash
    is a SHA-1), else columns found by role name. Columns describe one file, so a model with
    several FileFields has them only where a "app.Model.field" key maps them; its other fields
    move their files alone."""
    label = model._meta.label
    configured = metadata_settings(conf)
    single = len(file_fields(model)) == 1
    field_key = f"{label}.{field.name}"
    if field_key in configured:
        mapping = dict(configured[field_key])
    elif label in configured:
        if not single:
            raise ImproperlyConfigured(
                f"STORAGE_MIGRATE['METADATA_FIELDS'][{label!r}]: {label} has several FileFields; "
                f"map each one under '{label}.<field>'"
            )
        mapping = dict(configured[label])
    elif single:
        mapping = {}
    else:
        return {}
    where = field_key if field_key in configured else label
    unknown = sorted(set(mapping) - set(METADATA_ROLES))
    if unknown:
        raise ImproperlyConfigured(
            f"STORAGE_MIGRATE['METADATA_FIELDS'][{where!r}] has unknown role(s) "
            f"{', '.join(unknown)} (known: {', '.join(METADATA_ROLES)})"
        )
    known = known_columns(model, field)
    columns: dict[str, str] = {}
    for role in METADATA_ROLES:
        column = mapping.get(role, known.get(role, role))
        if column is None or (role not in mapping and column in mapping.values()):
            continue  # no such column, or one the settings give another role
        try:
            found = model._meta.get_field(column)
        except FieldDoesNotExist:
            if role in mapping:
                raise ImproperlyConfigured(
                    f"STORAGE_MIGRATE['METADATA_FIELDS'][{where!r}] maps {role!r} to "
                    f"{column!r}, which {label} does not have."
                ) from None
            continue
        needed = _wrong_type(role, found)
        if needed is None and isinstance(found, models.Field):
            columns[role] = str(found.attname)
        elif role in mapping:
            raise ImproperlyConfigured(
                f"STORAGE_MIGRATE['METADATA_FIELDS'][{where!r}] maps {role!r} to {column!r}, "
                f"a {_describe(found)}: {role!r} must be {needed}."
            )
        # A column found by its role's name but of another type is not a metadata column.
    roles_of: dict[str, list[str]] = {}
    for role, column in columns.items():
        roles_of.setdefault(column, []).append(role)
    for column, roles in roles_of.items():
        if len(roles) > 1:
            raise ImproperlyConfigured(
                f"STORAGE_MIGRATE['METADATA_FIELDS'][{where!r}] gives the column {column!r} "
                f"several roles ({', '.join(roles)}): a column holds one value."
            )
    for role, column in columns.items():
        theirs = next((r for r, c in known.items() if c == column), None)
        if role in DIGEST_ROLES and theirs in DIGEST_ROLES and theirs != role:
            algorithm = NAMES[DIGEST_ROLES[theirs]]
            raise ImproperlyConfigured(
                f"STORAGE_MIGRATE['METADATA_FIELDS'][{where!r}] maps {role!r} to {column!r}, "
                f"which holds {label}'s {algorithm} digests: map it as {theirs!r} (or not at "
                "all: it is known)."
            )
    return columns


def metadata_settings(conf: Conf) -> Mapping[str, Mapping[str, Any]]:
    """STORAGE_MIGRATE['METADATA_FIELDS'], refused unless it is a dict of dicts."""
    configured = conf.METADATA_FIELDS or {}
    if not isinstance(configured, Mapping) or not all(
        isinstance(v, Mapping) for v in configured.values()
    ):
        raise ImproperlyConfigured(
            "STORAGE_MIGRATE['METADATA_FIELDS'] must be a dict of 'app_label.Model[.field]' -> "
            "{role: column name or None}"
        )
    return configured


_TEXT_ROLES_MIN_LENGTH = {
    "checksum": 32,
    "sha1": 40,
    "sha256": 64,
    "bucket": 3,
    "object_key": 0,
    "content_type": 0,
}
# How many of a checksum column's first values are looked at to tell its algorithm.
DIGEST_SAMPLE = 20


def _wrong_type(role: str, field: Any) -> str | None:
    """What a column for ``role`` must be, or None when ``field`` is that: values are written
    with update(), so a column of another type fails (or corrupts) only after the copies."""
    plain = isinstance(field, models.Field) and field.concrete and not field.is_relation
    plain = plain and not field.primary_key
    if role == "file_size":
        if plain and isinstance(field, models.IntegerField):
            return None
        return (
            "an integer field (IntegerField, BigIntegerField, PositiveIntegerField, "
            "PositiveBigIntegerField or a subclass; not a relation)"
        )
    least = _TEXT_ROLES_MIN_LENGTH[role]
    needed = "a CharField or TextField (or a subclass)" + (
        f" with max_length of at least {least}" if least else ""
    )
    if not plain or not isinstance(field, models.CharField | models.TextField):
        return needed
    if field.max_length is not None and field.max_length < least:
        return needed
    return None


def mismatched_digest(target: Target, using: str | None = None) -> str | None:
    """Why a checksum column's mapping is wrong, or None: among its first and last values (by
    primary key), one is a digest of another algorithm (Wagtail's SHA-1 file_hash mapped as
    the MD5 `checksum`), or most are no digest of the role's algorithm at all. Checked before a
    run, so that no digest is compared with another algorithm's and none is ever written into
    another algorithm's column."""
    for role, algorithm in target.digests.items():
        column = target.columns[role]
        filled = (
            target.model._base_manager.db_manager(using)
            .exclude(**{column: ""})
            .exclude(**{f"{column}__isnull": True})
        )
        first = list(filled.order_by("pk").values_list(column, flat=True)[:DIGEST_SAMPLE])
        last = list(filled.order_by("-pk").values_list(column, flat=True)[:DIGEST_SAMPLE])
        values = first + last if len(first) == DIGEST_SAMPLE else first
        wrong = [v for v in values if not looks_like(algorithm, v)]
        foreign = [v for v in wrong if algorithm_of(v)]
        if not foreign and len(wrong) * 2 <= len(values):
            continue
        example = (foreign or wrong)[0]
        seen = algorithm_of(example)
        role_of = {a: r for r, a in DIGEST_ROLES.items()}
        fix = (
            f"map it as {role_of[seen]!r}: {column!r} (a {NAMES[seen]} column)"
            if seen
            else f"map {role!r} to another column, or to None"
        )
        return (
            f"{target}: {role!r} ({NAMES[algorithm]}) is the column {column!r}, but "
            f"{len(wrong)} of {len(values)} of its values looked at are not {NAMES[algorithm]} "
            f"digests (e.g. {str(example)[:80]!r}"
            + (f", a {NAMES[seen]}" if seen else "")
            + f"): in STORAGE_MIGRATE['METADATA_FIELDS'], {fix}."
        )
    return None


def _describe(field: Any) -> str:
    kind = type(field).__name__
    length = getattr(field, "max_length", None)
    return f"{kind}(max_length={length})" if length is not None and not field.is_relation else kind


def unfit(target: Target, role: str, value: Any) -> str | None:
    """Why the role's column cannot hold ``value`` (a header longer than a CharField, a NUL
    PostgreSQL refuses, a size past an integer column's range), or None when it can."""
    from django.db import connection

    column = target.model._meta.get_field(target.columns[role])
    if isinstance(value, str):
        if "\x00" in value:
            return "it holds a NUL character, which the column cannot store"
        limit = getattr(column, "max_length", None)
        if isinstance(column, models.CharField) and limit and len(value) > limit:
            return f"{len(value)} characters do not fit its column (at most {limit})"
    elif isinstance(value, int) and isinstance(column, models.IntegerField):
        try:
            low, high = connection.ops.integer_field_range(column.get_internal_type())
        except KeyError:  # a custom column type: the database alone says
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{value} is out of its column's range"
    return None


def _model(label: str) -> type[models.Model]:
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        raise ImproperlyConfigured(
            f"Unknown model {label!r}: use app_label.ModelName, e.g. core.FileManager"
        ) from None


def parse_target(spec: str, conf: Conf) -> list[Target]:
    """'app_label.Model' (every FileField) or 'app_label.Model.field' (one)."""
    parts = spec.split(".")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImproperlyConfigured(
            f"Bad model {spec!r}: use app_label.Model or app_label.Model.field"
        )
    model = _model(".".join(parts[:2]))
    fields = file_fields(model)
    if len(parts) == 3:
        fields = [f for f in fields if f.name == parts[2]]
        if not fields:
            known = ", ".join(f.name for f in file_fields(model)) or "none"
            raise ImproperlyConfigured(
                f"{model._meta.label} has no FileField {parts[2]!r} (its FileFields: {known})"
            )
    elif not fields:
        raise ImproperlyConfigured(f"{model._meta.label} has no FileField to migrate")
    return [Target(model, f, metadata_columns(model, f, conf)) for f in fields]


def resolve_targets(specs: list[str] | tuple[str, ...] | None, conf: Conf) -> list[Target]:
    """--model values, else STORAGE_MIGRATE['MODELS'], else every installed concrete model
    with a FileField."""
    chosen = list(specs or conf.MODELS)
    targets: list[Target] = []
    if chosen:
        for spec in chosen:
            targets.extend(parse_target(spec, conf))
    else:
        for model in apps.get_models():
            if model._meta.abstract or model._meta.proxy:
                continue
            targets.extend(
                Target(model, f, metadata_columns(model, f, conf)) for f in file_fields(model)
            )
    seen: set[tuple[str, str]] = set()
    unique = []
    for t in targets:
        if (t.label, t.field_name) not in seen:
            seen.add((t.label, t.field_name))
            unique.append(t)
    return unique


def orphan_folders(target: Target, conf: Conf) -> list[str]:
    """The folders verify_files --orphans lists for a field: STORAGE_MIGRATE['ORPHAN_FOLDERS']
    under "app.Model.field", else what is known of the model (Wagtail's upload_to functions),
    else the fixed folder of its upload_to (none when upload_to is a function)."""
    configured = orphan_settings(conf)
    key = str(target)
    if key in configured:
        return [_folder(f) for f in configured[key]]
    known = known_folders(target.model, target.field)
    if known is not None:
        return known
    prefix = upload_prefix(target)
    return [] if prefix is None else [prefix]


def orphan_settings(conf: Conf) -> Mapping[str, list[str]]:
    """STORAGE_MIGRATE['ORPHAN_FOLDERS'], refused unless it maps a model's FileField to a list
    of folder names."""
    configured = conf.ORPHAN_FOLDERS or {}
    shape = (
        "STORAGE_MIGRATE['ORPHAN_FOLDERS'] must be a dict of 'app_label.Model.field' -> "
        "a list of folders, e.g. {'wagtailimages.Image.file': ['original_images/']}"
    )
    if not isinstance(configured, Mapping):
        raise ImproperlyConfigured(shape)
    for key, folders in configured.items():
        if isinstance(folders, str) or not isinstance(folders, list | tuple):
            raise ImproperlyConfigured(f"{shape}; {key!r} maps to {folders!r}")
        for folder in folders:
            if not isinstance(folder, str) or folder.startswith("/") or ".." in folder.split("/"):
                raise ImproperlyConfigured(
                    f"STORAGE_MIGRATE['ORPHAN_FOLDERS'][{key!r}]: {folder!r} is not a folder "
                    "inside the storage (relative, no '..')"
                )
        if str(key).count(".") != 2:
            raise ImproperlyConfigured(
                f"STORAGE_MIGRATE['ORPHAN_FOLDERS']: {key!r} is not 'app_label.Model.field'"
            )
        parse_target(str(key), conf)  # the model and its FileField exist
    return {str(k): list(v) for k, v in configured.items()}


def _folder(folder: str) -> str:
    text = folder.strip("/")
    return f"{text}/" if text else ""


def upload_prefix(target: Target) -> str | None:
    """The fixed folder a FileField uploads under (``file_manager/`` of
    ``file_manager/%Y/%m/%d/``, ``avatars/`` of ``avatars``), or None when upload_to is a
    function."""
    upload_to = target.field.upload_to
    if callable(upload_to):
        return None
    text = str(upload_to or "")
    if "%" not in text:
        return text.rstrip("/") + "/" if text.strip("/") else ""
    fixed = text.split("%", 1)[0]
    return fixed[: fixed.rfind("/") + 1]
