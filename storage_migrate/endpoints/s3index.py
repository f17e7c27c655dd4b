"""A bucket folder listed once, for the skip check of a run that walks many rows.

One listing per batch serves rows that sit together in key order (a site's uploads, read in
primary-key order, fill one date folder after another). Rows spread over folders are not: each
batch's keys span the bucket, and the listings of consecutive batches cover the same keys again.
A run that walks many rows therefore lists the folder once (one request per 1000 objects, however
the rows are spread) into an index on disk, so that memory stays flat at millions of objects,
and looks each batch up there. The listing is abandoned, and batches are listed as before, once
it holds several times more objects than the run has rows: a catch-up of a few rows in a large
bucket must not list the whole bucket.

What the index says is a hint of the kind one batch's listing gives, only older: an object the
index holds is proven before a row is skipped as a listing's object is; a name it does not hold
is written conditionally (If-None-Match), so an object that appeared since is never replaced,
and on a store without conditional writes the run asks again (Planner)."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .base import ObjectInfo

if TYPE_CHECKING:
    from .s3 import S3Endpoint

log = logging.getLogger(__name__)

# Keys a listing request asks for (S3's most).
PAGE_SIZE = 1000
# SQLite's default limit on a statement's parameters is 999 in older builds.
LOOKUP_CHUNK = 500


class ListedIndex:
    """Key -> (size, ETag) of every object under one prefix when the listing was made."""

    def __init__(self, endpoint: S3Endpoint, prefix: str) -> None:
        self.endpoint, self.prefix = endpoint, prefix
        handle, self.path = tempfile.mkstemp(prefix="storage-migrate-listing-", suffix=".sqlite3")
        os.close(handle)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        # A scratch file: nothing to keep if the process dies (it is deleted on close).
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("CREATE TABLE listed (key TEXT PRIMARY KEY, size INTEGER, etag TEXT)")
        self.count = 0

    def fill(self, cap: int) -> bool:
        """List the prefix into the index; False (the index is useless) once it holds more than
        ``cap`` objects."""
        endpoint = self.endpoint
        paginator = endpoint.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=endpoint.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": PAGE_SIZE}
        )
        for page in pages:
            entries = [
                (entry["Key"], int(entry["Size"]), entry.get("ETag"))
                for entry in page.get("Contents", ())
            ]
            try:
                self.db.executemany("INSERT OR REPLACE INTO listed VALUES (?, ?, ?)", entries)
            except UnicodeEncodeError:  # a key SQLite cannot hold: such rows ask for themselves
                for entry in entries:
                    with contextlib.suppress(UnicodeEncodeError):
                        self.db.execute("INSERT OR REPLACE INTO listed VALUES (?, ?, ?)", entry)
            self.count += len(entries)
            if self.count > cap:
                log.info(
                    "s3://%s/%s holds more than %d objects: batches are listed one by one",
                    endpoint.bucket,
                    self.prefix,
                    cap,
                )
                return False
        self.db.commit()
        log.info("s3://%s/%s listed once: %d objects", endpoint.bucket, self.prefix, self.count)
        return True

    def lookup(self, names: Iterable[str]) -> dict[str, ObjectInfo | None]:
        """What the listing said of each name (None: it held no object under it). A name whose
        key lies outside the listed prefix, or cannot be looked up, is left out: the caller asks
        the store."""
        endpoint = self.endpoint
        keys: dict[str, list[str]] = {}
        for name in names:
            key = endpoint.key(name)
            if key.startswith(self.prefix):
                keys.setdefault(key, []).append(name)
        found: dict[str, tuple[int, str | None]] = {}
        wanted = list(keys)
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            try:
                rows = self.db.execute(
                    f"SELECT key, size, etag FROM listed WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
            except UnicodeEncodeError:
                rows = []
                for key in chunk:
                    with contextlib.suppress(UnicodeEncodeError):
                        rows += self.db.execute(
                            "SELECT key, size, etag FROM listed WHERE key = ?", (key,)
                        ).fetchall()
                for key in chunk:
                    if not _encodable(key):
                        del keys[key]
            for key, size, etag in rows:
                found[key] = (size, etag)
        result: dict[str, ObjectInfo | None] = {}
        for key, same_key in keys.items():
            listed = found.get(key)
            info = None if listed is None else endpoint.listed_info(listed[0], listed[1])
            for name in same_key:
                result[name] = info
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.db.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _encodable(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def list_once(endpoint: S3Endpoint, prefix: str, cap: int) -> ListedIndex | None:
    """The objects under ``prefix`` (a full key prefix), or None where there are more than
    ``cap`` of them or the listing failed (batches are then listed one by one)."""
    index = ListedIndex(endpoint, prefix)
    try:
        if index.fill(cap):
            return index
    except Exception as exc:  # a listing that fails is no reason to stop: batches ask instead
        log.info("s3://%s/%s could not be listed once: %s", endpoint.bucket, prefix, exc)
    except BaseException:
        index.close()
        raise
    index.close()
    return None
