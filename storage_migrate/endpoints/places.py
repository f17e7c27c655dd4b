"""Where a storage physically keeps its files, however its alias is spelled: two aliases can be one
place (``default`` is ``local`` while the switch is off; one bucket and prefix under two names; a
symlinked folder), and an endpoint URL can carry credentials that no message may show."""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from .base import Endpoint


_DEFAULT_PORTS = {"http": 80, "https": 443}


def strip_userinfo(url: str | None) -> str | None:
    """The URL without ``user:password@`` (never sent, never shown)."""
    if not url or "@" not in url:
        return url
    try:
        split = urlsplit(url)
    except ValueError:
        return url
    if "@" not in split.netloc:
        return url
    host = split.netloc.rsplit("@", 1)[1]
    return urlunsplit((split.scheme, host, split.path, split.query, split.fragment))


def redact(text: str, url: str | None) -> str:
    """``text`` with the userinfo of ``url`` masked wherever it appears."""
    if not url or "@" not in url:
        return text
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return text
    if "@" not in netloc:
        return text
    userinfo = netloc.rsplit("@", 1)[0]
    return text.replace(userinfo + "@", "***@")


def _endpoint_address(url: str | None) -> str:
    """One spelling of an S3 endpoint: AWS itself ("aws"), or scheme, host and port."""
    if not url:
        return "aws"
    try:
        split = urlsplit(strip_userinfo(url) or "")
        host = (split.hostname or "").lower().rstrip(".")
        port = split.port or _DEFAULT_PORTS.get(split.scheme.lower())
    except ValueError:
        return url.lower()
    if host == "amazonaws.com" or host.endswith(".amazonaws.com"):
        return "aws"  # bucket names are global there: the region does not make another place
    return f"{host}:{port}"


@dataclass(frozen=True)
class Place:
    """A storage's root: ``kind`` and the parts that name it, outermost first; the last part is a
    path (local disk) or a key prefix (S3) that another place can lie inside."""

    kind: str
    parts: tuple[Any, ...]
    path: str

    def contains(self, other: Place) -> bool:
        if (self.kind, self.parts) != (other.kind, other.parts):
            return False
        if self.kind == "local":
            return other.path == self.path or other.path.startswith(
                self.path.rstrip(os.sep) + os.sep
            )
        if self.kind == "s3":
            return other.path.startswith(self.path)
        if self.kind == "sftp":
            return other.path == self.path or other.path.startswith(self.path.rstrip("/") + "/")
        return other.path == self.path

    def __str__(self) -> str:
        if self.kind == "local":
            return self.path
        if self.kind == "s3":
            endpoint, bucket = self.parts
            where = "" if endpoint == "aws" else f" at {endpoint}"
            return f"s3://{bucket}/{self.path}{where}"
        if self.kind == "sftp":
            user, host, port = self.parts
            home = "" if self.path.startswith("/") else "/~/"  # relative to the user's home
            return f"sftp://{user}@{host}:{port}{home}{self.path}"
        return f"{self.parts[0]} {self.path}"


def place_of(endpoint: Endpoint) -> Place:
    """Where the endpoint's storage keeps its files."""
    storage: Any = endpoint.storage
    if endpoint.kind == "local":
        return Place("local", (), os.path.realpath(str(storage.location)))
    if endpoint.kind == "s3":
        address = _endpoint_address(getattr(storage, "endpoint_url", None))
        prefix = str(getattr(endpoint, "key_prefix", ""))
        return Place("s3", (address, endpoint.bucket), prefix)
    cls = type(storage)
    if isinstance(getattr(storage, "host", None), str) and hasattr(storage, "root_path"):
        # An SFTP server (django-storages' SFTPStorage): the login, and the folder, relative to
        # the user's home unless absolute. Other spellings of one server (a second name, a
        # chroot) are found by the probe (seen_through_both).
        params = getattr(storage, "params", None) or {}
        login = (
            str(params.get("username") or ""),
            str(storage.host).lower().rstrip("."),
            int(params.get("port") or 22),
        )
        return Place("sftp", login, posixpath.normpath(str(storage.root_path or ".")))
    options = {
        k: v for k, v in sorted(vars(storage).items()) if not k.startswith("_") and _plain(v)
    }
    return Place("storage", (f"{cls.__module__}.{cls.__qualname__}",), repr(options))


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | tuple | list | dict)


