"""Which names are safe to read and write: nothing outside a storage's root, nothing S3 refuses."""

from __future__ import annotations

import re

MAX_KEY_BYTES = 1024
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def unsafe_reason(name: str, key: str | None = None) -> str | None:
    """Why a FileField name (and the key a storage makes of it) must not be touched, or None."""
    if "\x00" in name:
        return "name contains a NUL byte"
    if _CONTROL.search(name):
        return "name contains a control character"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "name is an absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "name has a '..' part"
    if not name.strip() or name.endswith("/"):
        return "name is empty or a folder"
    if all(part in ("", ".") for part in parts):
        # '.', './.', '.\\.': the root itself (with a location prefix, the prefix's own key)
        return "name is the storage's root"
    return key_reason(name) or (key_reason(key) if key is not None else None)


def key_reason(key: str) -> str | None:
    """Why S3 would refuse this key, or None."""
    # A character is at most 4 bytes: only long keys need encoding to know.
    if len(key) * 4 > MAX_KEY_BYTES and len(utf8(key)) > MAX_KEY_BYTES:
        return f"key is longer than {MAX_KEY_BYTES} bytes"
    return None


def common_folder(first: str, last: str) -> str:
    """The longest folder both names are in: in byte order, every name between them is in it
    too (so one listing of it covers them all)."""
    length = 0
    for a, b in zip(first, last, strict=False):
        if a != b:
            break
        length += 1
    common = first[:length]
    return common[: common.rfind("/") + 1]


def utf8(text: str) -> bytes:
    """The bytes S3 orders keys by (lone surrogates kept, so that no name is ever lost)."""
    return text.encode("utf-8", "surrogatepass")
