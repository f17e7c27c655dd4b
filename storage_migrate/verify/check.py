"""One row against what the storage holds: does the object exist, with the row's size and MD5
(from the ETag, a HEAD or a read, at the level asked), and which columns --fix-metadata may
correct."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..conf import DIGEST_ROLES
from ..endpoints.base import Endpoint, ObjectInfo
from ..endpoints.proof import one_part_proves
from ..errors import RowError
from ..hashing import NAMES, Digest, digest_stream
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
from ..rows import Planned, Row, _Unknown, stored_digest, stored_others
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
        stored_md5 = stored_digest(row, "checksum")
        others = stored_others(row)
        actual: dict[str, str] = {}
        if self.level == "deep" or self._needs_read(row, info, stored_md5, others):
            info, digest = self._read(endpoint, row, info)
            actual, result.downloaded = {"md5": digest.md5, **digest.others}, True
        elif self._needs_md5(endpoint, row, info, stored_md5):
            info, digest, result.downloaded = self._md5(endpoint, row, info, stored_md5)
            actual = {"md5": digest.md5, **digest.others}
        actual_md5 = actual.get("md5")
        if result.downloaded:
            result.bytes = info.size  # a read's info has the size of the bytes it hashed
        size_ok = self.level == "exists" or stored_size is None or stored_size == info.size
        if not size_ok:
            detail = "stored size disagrees with the file"
            self._fail(result, SIZE_MISMATCH, detail, expected=stored_size, actual=info.size)
        if self.level in ("checksum", "deep"):
            self._compare(result, {"md5": stored_md5, **others}, actual)
        observed = self._observed(endpoint, row, info, actual)
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

    def _compare(self, result: CheckResult, stored: dict[str, str], actual: dict[str, str]) -> None:
        """Each digest the row stores against the bytes' digest in its algorithm (MD5 from an
        ETag or a read; SHA-1 and SHA-256 from a read); a row none could be compared with is
        unchecked."""
        compared = False
        columns = result.row.target.columns
        roles = {a: r for r, a in result.row.target.digests.items()}
        for algorithm, value in stored.items():
            found = actual.get(algorithm)
            if not value or (found is None and algorithm != "md5"):
                continue
            compared = True
            if result.outcome == OK and found != value:
                what = "checksum" if algorithm == "md5" else NAMES[algorithm]
                what += "" if algorithm == "md5" else f" ({columns[roles[algorithm]]})"
                detail = f"file bytes do not match the stored {what}"
                self._fail(result, CHECKSUM_MISMATCH, detail, expected=value, actual=found)
        result.unchecked = not compared

    def _needs_read(
        self, row: Row, info: ObjectInfo, stored_md5: str, others: dict[str, str]
    ) -> bool:
        """At level checksum, a row whose only digests are SHA-1 or SHA-256 is read (no ETag
        is one) when its size is right."""
        stored_size = row.meta.get("file_size")
        size_ok = stored_size is None or stored_size == info.size
        return self.level == "checksum" and bool(others) and not stored_md5 and size_ok

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
        observed = self._observed(endpoint, row, info, {})
        return any(row.meta.get(role) != value for role, value in observed.items())

    def _md5(
        self, endpoint: Endpoint, row: Row, info: ObjectInfo, stored: str
    ) -> tuple[ObjectInfo, Digest, bool]:
        """The object's MD5 without reading it where the storage can prove it; else read it.
        A listing's ETag is taken at once only when it agrees with the stored checksum; else a
        HEAD says whether it is an MD5 at all (a bucket's default KMS encryption). Returns the
        response the MD5 is from (the HEAD's or the read's, once there was one: the object may
        have been replaced since the listing), the digest (with the row's other algorithms'
        where the object was read), and whether the object was read."""
        if info.etag_md5 and (info.headed or info.etag_md5 == stored):
            return info, Digest(info.size, info.etag_md5), False
        headed = endpoint.head(row.name, info)
        if stored and one_part_proves(endpoint, headed, stored):  # a one-part server-side copy
            return headed, Digest(headed.size, stored), False
        if headed.md5:
            return headed, Digest(headed.size, headed.md5), False
        if headed.meta_md5 and stored and self.level == "checksum" and not self.fix_metadata:
            # A hint (our md5 metadata, beside the ETag it was written with), which saves a
            # download at this level; never what --fix-metadata writes by (--level deep reads).
            return headed, Digest(headed.size, headed.meta_md5), False
        read, digest = self._read(endpoint, row, headed)
        return read, digest, True

    def _read(self, endpoint: Endpoint, row: Row, info: ObjectInfo) -> tuple[ObjectInfo, Digest]:
        """Read and hash the object (MD5, and the row's other algorithms: one read): what the
        read's own response says of it (its size the bytes counted), and the digest."""
        stream, opened = endpoint.open_info(row.name)
        with stream:
            digest = digest_stream(stream, also=row.target.others)  # type: ignore[arg-type]
        return replace(opened or info, size=digest.size, md5=digest.md5), digest

    def _observed(
        self, endpoint: Endpoint, row: Row, info: ObjectInfo, actual: dict[str, str]
    ) -> dict[str, Any]:
        """What the storage says of the file under the row's name, by role, for the columns
        the row has: all from one response (``info``), and the digests of what was read."""
        observed: dict[str, Any] = {
            "file_size": info.size,
            "bucket": endpoint.bucket,
            "object_key": endpoint.key(row.name),
        }
        if info.headed and info.content_type:
            observed["content_type"] = info.content_type
        for role, algorithm in DIGEST_ROLES.items():
            if actual.get(algorithm):
                observed[role] = actual[algorithm]
        return {role: v for role, v in observed.items() if role in row.target.columns}

    def _plan_updates(
        self,
        result: CheckResult,
        observed: dict[str, Any],
        wrong: list[str],
        stored_md5: str,
        actual_md5: str | None,
    ) -> None:
        """--fix-metadata: the object is the row's file when a digest it stores (its MD5, SHA-1
        or SHA-256) is the object's, and none is contradicted; then every column it
        contradicts is corrected. Otherwise only blank columns are filled, and only when the
        object contradicts nothing the row knows (another writer's object under the row's key
        must not rewrite the row). A stored digest is never overwritten, each is filled only
        with its own algorithm's digest, and a value its column cannot hold is not written."""
        row = result.row
        meta = row.meta
        digests = row.target.digests
        held = {r: stored_digest(row, r) for r in digests if stored_digest(row, r)}
        matching = [r for r, v in held.items() if observed.get(r) == v]
        differs = {
            role: value
            for role, value in observed.items()
            if role not in digests and meta.get(role) != value
        }
        contradicted = [role for role in differs if meta.get(role) not in (None, "")]
        contradicted += [r for r, v in held.items() if r in observed and observed[r] != v]
        proven = bool(matching) and not any(r in digests for r in contradicted)
        if not proven and contradicted:
            why = (
                "its digest is not the stored one"
                if any(r in digests for r in contradicted) or held
                else "the row has no checksum to prove it is"
            )
            if stored_md5 and actual_md5 and actual_md5 != stored_md5:
                why = "its MD5 is not the stored checksum"
            self._say(result, f"not corrected: the object may not be the row's file ({why})")
            return
        for role in digests:
            if role not in held and role in observed:
                differs[role] = observed[role]  # filled only where it is still empty
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
