"""Orphans: files below the walked fields' upload folders that no walked row points to. One
listing of each folder, checked against the database 1000 names at a time. Reported, never
deleted."""

from __future__ import annotations

from collections.abc import Iterator

from django.core.exceptions import SuspiciousOperation
from django.db.models import Q

from .endpoints import Endpoint
from .report import ORPHAN, Problem
from .targets import Target

ORPHAN_BATCH = 1000


def upload_prefix(target: Target) -> str | None:
    """The fixed folder a FileField uploads under (``file_manager/`` of
    ``file_manager/%Y/%m/%d/``), or None when upload_to is a function."""
    upload_to = target.field.upload_to
    if callable(upload_to):
        return None
    text = str(upload_to or "")
    fixed = text.split("%", 1)[0]
    return fixed[: fixed.rfind("/") + 1] if "/" in fixed else ""


def find_orphans(plans: list[tuple[Target, Endpoint]]) -> Iterator[Problem]:
    """Objects below the walked fields' upload folders that no walked row points to."""
    seen: set[tuple[int, str]] = set()
    for target, endpoint in plans:
        prefix = upload_prefix(target)
        if prefix is None or (id(endpoint), prefix) in seen:
            continue
        seen.add((id(endpoint), prefix))
        sharing = [t for t, e in plans if e is endpoint]
        respelled = _respelled(sharing, endpoint)
        batch: list[str] = []
        for name, _info in endpoint.iter_objects(prefix):
            batch.append(name)
            if len(batch) >= ORPHAN_BATCH:
                yield from _orphans_in(batch, sharing, target, respelled)
                batch = []
        yield from _orphans_in(batch, sharing, target, respelled)


def _respelled(targets: list[Target], endpoint: Endpoint) -> set[str]:
    """What the storage calls the files of rows whose names it spells otherwise (a//b,
    a/./b, ./a): few rows, looked up once, so that their files are never taken for orphans."""
    names: set[str] = set()
    for target in targets:
        attname = str(target.field.attname)
        odd = (
            Q(**{f"{attname}__contains": "//"})
            | Q(**{f"{attname}__contains": "/./"})
            | Q(**{f"{attname}__startswith": "./"})
            | Q(**{f"{attname}__contains": "\\"})
        )
        for name in target.model._base_manager.filter(odd).values_list(attname, flat=True):
            try:
                names.add(endpoint.canonical(str(name)))
            except (SuspiciousOperation, ValueError):
                continue
    return names


def _orphans_in(
    names: list[str], targets: list[Target], owner: Target, respelled: set[str]
) -> Iterator[Problem]:
    referenced: set[str] = set(respelled)
    for target in targets:
        attname = str(target.field.attname)
        referenced.update(
            target.model._base_manager.filter(**{f"{attname}__in": names}).values_list(
                attname, flat=True
            )
        )
    for name in names:
        if name not in referenced:
            detail = "no row points to this file"
            yield Problem(ORPHAN, owner.label, owner.field_name, None, name, detail)
