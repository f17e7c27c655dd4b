"""What a run costs the store, and the ceilings a run keeps to beside a live site: requests by
S3's pricing classes and bytes, counted as they are sent (or predicted by a dry run), and
--max-rate / --max-requests enforced on our side for every engine, shared by the run's
threads in the order they ask."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import stopping

MB = 1000 * 1000

# S3 prices requests in two classes; deletes and aborts are free.
CLASS_A = "put_copy_post_list"
CLASS_B = "get_head"
FREE = "delete"
_A = {
    "PutObject",
    "CopyObject",
    "UploadPart",
    "UploadPartCopy",
    "CreateMultipartUpload",
    "CompleteMultipartUpload",
    "ListObjectsV2",
    "ListObjects",
    "ListMultipartUploads",
    "ListParts",
    "CreateBucket",
}
_FREE = {"DeleteObject", "DeleteObjects", "AbortMultipartUpload"}


def request_class(operation: str) -> str:
    """The pricing class of an S3 operation (botocore's name for it)."""
    if operation in _A or operation.startswith("PutBucket"):
        return CLASS_A
    return FREE if operation in _FREE else CLASS_B


class Throttle:
    """At most ``rate`` units a second on average. Each caller reserves its slot under a lock
    and then waits for it, so threads are served in the order they asked (no worker starves
    another); up to ``burst`` seconds of idle time are credited."""

    def __init__(self, rate: float, burst: float = 0.25) -> None:
        if not rate > 0:
            raise ValueError("a throttle's rate must be above 0")
        self.rate, self.burst = rate, burst
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, amount: float) -> float:
        """Wait until ``amount`` may go; returns the seconds waited."""
        if amount <= 0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - self.burst)
            self._next = start + amount / self.rate
        wait = start - now
        if wait > 0:
            stopping.sleep(wait)  # cut short by Ctrl-C or SIGTERM
            return wait
        return 0.0


@dataclass
class Meter:
    """One run's counts and ceilings, shared by its endpoints (a source's GETs and a
    destination's PUTs go against the same figures)."""

    max_rate: float | None = None  # MB a second through this process and copied in the store
    max_requests: float | None = None  # requests a second, every class
    requests: Counter[str] = field(default_factory=Counter)
    sent: int = 0  # bytes sent to a store
    received: int = 0  # bytes received from a store
    in_store: int = 0  # bytes copied inside the store (server-side copies)
    waited: float = 0.0  # seconds the ceilings held requests back

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = Throttle(self.max_rate * MB) if self.max_rate else None
        self._requests = Throttle(self.max_requests) if self.max_requests else None

    def request(self, operation: str) -> None:
        """One request about to be sent (each attempt of a retried one too)."""
        with self._lock:
            self.requests[request_class(operation)] += 1
        if self._requests is not None:
            self._wait(self._requests.take(1))

    def data(self, nbytes: int, way: str) -> None:
        """Bytes about to be sent (``sent``), just received (``received``), or about to be
        copied inside the store (``in_store``)."""
        if nbytes <= 0:
            return
        with self._lock:
            setattr(self, way, getattr(self, way) + nbytes)
        if self._bytes is not None:
            self._wait(self._bytes.take(nbytes))

    def predict(self, operation: str, count: int = 1, **data: int) -> None:
        """What a real run would send, counted by a dry run (which waits for none of it)."""
        with self._lock:
            self.requests[request_class(operation)] += count
            for way, nbytes in data.items():
                setattr(self, way, getattr(self, way) + nbytes)

    def _wait(self, seconds: float) -> None:
        if seconds:
            with self._lock:
                self.waited += seconds

    def cost(self) -> dict[str, Any]:
        """The report's form."""
        return {
            "requests": {k: self.requests.get(k, 0) for k in (CLASS_A, CLASS_B, FREE)},
            "bytes_sent": self.sent,
            "bytes_received": self.received,
            "bytes_copied_in_store": self.in_store,
            **({"max_rate": self.max_rate} if self.max_rate else {}),
            **({"max_requests": self.max_requests} if self.max_requests else {}),
            "seconds_held_back": round(self.waited, 3),
        }


def botocore_hooks(events: Any, meter_of: Any) -> None:
    """Count and pace every request a botocore client sends (retries included), and the bytes
    of its bodies and of the objects it downloads. ``meter_of()`` gives the run's meter, or
    None outside a run."""

    def before_send(request: Any, event_name: str = "", **_: Any) -> None:
        meter = meter_of()
        if meter is None:
            return
        operation = event_name.rsplit(".", 1)[-1]
        meter.request(operation)
        length = request.headers.get("Content-Length")
        if length and operation in ("PutObject", "UploadPart"):
            meter.data(int(length), "sent")

    def after_get(parsed: Any, **_: Any) -> None:
        meter = meter_of()
        if meter is not None and isinstance(parsed, dict):
            meter.data(int(parsed.get("ContentLength") or 0), "received")

    events.register("before-send.s3", before_send)
    events.register("after-call.s3.GetObject", after_get)


def add_costs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The cost of two runs' work (the batches of --enqueue): their counts added up."""
    total = {k: v for k, v in a.items() if k not in ("max_rate", "max_requests")}
    for key, value in b.items():
        if key == "requests":
            requests = dict(total.get("requests", {}))
            for kind, count in value.items():
                requests[kind] = requests.get(kind, 0) + count
            total["requests"] = requests
        elif isinstance(value, int | float) and key not in ("max_rate", "max_requests"):
            total[key] = round(total.get(key, 0) + value, 3)
    return total
