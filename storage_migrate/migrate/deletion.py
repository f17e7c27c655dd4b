"""Deleting sources (--delete-source), only once the whole run is over.

A source is deleted only when every row of the walked tables that refers to it was committed clean
in this run (rows that share it through a symlink, a second spelling or a later batch included),
the source is unchanged since it was read, and the destination, checked again right before the
delete, still holds the very object that was verified and is not the source itself. The rows
waiting for their delete are kept in a temporary SQLite file, not in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .. import stopping
from ..endpoints.base import Endpoint, ObjectInfo
from ..endpoints.places import identity, loose_identity, same_object
from ..report.problems import ERROR, Problem
from ..rows import Row, RowResult, with_files
from ..targets import Target

NAMES_PER_QUERY = 500
# Called for each source deleted (or, in a dry run, that would be): whose row, and its size.
DeletedCallback = Callable[[Problem, int], None]


def _other_fields(src: Endpoint, walked: list[Target]) -> list[tuple[Target, Endpoint]]:
    """The FileFields of installed models that the run does not walk and whose storage may keep
    its files where the source does (a row of theirs may name a file the run would delete),
    each with the endpoint its names are found through. A FallbackStorage is both of its
    storages; a storage that is neither local disk nor S3 cannot be told apart, so it is
    taken to share the source's files under the same names."""
    from django.apps import apps

    from ..endpoints.base import alias_of
    from ..endpoints.factory import endpoint_for_storage
    from ..endpoints.places import place_of
    from ..storage import FallbackStorage
    from ..targets import file_fields

    seen = {(t.label, t.field_name) for t in walked}
    here = place_of(src)
    others = []
    for model in apps.get_models():
        if model._meta.abstract or model._meta.proxy:
            continue
        for field in file_fields(model):
            if (model._meta.label, field.name) in seen:
                continue
            storage = field.storage
            try:
                if isinstance(storage, FallbackStorage):
                    storages = [storage.primary, storage.fallback]
                else:
                    storages = [storage]
            except Exception:  # an alias that is gone: cannot tell, so it shares the files
                others.append((Target(model, field, {}), src))
                continue
            for each in storages:
                try:
                    endpoint = endpoint_for_storage(
                        alias_of(each) or type(each).__name__, each, src.conf
                    )
                    if endpoint.kind not in ("local", "s3"):
                        raise LookupError  # cannot tell where it keeps its files
                    there = place_of(endpoint)
                except Exception:
                    endpoint, there = src, here  # cannot tell: it shares the files
                if here.contains(there) or there.contains(here):
                    others.append((Target(model, field, {}), endpoint))
                    break
    return others


def _identity_of(endpoint: Endpoint, name: str) -> tuple[Any, ...] | None:
    """What a row of another field refers to, found by status alone; None when it reaches no
    file."""
    from ..names import unsafe_reason

    if not unsafe_reason(name):
        with contextlib.suppress(Exception):  # else found by status alone, below
            if endpoint.kind != "local" or os.path.lexists(endpoint.local_path(name) or ""):
                return identity(endpoint, name)
            return None
    return loose_identity(endpoint, name)


def _dump(value: Any) -> str:
    return json.dumps(value, default=str)


def destination_proof(
    dst: Endpoint, info: ObjectInfo | None, fingerprint: tuple[Any, ...] | None
) -> list[Any] | None:
    """What must still hold at the destination when the source is deleted, as the worker saw it
    when it proved the copy: the verified object's size and ETag on S3; elsewhere the status of
    the file written (or, for a skip, taken before its bytes were read to prove them)."""
    if dst.kind == "s3":
        return None if info is None or not info.etag else [info.size, info.etag]
    return None if fingerprint is None else list(fingerprint)


def _current_proof(dst: Endpoint, name: str) -> list[Any] | None:
    if dst.kind == "s3":
        info = dst.stat(name)
        return None if info is None else [info.size, info.etag]
    fingerprint = dst.fingerprint(name)
    return None if fingerprint is None else list(fingerprint)


