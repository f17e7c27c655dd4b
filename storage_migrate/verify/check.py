"""One row against what the storage holds: does the object exist, with the row's size and MD5
(from the ETag, a HEAD or a read, at the level asked), and which columns --fix-metadata may
correct."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..endpoints.base import Endpoint, ObjectInfo
from ..errors import RowError
from ..hashing import digest_stream
from ..log import log
from ..report.problems import (
    CHECKSUM_MISMATCH,
    ERROR,
    METADATA_MISMATCH,
    MISSING,
    OK,
    SIZE_MISMATCH,
    UNVERIFIABLE,
    Problem,
)
from ..rows import Planned, Row, _Unknown
from ..targets import unfit


@dataclass
class CheckResult:
    """One row's outcome (ok or a problem kind), what it cost (``bytes``: read to hash it),
    and the columns to fix."""

    row: Row
    outcome: str
    problem: Problem | None = None
    downloaded: bool = False
    unchecked: bool = False
    updates: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0


class Checker:
    """Verification's checks, run on worker threads: storage requests only, no database."""

    level: str
    strict: bool
    fix_metadata: bool

    def _check(self, endpoint: Endpoint, row: Row, planned: Planned) -> CheckResult:
        try:
            info = endpoint.stat(row.name) if isinstance(planned, _Unknown) else planned
            return self._judge(endpoint, row, info)
        except RowError as exc:  # a name found unsafe only when opened (a FIFO, a folder)
            return CheckResult(row, exc.kind, row.problem(exc.kind, str(exc)))
        except Exception as exc:  # a row's failure never stops the run
            problem = row.problem(ERROR, f"{exc.__class__.__name__}: {exc}")
            return CheckResult(row, ERROR, problem)

    def _judge(self, endpoint: Endpoint, row: Row, info: ObjectInfo | None) -> CheckResult:
        """The first check that fails names the outcome: missing, size, checksum, metadata.
        Every value judged (and written) is from one response: where the object is read or
        HEADed after a listing, that later response's alone."""
        if info is None:
            return CheckResult(row, MISSING, row.problem(MISSING, "file does not exist"))
        result = CheckResult(row, OK)
        meta = row.meta
        stored_size = meta.get("file_size")
        stored_md5 = str(meta.get("checksum") or "").lower()
        actual_md5: str | None = None
        if self.level == "deep":
            info, actual_md5 = self._read(endpoint, row.name, info)
            result.downloaded = True
        elif self._needs_md5(endpoint, row, info, stored_md5):
            info, actual_md5, result.downloaded = self._md5(endpoint, row.name, info, stored_md5)
        if result.downloaded:
            result.bytes = info.size  # a read's info has the size of the bytes it hashed
        size_ok = self.level == "exists" or stored_size is None or stored_size == info.size
        if not size_ok:
            detail = "stored size disagrees with the file"
            self._fail(result, SIZE_MISMATCH, detail, expected=stored_size, actual=info.size)
        if self.level in ("checksum", "deep"):
            if not stored_md5:
                result.unchecked = True
            elif result.outcome == OK and actual_md5 != stored_md5:
                detail = "file bytes do not match the stored checksum"
                self._fail(
                    result, CHECKSUM_MISMATCH, detail, expected=stored_md5, actual=actual_md5
                )
        observed = self._observed(endpoint, row, info, actual_md5)
        wrong: list[str] = [
            role
            for role in ("bucket", "object_key", "content_type")
            if role in observed
            and meta.get(role) != observed[role]
            and (role != "content_type" or meta.get(role))  # a blank type is filled, not wrong
        ]
        if wrong and result.outcome == OK:
            detail = "; ".join(
                f"{role} is {meta.get(role)!r}, the storage says {observed[role]!r}"
                for role in wrong
            )
            self._fail(result, METADATA_MISMATCH, detail)
        if self.fix_metadata:
            self._plan_updates(result, observed, wrong, stored_md5, actual_md5)
        if result.outcome == OK and result.unchecked and self.strict:
            detail = "no stored checksum to compare the file with"
            self._fail(result, UNVERIFIABLE, detail)
        return result

    def _needs_md5(self, endpoint: Endpoint, row: Row, info: ObjectInfo, stored_md5: str) -> bool:
        """At level checksum, a file whose size is right is compared (or its checksum filled).
        --fix-metadata writes to a row with a stored checksum only what the object's MD5
        proves to be the row's file, so it learns that MD5 wherever it would write."""
        stored_size = row.meta.get("file_size")
        size_ok = stored_size is None or stored_size == info.size
        if self.level == "checksum" and (stored_md5 or self.fix_metadata) and size_ok:
            return True
        if not (self.fix_metadata and stored_md5):
            return False
        observed = self._observed(endpoint, row, info, None)
        return any(row.meta.get(role) != value for role, value in observed.items())

    def _md5(
        self, endpoint: Endpoint, name: str, info: ObjectInfo, stored: str
    ) -> tuple[ObjectInfo, str, bool]:
        """The object's MD5 without reading it where the storage can prove it; else read it.
        A listing's ETag is taken at once only when it agrees with the stored checksum; else a
        HEAD says whether it is an MD5 at all (a bucket's default KMS encryption). Returns the
        response the MD5 is from (the HEAD's or the read's, once there was one: the object may
        have been replaced since the listing), the MD5, and whether the object was read."""
        if info.etag_md5 and (info.headed or info.etag_md5 == stored):
            return info, info.etag_md5, False
        headed = endpoint.head(name, info)
        if headed.md5:
            return headed, headed.md5, False
        if headed.meta_md5 and stored and self.level == "checksum" and not self.fix_metadata:
            # A hint (our md5 metadata, beside the ETag it was written with), which saves a
            # download at this level; never what --fix-metadata writes by (--level deep reads).
            return headed, headed.meta_md5, False
        read, md5 = self._read(endpoint, name, headed)
        return read, md5, True

    def _read(self, endpoint: Endpoint, name: str, info: ObjectInfo) -> tuple[ObjectInfo, str]:
        """Read and hash the object: what the read's own response says of it (its size the
        bytes counted), and their MD5."""
        stream, opened = endpoint.open_info(name)
        with stream:
            digest = digest_stream(stream)  # type: ignore[arg-type]
        return replace(opened or info, size=digest.size, md5=digest.md5), digest.md5

    def _observed(
        self, endpoint: Endpoint, row: Row, info: ObjectInfo, md5: str | None
    ) -> dict[str, Any]:
        """What the storage says of the file under the row's name, by role, for the columns
        the row has: all from one response (``info``)."""
        observed: dict[str, Any] = {
            "file_size": info.size,
            "bucket": endpoint.bucket,
            "object_key": endpoint.key(row.name),
        }
        if info.headed and info.content_type:
            observed["content_type"] = info.content_type
        if md5:
            observed["checksum"] = md5
        return {role: v for role, v in observed.items() if role in row.target.columns}

    def _plan_updates(
        self,
        result: CheckResult,
        observed: dict[str, Any],
        wrong: list[str],
        stored_md5: str,
        actual_md5: str | None,
    ) -> None:
        """--fix-metadata: the object is the row's file when its MD5 is the row's stored
        checksum; then every column it contradicts is corrected. Otherwise only blank columns
        are filled, and only when the object contradicts nothing the row knows (another
        writer's object under the row's key must not rewrite the row). A stored checksum is
        never overwritten; a value its column cannot hold is not written."""
        row = result.row
        meta = row.meta
        proven = bool(stored_md5) and actual_md5 == stored_md5
        differs = {
            role: value
            for role, value in observed.items()
            if role != "checksum" and meta.get(role) != value
        }
        contradicted = [role for role in differs if meta.get(role) not in (None, "")]
        if stored_md5 and actual_md5 and actual_md5 != stored_md5:
            contradicted.append("checksum")
        if not proven and contradicted:
            why = (
                "its MD5 is not the stored checksum"
                if stored_md5
                else "the row has no checksum to prove it is"
            )
            self._say(result, f"not corrected: the object may not be the row's file ({why})")
            return
        if not stored_md5 and "checksum" in observed:
            differs["checksum"] = observed["checksum"]  # filled only where it is still empty
        refused: list[str] = []
        for role, value in differs.items():
            reason = unfit(row.target, role, value)
            if reason is None:
                result.updates[role] = value
            elif role in contradicted or role in wrong:  # meant as a correction: say why not
                refused.append(f"{role} not corrected: {reason}")
            else:
                log.debug("pk=%s: %s not filled: %s", row.pk, role, reason)
        subject = ["file_size"] if result.outcome == SIZE_MISMATCH else wrong
        corrected = [role for role in subject if role in result.updates]
        if refused:
            done = [f"{', '.join(corrected)} corrected (--fix-metadata)"] if corrected else []
            self._say(result, "; ".join(done + refused))
        elif corrected:
            self._say(result, "corrected (--fix-metadata)")

    def _say(self, result: CheckResult, note: str) -> None:
        """Add what --fix-metadata did to a size or metadata mismatch's detail."""
        if result.problem is not None and result.outcome in (SIZE_MISMATCH, METADATA_MISMATCH):
            result.problem.detail += f"; {note}"

    def _fail(self, result: CheckResult, kind: str, detail: str, **extra: Any) -> None:
        result.outcome = kind
        result.problem = result.row.problem(kind, detail, **extra)
