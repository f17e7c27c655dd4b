"""Which models and FileFields to walk, and which metadata columns each model has."""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

from .conf import METADATA_ROLES, Conf


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
    "app.Model.field" (or "app.Model"), else columns found by role name. Columns describe one
    file, so a model with several FileFields has them only where a "app.Model.field" key maps
    them; its other fields move their files alone."""
    label = model._meta.label
    configured = conf.METADATA_FIELDS or {}
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
    columns: dict[str, str] = {}
    for role in METADATA_ROLES:
        column = mapping.get(role, role)
        if column is None:
            continue
        try:
            found = model._meta.get_field(column)
        except FieldDoesNotExist:
            if role in mapping:
                raise ImproperlyConfigured(
                    f"STORAGE_MIGRATE['METADATA_FIELDS'][{where!r}] maps {role!r} to "
                    f"{column!r}, which {label} does not have."
                ) from None
            continue
        if found.concrete:
            columns[role] = str(found.attname)
    return columns


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