class DeletionLedger:
    """The rows whose sources may be deleted at the end of the run, and the sources that a row
    with a problem refers to (never deleted)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect("")  # a private temporary file: memory stays flat in rows
        # Closed with the ledger, whatever path drops it (Python 3.13 warns of an open one).
        self._closer = weakref.finalize(self, self.db.close)
        self.deleted = self.bytes_deleted = 0
        self.db.executescript(
            "CREATE TABLE cand (ident TEXT, label TEXT, field TEXT, pk TEXT, name TEXT,"
            " fingerprint TEXT, proof TEXT);"
            "CREATE TABLE taint (ident TEXT PRIMARY KEY);"
            "CREATE INDEX cand_name ON cand (label, field, name);"
        )

    def close(self) -> None:
        self._closer()

    def taint(self, ident: tuple[Any, ...]) -> None:
        self.db.execute("INSERT OR IGNORE INTO taint VALUES (?)", (_dump(ident),))

    def add(self, result: RowResult, ident: tuple[Any, ...], proof: list[Any] | None) -> None:
        self._insert(result.row, ident, result.fingerprint, proof)

    def add_row(self, row: Row, ident: tuple[Any, ...], checksum: str | None) -> None:
        """purge_source's candidate: a row that qualifies, with its stored checksum (its file's
        fingerprint and proof are taken at the moment of deletion)."""
        self._insert(row, ident, None, checksum)

    def _insert(self, row: Row, ident: tuple[Any, ...], fingerprint: Any, proof: Any) -> None:
        target = row.target
        self.db.execute(
            "INSERT INTO cand VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                *(_dump(ident), target.label, target.field_name, _dump(row.pk), row.name),
                *(_dump(fingerprint), _dump(proof)),
            ),
        )

    def count_candidates(self) -> int:
        query = "SELECT COUNT(DISTINCT name) FROM cand WHERE ident NOT IN (SELECT ident FROM taint)"
        return int(self.db.execute(query).fetchone()[0])

    def candidate_groups(self) -> Iterator[list[tuple[str, str, Any, str, Any]]]:
        """purge_source's files whose every referring row qualifies, one group per stored file
        (its names: a symlink, a hard link or another spelling are one file), each row with
        the checksum stored by add_row(), streamed."""
        query = (
            "SELECT ident, label, field, pk, name, proof FROM cand"
            " WHERE ident NOT IN (SELECT ident FROM taint) ORDER BY ident, name, pk"
        )
        group: list[tuple[str, str, Any, str, Any]] = []
        current = None
        for ident, label, field, pk, name, checksum in self.db.cursor().execute(query):
            if ident != current and group:
                yield group
                group = []
            current = ident
            group.append((label, field, json.loads(pk), name, json.loads(checksum)))
        if group:
            yield group

    def _block_shared(
        self,
        src: Endpoint,
        targets: list[Target],
        others: list[tuple[Target, Endpoint]] | None = None,
    ) -> None:
        """Taint every source that a row refers to by name and that is not among the rows
        committed clean in this run: a row of a walked field that was not walked (created
        during the run) or whose problem came after the file's other rows were committed, and
        any row of a FileField not walked whose storage keeps its files where the source does.
        Rows of walked fields that share a file under another name were walked too (whole
        tables are walked) and tainted it by identity; rows of the other fields taint what
        they refer to by identity."""
        for target, endpoint in _other_fields(src, targets) if others is None else others:
            self._taint_referred(target, endpoint)
        names = self.db.cursor()
        names.execute("SELECT DISTINCT name FROM cand ORDER BY name")
        ledger = self.db.cursor()
        while chunk := [name for (name,) in names.fetchmany(NAMES_PER_QUERY)]:
            marks = ",".join("?" * len(chunk))
            blocked: set[str] = set()
            for target in targets:
                attname = str(target.field.attname)
                clean = set(
                    ledger.execute(
                        f"SELECT name, pk FROM cand WHERE label = ? AND field = ?"
                        f" AND name IN ({marks})",
                        (target.label, target.field_name, *chunk),
                    ).fetchall()
                )
                referring = target.model._base_manager.filter(**{f"{attname}__in": chunk})
                for name, pk in referring.values_list(attname, "pk").iterator():
                    if (str(name), _dump(pk)) not in clean:
                        blocked.add(str(name))
            for name in blocked:
                ledger.execute(
                    "INSERT OR IGNORE INTO taint SELECT ident FROM cand WHERE name = ?", (name,)
                )

    def _taint_referred(self, target: Target, endpoint: Endpoint) -> None:
        """Every file a row of a field not walked refers to stays: by identity, so that another
        spelling of the name, a symlink or a storage rooted inside the source's folder is seen."""
        attname = str(target.field.attname)
        names = (
            with_files(target).values_list(attname, flat=True).distinct().iterator(chunk_size=2000)
        )
        for name in names:
            ident = _identity_of(endpoint, str(name))
            if ident is not None:
                self.taint(ident)

    def _deletable(self) -> Iterator[list[tuple[str, str, Any, str, Any, Any]]]:
        """The source names whose every referring row is clean, one row each, streamed in
        groups: the names of one stored file (a symlink, a hard link) together."""
        query = (
            "SELECT ident, label, field, pk, name, fingerprint, proof FROM cand"
            " WHERE ident NOT IN (SELECT ident FROM taint) GROUP BY name ORDER BY ident, name"
        )
        group: list[tuple[str, str, Any, str, Any, Any]] = []
        current = None
        for ident, label, field, pk, name, fingerprint, proof in self.db.cursor().execute(query):
            if ident != current and group:
                yield group
                group = []
            current = ident
            loaded = (json.loads(pk), name, json.loads(fingerprint), json.loads(proof))
            group.append((label, field, *loaded))
        if group:
            yield group

    def delete_sources(
        self,
        src: Endpoint,
        dst: Endpoint,
        targets: list[Target],
        on_problem: Callable[[Problem], None],
        on_deleted: DeletedCallback | None = None,
        *,
        dry_run: bool = False,
    ) -> tuple[int, int]:
        """Delete what may be deleted; every refusal is a problem of the row. A dry run says
        what would be deleted. Returns how many sources, and how many bytes."""
        self._block_shared(src, targets)
        deleted = size = 0
        self.deleted = self.bytes_deleted = 0  # so far: what an interrupted run reports
        for group in self._deletable():
            removed = False
            for label, field, pk, name, fingerprint, proof in _links_first(src, group):
                stopping.check()  # between two deletes: the rest stay, to be deleted by a re-run
                refusal = None
                if removed and src.kind == "local" and fingerprint:
                    # Deleting a hard link of this file changed its ctime, and nothing else.
                    current = src.fingerprint(name)
                    if current is not None and list(current[:3]) == list(fingerprint[:3]):
                        fingerprint = current
                try:
                    refusal, bytes_ = delete_source(
                        src, dst, name, fingerprint, proof, dry_run=dry_run
                    )
                    removed = removed or refusal is None
                    if refusal is None:
                        deleted += 1
                        size += bytes_
                        self.deleted, self.bytes_deleted = deleted, size
                        if on_deleted is not None:
                            on_deleted(Problem("deleted", label, field, pk, name, ""), bytes_)
                except Exception as exc:
                    refusal = f"copied and committed, but the source could not be deleted: {exc}"
                if refusal and refusal != _GONE:
                    on_problem(Problem(ERROR, label, field, pk, name, refusal))
        return deleted, size


