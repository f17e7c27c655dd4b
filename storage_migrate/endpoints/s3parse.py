"""Listings parsed at a fraction of botocore's cost, with botocore's own results.

A listing of a million objects is a thousand pages of a thousand entries, and botocore turns
each entry into a dict by walking the service model generically (0.1 ms an entry: most of the
time of a re-run that copies nothing, and of verify_files). It also parses every page twice: once
to see whether a 200 answer is an error in disguise (which S3 sends for copies, never for a
listing, but which also catches a body cut short), once for the result.

Here botocore still sends, signs, retries and parses every request; only two of its steps are
narrowed, for the entries of a listing alone:
- an entry whose children are all plain values of the model (Key, ETag, Size, LastModified,
  StorageClass, flattened lists of them such as ChecksumAlgorithm, an Owner or a RestoreStatus
  of plain values) is read with the very handlers botocore would call for each, found once per
  shape instead of once per entry; any other entry (a tag the model does not know, a repeated
  tag) goes through botocore's generic walk as before;
- the disguised-error check of a ListObjectsV2 page looks at the ends of the body (an error's
  root element, and a body cut short before its closing tag) instead of parsing it whole; every
  other operation keeps botocore's check.
tests/test_listing_parse.py compares both with botocore's own, entry by entry."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

# Shapes whose instances a listing holds by the thousand.
FAST_SHAPES = frozenset(
    {"Object", "ObjectVersion", "CommonPrefix", "DeleteMarkerEntry", "Owner", "RestoreStatus"}
)
SCALARS = frozenset({"string", "integer", "long", "timestamp", "boolean", "float", "double"})
LISTINGS = frozenset({"ListObjectsV2", "ListObjects"})
_DECLARATION = re.compile(rb"\s*(<\?xml[^>]*\?>)?\s*")

Member = tuple[str, Any, Callable[[Any, Any], Any], bool]  # name, shape, handler, in a list


@functools.cache
def listing_parser_class() -> type[Any]:
    """botocore's RestXMLParser with the direct path for listing entries."""
    from botocore import parsers

    base: Any = parsers.RestXMLParser  # its private methods are not in its type stubs

    class ListingParser(base):  # type: ignore[misc]
        def _table(self, shape: Any) -> dict[str, Member] | None:
            """Tag -> member, for a shape whose members are all plain values (or flattened
            lists of them) read from child elements; None for any other shape."""
            tables: dict[int, dict[str, Member] | None] = self.__dict__.setdefault("_tables", {})
            key = id(shape)
            if key in tables:
                return tables[key]
            table: dict[str, Member] = {}
            for name, member in shape.members.items():
                serialization = member.serialization
                if serialization.get("location") or serialization.get("xmlAttribute"):
                    tables[key] = None
                    return None
                in_list = member.type_name == "list"
                value_shape = member.member if in_list else member
                nested = not in_list and member.type_name == "structure"
                if nested and member.name not in FAST_SHAPES:
                    continue  # met in an entry: that entry takes botocore's generic walk
                if not nested and (
                    value_shape.type_name not in SCALARS
                    or (in_list and not serialization.get("flattened"))
                ):
                    continue
                tag = self._member_key_name(member, name)
                handler = getattr(self, f"_handle_{value_shape.type_name}")
                table[tag] = (name, value_shape, handler, in_list)
            tables[key] = table
            return table

        def _handle_structure(self, shape: Any, node: Any) -> Any:
            if shape.name not in FAST_SHAPES or isinstance(node, list):
                return super()._handle_structure(shape, node)
            table = self._table(shape)
            if table is None:
                return super()._handle_structure(shape, node)
            parsed: dict[str, Any] = {}
            for child in node:
                tag = child.tag
                if tag[:1] == "{":
                    tag = tag.rpartition("}")[2]
                member = table.get(tag)
                if member is None:
                    return super()._handle_structure(shape, node)
                name, value_shape, handler, in_list = member
                if in_list:
                    parsed.setdefault(name, []).append(handler(value_shape, child))
                elif name in parsed:  # a repeated tag: botocore's way, whatever it is
                    return super()._handle_structure(shape, node)
                else:
                    parsed[name] = handler(value_shape, child)
            return parsed

    return ListingParser


def looks_like_error(body: bytes) -> bool:
    """What botocore's disguised-error check finds in a listing page's body, found at its ends:
    an Error root element, or a body cut short (no closing tag of its root element)."""
    if not body:
        return False
    start = _DECLARATION.match(body)
    rest = body[start.end() if start else 0 :]
    if rest.startswith(b"<Error>") or rest.startswith(b"<Error "):
        return True
    match = re.match(rb"<([A-Za-z_][\w.\-]*)", rest)
    if not match:
        return True  # not XML: botocore's parse would fail too
    return not body.rstrip().endswith(b"</" + match.group(1) + b">")


def install(session: Any) -> None:
    """Make the clients of a botocore session parse listings this way."""
    from botocore import handlers, parsers

    factory = session.get_component("response_parser_factory")
    if getattr(factory, "listing_parsers", False):
        return
    create = factory.create_parser

    def create_parser(protocol_name: str) -> Any:
        parser = create(protocol_name)
        if protocol_name == "rest-xml" and type(parser) is parsers.RestXMLParser:
            # The same parser with its settings (the timestamp parser), one method narrowed.
            parser.__class__ = listing_parser_class()
        return parser

    factory.create_parser = create_parser
    factory.listing_parsers = True

    original = getattr(handlers, "_handle_200_error")  # noqa: B009 (private, not in the stubs)

    def handle_200_error(operation_model: Any, response_dict: Any, **kwargs: Any) -> None:
        if operation_model.name not in LISTINGS:
            original(operation_model, response_dict, **kwargs)
        elif (
            response_dict
            and response_dict.get("status_code") == 200
            and looks_like_error(response_dict.get("body") or b"")
        ):
            response_dict["status_code"] = 500

    events = session.get_component("event_emitter")
    events.unregister("before-parse.s3.*", original)
    events.register_first("before-parse.s3.*", handle_200_error)
