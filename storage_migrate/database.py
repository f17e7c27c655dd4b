"""Before a run: the database can be reached and holds each target's table and columns. One cheap
query per table, so that a database that is down, missing or not migrated is one line (exit 2)
before anything is read or written, not a traceback from the first count."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router, transaction

from .errors import ConfigurationError, one_line
from .rows import row_columns, with_files
from .targets import Target, mismatched_digest


def check_database(targets: Iterable[Target]) -> None:
    """Raise ConfigurationError unless every target's rows can be read where the run reads and
    writes them (the router's databases for the model), and its checksum columns hold digests
    of the algorithm their role says."""
    reached: set[str] = set()
    for target in targets:
        model = target.model
        for alias in dict.fromkeys((router.db_for_read(model), router.db_for_write(model))):
            if alias not in reached:
                _connect(alias)
                reached.add(alias)
            _read_table(alias, target)
        reason = mismatched_digest(target, router.db_for_read(model))
        if reason:
            raise ConfigurationError(reason)


def _connect(alias: str) -> None:
    connection = connections[alias]
    fix = f"check settings.DATABASES[{alias!r}] (DATABASE_URL)"
    name = connection.settings_dict.get("NAME")
    if (
        connection.vendor == "sqlite"
        and connection.connection is None
        and isinstance(name, str | os.PathLike)
        and not os.fspath(name).startswith("file:")  # a URI: left to SQLite
        and not connection.is_in_memory_db()  # type: ignore[attr-defined]
        and not os.path.isfile(name)
    ):
        # Opening it would create an empty file (or fail: no such folder).
        raise ConfigurationError(
            f"Database {alias!r} is the SQLite file {os.fspath(name)}, which does not exist: "
            f"{fix}, or run manage.py migrate to create it."
        )
    try:
        connection.ensure_connection()
    except (DatabaseError, ImproperlyConfigured) as exc:
        raise ConfigurationError(
            f"Database {alias!r} ({_where(connection)}) cannot be reached: {one_line(exc)}: "
            f"{fix}, and that the server is running."
        ) from exc


def _read_table(alias: str, target: Target) -> None:
    """One row of the columns the run reads (a missing table or column fails here). In a
    savepoint, so that a failure does not break a transaction the caller has open."""
    try:
        with transaction.atomic(using=alias):
            list(with_files(target).using(alias).values_list(*row_columns(target))[:1])
    except DatabaseError as exc:
        table = target.model._meta.db_table
        if "locked" in str(exc).lower():  # SQLite: another process holds a write lock
            raise ConfigurationError(
                f"Database {alias!r} ({_where(connections[alias])}) is locked by another "
                f"process ({one_line(exc)}): run again when that process is done, or give "
                f"settings.DATABASES[{alias!r}]['OPTIONS'] a longer 'timeout'."
            ) from exc
        raise ConfigurationError(
            f"Database {alias!r} cannot read {target} (table {table}): {one_line(exc)}: "
            f"run manage.py migrate (or check settings.DATABASES[{alias!r}], DATABASE_URL)."
        ) from exc


def _where(connection: Any) -> str:
    """The vendor, host and database name; never the user or password."""
    params = connection.settings_dict
    host = params.get("HOST") or ""
    port = params.get("PORT") or ""
    place = f"{host}:{port}" if host and port else host
    name = params.get("NAME") or ""
    return " ".join(str(part) for part in (connection.vendor, place, name) if part)