_GONE = "gone"


def _links_first(src: Endpoint, group: list[Any]) -> list[Any]:
    """A file's names with its symlinks first: a link goes before what it names."""

    def is_link(row: Any) -> bool:
        try:
            return src.kind == "local" and os.path.islink(src.local_path(row[3]) or "")
        except Exception:
            return False

    return sorted(group, key=lambda row: not is_link(row))


def _size_of(fingerprint: Any) -> int:
    """The size a fingerprint starts with (local disk and S3 both), else 0."""
    return int(fingerprint[0]) if fingerprint and isinstance(fingerprint[0], int) else 0


def delete_source(
    src: Endpoint,
    dst: Endpoint,
    name: str,
    fingerprint: Any,
    proof: Any,
    *,
    dry_run: bool = False,
    quarantine: str | None = None,
) -> tuple[str | None, int]:
    """The one place a source file is deleted (--delete-source, purge_source): only while it is
    the file that was copied (its fingerprint), the destination still holds the verified copy
    (its proof), and the two are not one object; the endpoint then removes it only if it is
    still that file at the moment of removal (purge_source --quarantine: moves it under that
    prefix). Returns why it was not deleted (None: it was, or in a dry run would be; _GONE: it
    already was) and its size."""
    current = src.fingerprint(name)
    if dry_run:
        return (_GONE if current is None else None), _size_of(current)
    refusal = _refusal(src, dst, name, current, fingerprint, proof)
    if refusal is None and current is not None:
        refusal = src.remove_if_unchanged(name, current, quarantine)
    return refusal, _size_of(current)


def _refusal(
    src: Endpoint, dst: Endpoint, name: str, current: Any, fingerprint: Any, proof: Any
) -> str | None:
    """Why this source must not be deleted now, or None."""
    if current is None:
        return _GONE  # already gone (an earlier run, or a row sharing the file)
    if fingerprint is None or list(current) != list(fingerprint):
        return "source changed after it was copied; it was not deleted (run again)"
    if proof is None or _current_proof(dst, name) != proof:
        return (
            "the destination no longer holds the verified copy; the source was not deleted "
            "(run again)"
        )
    if same_object(src, dst, name):
        return "the destination object is the source itself; it was not deleted"
    return None
