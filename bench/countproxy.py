"""A counting HTTP forwarding proxy for loopback benchmarks: how many requests does a tool make?

Point a tool's S3 endpoint at the proxy's URL; every request is forwarded unchanged (the Host
header included, so AWS signatures still match) to the real server over one upstream connection
per client connection, and recorded as (method, path with query). Bodies are buffered, which is
fine for the listing and HEAD traffic it is used for, not for timing anything.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

# Not forwarded: they describe one hop, not the request.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}


@dataclass
class Requests:
    """What went through the proxy, in arrival order."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str) -> None:
        with self.lock:
            self.seen.append((method, path))

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()

    @property
    def total(self) -> int:
        return len(self.seen)

    def by_kind(self) -> Counter[str]:
        """S3 operation names, guessed from method, path and query."""
        kinds: Counter[str] = Counter()
        for method, target in self.seen:
            parts = urlsplit(target)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            key = parts.path.lstrip("/").partition("/")[2]
            if method == "GET" and not key:
                kinds["ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"] += 1
            elif method == "GET":
                kinds["GetObject"] += 1
            elif method == "HEAD":
                kinds["HeadObject" if key else "HeadBucket"] += 1
            else:
                kinds[f"{method} {'object' if key else 'bucket'}"] += 1
        return kinds


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream_host = "127.0.0.1"
    upstream_port = 0
    requests = Requests()
    _connection: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _upstream(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(
                self.upstream_host, self.upstream_port, timeout=300
            )
        return self._connection

    def _forward(self) -> None:
        self.requests.add(self.command, self.path)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            # Re-framing the body would change a signed Content-Length; nothing we proxy sends it.
            self.send_error(501, "chunked request bodies are not supported by this proxy")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            connection = self._upstream()
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            if self._connection is not None:
                self._connection.close()
            self._connection = None
            self.send_error(502, "upstream failed")
            return
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            lowered = name.lower()
            if lowered in HOP_BY_HOP or (lowered == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._connection is not None:
                self._connection.close()


@contextmanager
def counting_proxy(upstream: str) -> Iterator[tuple[str, Requests]]:
    """Run a proxy to the ``http://host:port`` upstream on a free loopback port; yield its URL
    and the record of requests it forwarded."""
    parts = urlsplit(upstream)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ValueError(f"need an http://host:port upstream, not {upstream!r}")
    record = Requests()

    class Handler(_Handler):
        pass

    Handler.upstream_host = parts.hostname
    Handler.upstream_port = parts.port
    Handler.requests = record
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="counting-proxy", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}", record
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
