"""Shards: N processes share one migration with no coordinator, each taking the rows whose file
hashes to its own index (``--shard K/N``; K counts from 0, as Kubernetes' JOB_COMPLETION_INDEX).

Every process must put every row in the same shard, whatever its version or the state of the
disk, so the shard is a pure function of the row's name: never Python's ``hash()`` (salted per
process), never the filesystem (a symlink swapped in mid-run would move a row between shards
and leave it to no process, or to two). Changing the hash would split a running migration
between processes of two versions: tests/test_shards.py pins its values."""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

from .errors import ConfigurationError
from .names import utf8

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*", re.ASCII)
# What a JOB_COMPLETION_INDEX reference looks like when nothing expanded it (Kubernetes leaves
# $(VAR) as it is when VAR is not set, in a Job without completionMode: Indexed).
_UNEXPANDED = re.compile(r"\$\(?\{?JOB_COMPLETION_INDEX")


def shard_name(name: str) -> str:
    """The spelling every storage agrees on: backslashes as slashes, ``//`` and ``.`` parts
    folded, as django-storages makes an S3 key (local disk folds the same, backslashes aside).
    Two spellings of one object (``a//b``, ``a/./b``, ``a\\b`` on S3) give one shard, so rows
    sharing a file, at the source or at the destination, are always walked by one process."""
    folded = posixpath.normpath(name.replace("\\", "/"))
    return "" if folded == "." else folded


def shard_of(name: str, count: int) -> int:
    """The shard (0 to count - 1) of a row's name: BLAKE2b of the folded name's UTF-8 bytes,
    its first 8 bytes as a big-endian number, modulo ``count``."""
    digest = hashlib.blake2b(utf8(shard_name(name)), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the rows whose name hashes to ``index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (0 <= self.index < self.count):
            raise ConfigurationError(
                f"shard {self.index}/{self.count} does not exist: K/N needs 0 <= K < N (K counts "
                "from 0, as JOB_COMPLETION_INDEX does)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, name: str) -> bool:
        """Is this row's file in this shard?"""
        return self.count == 1 or shard_of(name, self.count) == self.index


def as_shard(value: Shard | tuple[int, int] | str | None) -> Shard | None:
    """A Shard from the Python API's ``shard=(K, N)`` (or "K/N"); ConfigurationError if none."""
    if value is None or isinstance(value, Shard):
        return value
    if isinstance(value, str):
        return parse_shard(value)
    try:
        index, count = value
    except (TypeError, ValueError):
        raise ConfigurationError(f"shard must be (K, N), not {value!r}") from None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (index, count)):
        raise ConfigurationError(f"shard must be two whole numbers (K, N), not {value!r}")
    return Shard(index, count)


def parse_shard(text: str) -> Shard:
    """``K/N`` as written on a command line; ConfigurationError saying what is wrong."""
    if _UNEXPANDED.search(text):
        raise ConfigurationError(
            f"{text!r} was not expanded: JOB_COMPLETION_INDEX is set only in a Kubernetes Job "
            "with completionMode: Indexed (a shell expands $VAR, Kubernetes $(VAR) in args)"
        )
    match = _SHARD.fullmatch(text)
    if match is None:
        hint = " (an unset variable before the '/'?)" if text.lstrip().startswith("/") else ""
        raise ConfigurationError(f"must be K/N, whole numbers with 0 <= K < N, not {text!r}{hint}")
    return Shard(int(match[1]), int(match[2]))
