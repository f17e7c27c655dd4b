"""Orphans: files below the walked fields' upload folders that no row points to. One listing of
each folder, checked against the database 1000 names at a time. Reported, never deleted. The
folders are upload_to's fixed part, or for a function (Wagtail's), what is known of it or what
STORAGE_MIGRATE['ORPHAN_FOLDERS'] names."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator

from django.apps import apps
from django.core.exceptions import SuspiciousOperation
from django.db import models
from django.db.models import Q

from ..conf import Conf
from ..endpoints.base import Endpoint
from ..report.problems import ORPHAN, Problem
from ..targets import Target, file_fields, orphan_folders

ORPHAN_BATCH = 1000


def _outermost(prefixes: set[str]) -> list[str]:
    """Folders to list, none inside another (each object is listed once)."""
    kept: list[str] = []
    for prefix in sorted(prefixes):
        if not any(prefix.startswith(k) for k in kept):
            kept.append(prefix)
    return kept


def every_file_field() -> list[tuple[type[models.Model], str]]:
    """Every concrete FileField of every installed model: a file any of them points to is no
    orphan, whatever --model selected (a false orphan is the dangerous mistake)."""
    return [(model, str(f.attname)) for model in apps.get_models() for f in file_fields(model)]


def find_orphans(
    plans: list[tuple[Target, Endpoint]], conf: Conf
) -> Generator[Problem, None, None]:
    """Objects below the walked fields' upload folders that no row of any model points to."""
    fields = every_file_field()
    by_endpoint: dict[int, tuple[Endpoint, dict[str, Target]]] = {}
    for target, endpoint in plans:
        for prefix in orphan_folders(target, conf):
            owners = by_endpoint.setdefault(id(endpoint), (endpoint, {}))[1]
            owners.setdefault(prefix, target)
    for endpoint, owners in by_endpoint.values():
        respelled = _respelled(fields, endpoint)
        for prefix in _outermost(set(owners)):
            owner = owners[prefix]
            batch: list[str] = []
            # The next pages are listed while the database looks this batch up.
            with contextlib.closing(endpoint.iter_objects_ahead(prefix)) as listing:
                for name, _info in listing:
                    batch.append(name)
                    if len(batch) >= ORPHAN_BATCH:
                        yield from _orphans_in(batch, fields, owner, respelled)
                        batch = []
            yield from _orphans_in(batch, fields, owner, respelled)


def _respelled(fields: list[tuple[type[models.Model], str]], endpoint: Endpoint) -> set[str]:
    """What the storage calls the files of rows whose names it spells otherwise (a//b,
    a/./b, ./a, a/.): few rows, looked up once, so that their files are never taken for
    orphans."""
    names: set[str] = set()
    for model, attname in fields:
        odd = (
            Q(**{f"{attname}__contains": "//"})
            | Q(**{f"{attname}__contains": "/./"})
            | Q(**{f"{attname}__startswith": "./"})
            | Q(**{f"{attname}__endswith": "/."})
            | Q(**{f"{attname}__contains": "\\"})
        )
        for name in model._base_manager.filter(odd).values_list(attname, flat=True):
            try:
                names.add(endpoint.canonical(str(name)))
            except (SuspiciousOperation, ValueError):
                continue
    return names


def _orphans_in(
    names: list[str],
    fields: list[tuple[type[models.Model], str]],
    owner: Target,
    respelled: set[str],
) -> Iterator[Problem]:
    referenced: set[str] = set(respelled)
    for model, attname in fields:
        referenced.update(
            model._base_manager.filter(**{f"{attname}__in": names}).values_list(attname, flat=True)
        )
    for name in names:
        if name not in referenced:
            detail = "no row points to this file"
            yield Problem(ORPHAN, owner.label, owner.field_name, None, name, detail)
