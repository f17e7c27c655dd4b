"""Rows joined with a listing: the rows of a field, read in the byte order of their names (the
order S3 lists keys in), merged with one streamed listing of the folder that holds them all. One
request per 1000 objects; memory holds one page of rows and a few pages of the listing.

The listing is read ahead in a thread (Endpoint.iter_objects_ahead), so the store answers
while the database and the checks work. Rows are read JOIN_PAGE at a time: each page is one
query that sorts the rows on the collated name (no index orders them so), so a page of 500 rows
made a 100 000-row verify sort the table 200 times."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.db.models import Max, Min, Q, QuerySet
from django.db.models.functions import Collate

from ..endpoints.base import Endpoint
from ..names import common_folder
from ..rows import UNKNOWN, Planned, Row, row_columns, with_files
from ..targets import Target

# Collations that order text by its UTF-8 bytes, as S3 lists keys.
BYTE_ORDER = {"postgresql": "C", "sqlite": "BINARY", "mysql": "utf8mb4_bin"}
# Rows read by one query (at least the batch size). Measured on 100 000 rows: a page of 500
# took 35 ms on PostgreSQL and 21 ms on SQLite; on SQLite 10 000 took 70 ms, on PostgreSQL 5000
# took 80 ms and 20 000 300 ms. A page's tuples are a few MB.
JOIN_PAGE = 10_000


def joined_rows(
    target: Target, endpoint: Endpoint, collation: str, batch_size: int
) -> Iterator[tuple[Row, Planned]]:
    """Rows in the byte order of their names, merged with one listing of the folder that
    holds them all: memory holds one page of rows and a few pages of the listing."""
    base = with_files(target).annotate(_name=Collate(str(target.field.attname), collation))
    bounds = base.aggregate(first=Min("_name"), last=Max("_name"))
    prefix = common_folder(str(bounds["first"]), str(bounds["last"]))
    with contextlib.closing(endpoint.iter_objects_ahead(prefix)) as listing:
        yield from _merged(base, listing, endpoint, target, max(batch_size, JOIN_PAGE))


def _merged(
    base: QuerySet[Any],
    listing: Iterator[tuple[str, Any]],
    endpoint: Endpoint,
    target: Target,
    page_size: int,
) -> Iterator[tuple[Row, Planned]]:
    current = next(listing, None)
    ordered = base.order_by("_name", "pk").values_list(*row_columns(target))
    last: tuple[str, Any] | None = None
    while True:
        page = ordered
        if last is not None:  # keyset on (name, pk): names repeat when rows share a file
            page = ordered.filter(Q(_name__gt=last[0]) | Q(_name=last[0], pk__gt=last[1]))
        batch = list(page[:page_size])
        if not batch:
            return
        last = (str(batch[-1][1]), batch[-1][0])
        for values in batch:
            row = Row.from_values(target, values)
            try:
                respelled = endpoint.canonical(row.name) != row.name
            except (SuspiciousOperation, ValueError):
                respelled = True  # an unsafe name: the check reports it, nothing is read
            if respelled:
                # The storage lists it under another spelling (a//b): ask for it alone.
                yield row, UNKNOWN
                continue
            wanted = row.name.encode("utf-8", "surrogatepass")
            while current is not None and current[0].encode("utf-8", "surrogatepass") < wanted:
                current = next(listing, None)
            if current is not None and current[0] == row.name:
                yield row, current[1]
            else:
                yield row, None
