"""The outcomes of a row, the problems a run finds, and the log that keeps them (spilled to disk
past MEMORY_PROBLEMS)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, overload
from uuid import UUID

COPIED = "copied"
SKIPPED = "skipped"
# The source is gone and the destination holds an object under the name (an upload made
# after the switch, where the app now reads): counted, not a problem; the row is not changed.
AT_DESTINATION = "at_destination"
MISSING = "missing"
UNSAFE_NAME = "unsafe_name"
CHECKSUM_MISMATCH = "checksum_mismatch"
SIZE_MISMATCH = "size_mismatch"
CONFLICT = "conflict"
ERROR = "error"
UNVERIFIABLE = "unverifiable"
MIGRATION_PROBLEMS = (
    MISSING,
    UNSAFE_NAME,
    CHECKSUM_MISMATCH,
    SIZE_MISMATCH,
    CONFLICT,
    UNVERIFIABLE,
    ERROR,
)


EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG = 0, 1, 2


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


def parse_iso(text: str) -> datetime:
    """The moment iso() wrote."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Problem:
    """Something a person should look at, about one row (or one object, for orphans)."""

    kind: str
    model: str
    field: str
    pk: Any
    name: str
    detail: str
    expected: Any = None
    actual: Any = None

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _FIELDS}  # asdict's deep copy is slow
        for key in ("expected", "actual"):
            if data[key] is None:
                del data[key]
        return data

    def line(self) -> str:
        where = f"{self.model} pk={self.pk}" if self.pk is not None else self.model
        return f"  {self.kind:<17} {where} {self.name!r}: {self.detail}"


# Problems kept as objects; the rest are only in the log's spill file.
MEMORY_PROBLEMS = 1000
_FIELDS = ("kind", "model", "field", "pk", "name", "detail", "expected", "actual")


def _encode(value: Any) -> Any:
    """A JSON value for a problem's field; a dict is always a tag, so no plain value is one."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, UUID):
        return {"uuid": str(value)}
    if isinstance(value, tuple | list):
        return {"tuple" if isinstance(value, tuple) else "list": [_encode(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    return str(value)  # what the renderings (default=str, f-strings) make of it anyway


def _decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    [(tag, inner)] = value.items()
    if tag == "uuid":
        return UUID(inner)
    if tag == "dict":
        return {k: _decode(v) for k, v in inner.items()}
    items = [_decode(v) for v in inner]
    return tuple(items) if tag == "tuple" else items


def _close_spill(spill: IO[str], path: str) -> None:
    spill.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class ProblemLog(Sequence[Problem]):
    """Every problem of a run in the order added, in bounded memory: counts by kind, the first
    MEMORY_PROBLEMS as objects, the rest in a JSON-lines file removed on close() or collection."""

    def __init__(self, problems: Iterable[Problem] = ()) -> None:
        self._memory: list[Problem] = []
        self._counts: Counter[str] = Counter()
        self._len = 0
        self._spilled = 0
        self._spill: IO[str] | None = None
        self._path: str | None = None
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        self._closed = False
        self.extend(problems)

    @property
    def path(self) -> str | None:
        """The spill file, once problems overflowed memory."""
        return self._path

    def append(self, problem: Problem) -> None:
        if self._closed:
            raise ValueError("This ProblemLog is closed")
        if len(self._memory) < MEMORY_PROBLEMS:
            self._memory.append(problem)
        else:
            self._write(problem)
        self._counts[problem.kind] += 1
        self._len += 1

    def extend(self, problems: Iterable[Problem]) -> None:
        for problem in problems:  # iteration is a snapshot: extend(self) doubles, as a list does
            self.append(problem)

    def _write(self, problem: Problem) -> None:
        if self._spill is None:
            fd, self._path = tempfile.mkstemp(prefix="storage-migrate-problems-", suffix=".jsonl")
            self._spill = os.fdopen(fd, "w", encoding="ascii", newline="\n")
            self._finalizer = weakref.finalize(self, _close_spill, self._spill, self._path)
        row = [_encode(getattr(problem, name)) for name in _FIELDS]
        # ensure_ascii: lone surrogates and control characters in names survive as \u escapes.
        self._spill.write(json.dumps(row, ensure_ascii=True, separators=(",", ":")) + "\n")
        self._spilled += 1

    def _read(self, count: int) -> Iterator[Problem]:
        """The first `count` spilled problems, read back from the file."""
        if count <= 0:
            return
        if self._closed or self._spill is None or self._path is None:
            raise ValueError("This ProblemLog is closed; its spilled problems are gone")
        self._spill.flush()
        with open(self._path, encoding="ascii", newline="\n") as spill:
            for line in itertools.islice(spill, count):
                yield Problem(*(_decode(v) for v in json.loads(line)))

    def close(self) -> None:
        """Remove the spill file; the counts stay, the problems past memory are gone."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()

    def counts(self) -> Counter[str]:
        """How many problems of each kind."""
        return Counter(self._counts)

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[Problem]:
        # A snapshot: problems appended while iterating are not yielded.
        in_memory, spilled = len(self._memory), self._spilled
        for i in range(in_memory):
            yield self._memory[i]
        yield from self._read(spilled)

    @overload
    def __getitem__(self, index: int) -> Problem: ...
    @overload
    def __getitem__(self, index: slice) -> list[Problem]: ...
    def __getitem__(self, index: int | slice) -> Problem | list[Problem]:
        if isinstance(index, slice):
            wanted = range(self._len)[index]
            if not wanted:
                return []
            forward = wanted if wanted.step > 0 else wanted[::-1]
            items = list(itertools.islice(self, forward.start, forward.stop, forward.step))
            return items if wanted.step > 0 else items[::-1]
        position = range(self._len)[index]  # IndexError as a list raises it
        if position < len(self._memory):
            return self._memory[position]
        offset = position - len(self._memory)
        return next(itertools.islice(self._read(offset + 1), offset, None))

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if not isinstance(other, ProblemLog | list):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        shown = self._memory[:10]
        more = (
            f", ... {self._len - len(shown)} more, {dict(self._counts)}"
            if self._len > len(shown)
            else ""
        )
        return f"ProblemLog([{', '.join(map(repr, shown))}{more}])"


def _pk_order(problem: Problem) -> tuple[int, Any]:
    """Primary keys in order: numbers as numbers, anything else (a UUID) as text; orphans (no
    pk) as they came, which is the listing's order of their names."""
    pk = problem.pk
    if pk is None:
        return (2, 0)
    if isinstance(pk, int | float):
        return (0, pk)
    return (1, str(pk))


OK = "ok"
METADATA_MISMATCH = "metadata_mismatch"
ORPHAN = "orphan"
VERIFY_PROBLEMS = (
    UNSAFE_NAME,
    MISSING,
    SIZE_MISMATCH,
    CHECKSUM_MISMATCH,
    METADATA_MISMATCH,
    ERROR,
    UNVERIFIABLE,
    ORPHAN,
)


DEFAULT_FAIL_ON = tuple(k for k in VERIFY_PROBLEMS if k != ORPHAN)
