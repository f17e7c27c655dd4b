"""Rows joined with a listing: the rows of a field, read in the byte order of their names (the
order S3 lists keys in), merged with one streamed listing of the folder that holds them all. One
request per 1000 objects; memory holds one batch of rows and one page of the listing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.db.models import Max, Min, Q
from django.db.models.functions import Collate

from ..endpoints.base import Endpoint
from ..names import common_folder
from ..rows import UNKNOWN, Planned, Row, row_columns, with_files
from ..targets import Target

# Collations that order text by its UTF-8 bytes, as S3 lists keys.
BYTE_ORDER = {"postgresql": "C", "sqlite": "BINARY", "mysql": "utf8mb4_bin"}


def joined_rows(
    target: Target, endpoint: Endpoint, collation: str, batch_size: int
) -> Iterator[tuple[Row, Planned]]:
    """Rows in the byte order of their names, merged with one listing of the folder that
    holds them all: memory holds one batch of rows and one page of the listing."""
    base = with_files(target).annotate(_name=Collate(str(target.field.attname), collation))
    bounds = base.aggregate(first=Min("_name"), last=Max("_name"))
    prefix = common_folder(str(bounds["first"]), str(bounds["last"]))
    listing = endpoint.iter_objects(prefix)
    current = next(listing, None)
    ordered = base.order_by("_name", "pk").values_list(*row_columns(target))
    last: tuple[str, Any] | None = None
    while True:
        page = ordered
        if last is not None:  # keyset on (name, pk): names repeat when rows share a file
            page = ordered.filter(Q(_name__gt=last[0]) | Q(_name=last[0], pk__gt=last[1]))
        batch = list(page[:batch_size])
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