def overlap(
    source: Endpoint,
    destination: Endpoint,
    *,
    probe: bool = False,
    nested: bool = True,
    certain: bool = False,
) -> str | None:
    """Why a move between these two endpoints would move files onto themselves, or None.
    ``nested``: one lying inside the other counts too (only a delete or an overwrite can harm
    there: keys never coincide, and writes never replace). With ``probe``, a marker written
    through the destination is also looked for through the source; with ``certain``, a probe
    that cannot tell is itself a reason to refuse."""
    a, b = place_of(source), place_of(destination)
    if a.contains(b) and b.contains(a):
        return f"Storages {source.alias!r} and {destination.alias!r} are one place ({a})"
    if nested and (a.contains(b) or b.contains(a)):
        outer, inner = (source, destination) if a.contains(b) else (destination, source)
        return (
            f"Storage {inner.alias!r} ({place_of(inner)}) lies inside storage {outer.alias!r} "
            f"({place_of(outer)})"
        )
    if not probe:
        return None
    seen = seen_through_both(source, destination)
    if seen is None and certain:
        return (
            f"Cannot tell whether storages {source.alias!r} and {destination.alias!r} are one "
            "place (a marker written through the destination could not be looked for through "
            "the source)"
        )
    if seen:
        # One folder, or one bucket: compare the prefixes within it.
        if source.kind == "local" or a.path == b.path:
            return f"Storages {source.alias!r} and {destination.alias!r} are one place ({a})"
        if nested and (a.path.startswith(b.path) or b.path.startswith(a.path)):
            outer, inner = (
                (source, destination) if b.path.startswith(a.path) else (destination, source)
            )
            return (
                f"Storage {inner.alias!r} ({place_of(inner)}) lies inside storage "
                f"{outer.alias!r} ({place_of(outer)}): both reach one bucket"
            )
    return None


def seen_through_both(source: Endpoint, destination: Endpoint) -> bool | None:
    """Does a marker written through the destination show through the source? Two spellings of
    one place that no comparison of settings can tell apart (``localhost`` and ``127.0.0.1``, a
    bind mount, a DNS alias, an SFTP server over the local folder) are told apart this way. The
    marker is removed. None when the answer is not known (the marker could not be written, or
    the source would not say whether it sees it)."""
    marker = f".storage-migrate-probe-{uuid.uuid4().hex}"
    if source.kind == destination.kind == "local":
        dst_root = str(getattr(destination.storage, "location", ""))
        src_root = str(getattr(source.storage, "location", ""))
        if not os.path.isdir(dst_root):
            return False  # not there yet: not the source's folder, which is
        path = os.path.join(dst_root, marker)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError:
            return None
        try:
            return os.path.lexists(os.path.join(src_root, marker))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    if "storage" in (source.kind, destination.kind):
        from .placeprobe import seen_through_api

        return seen_through_api(source, destination, marker)
    if source.kind == destination.kind == "s3":
        from botocore.exceptions import BotoCoreError, ClientError

        dst: Any = destination
        src: Any = source
        key = f"{dst.key_prefix}{marker}"
        try:
            dst.quick_client.put_object(
                Bucket=dst.bucket, Key=key, Body=b"", **dst.probe_params(key)
            )
        except (ClientError, BotoCoreError):
            return None
        try:
            src.quick_client.head_object(Bucket=src.bucket, Key=key)
            return True
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            return False if status == 404 or code in ("404", "NoSuchKey") else None
        except BotoCoreError:
            return None
        finally:
            with contextlib.suppress(ClientError, BotoCoreError):
                dst.quick_client.delete_object(Bucket=dst.bucket, Key=key)
    return False


def identity(endpoint: Endpoint, name: str) -> tuple[Any, ...]:
    """What tells one stored file from another (rows that share a source share this): the
    device and inode on local disk (a symlink and its target, ``a//b`` and ``a/b``), the key in
    its bucket on S3 (``a\\b`` and ``a/b``)."""
    if endpoint.kind == "local":
        try:
            st = os.stat(endpoint.local_path(name) or "")
        except (OSError, ValueError):
            return ("name", endpoint.alias, name)
        return ("inode", st.st_dev, st.st_ino)
    if endpoint.kind == "s3":
        place = place_of(endpoint)
        return ("s3", *place.parts, endpoint.key(name))
    return ("name", endpoint.alias, name)


def loose_identity(endpoint: Endpoint, name: str) -> tuple[Any, ...] | None:
    """The identity of what an unsafe name would reach, found by status alone (never a read),
    so that the file it shares with a safe row is kept; None when it reaches nothing."""
    if endpoint.kind == "local":
        location = str(getattr(endpoint.storage, "location", ""))
        joined = os.path.join(location, name)
        # What Django opens (its safe_join normalises `a/../b` lexically, even where `a` does
        # not exist), then what the kernel would reach.
        for path in (os.path.normpath(joined), joined):
            try:
                st = os.stat(path)
            except (OSError, ValueError):
                continue
            return ("inode", st.st_dev, st.st_ino)
        return None
    try:
        return identity(endpoint, name)
    except Exception:
        return None


def same_object(source: Endpoint, destination: Endpoint, name: str) -> bool:
    """Is the destination's object under this name the source's own file?"""
    if source.kind != destination.kind:
        return False
    if source.kind == "local":
        a, b = identity(source, name), identity(destination, name)
        return a[0] == "inode" and a == b
    if source.kind == "s3":
        return identity(source, name) == identity(destination, name)
    return place_of(source) == place_of(destination)
