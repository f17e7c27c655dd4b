"""A fault-injecting HTTP proxy for tests: between the tool and moto's server on loopback, it
answers a share of requests with 503 SlowDown or 500 InternalError, or drops the connection,
before or after the server has acted (a lost answer), the way S3 and networks fail. It can also
check Content-MD5 as S3 does (moto's server does not): a PUT whose body does not match it is
refused with 400 BadDigest (InvalidDigest if the header is malformed) and never reaches moto."""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import random
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("slowdown", "internal", "drop", "lost_answer")
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultyProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        upstream: str,
        rate: float,
        seed: int,
        check_md5: bool = False,
        conditional: str = "honour",
        flip_gets: bool = False,
        copy_answers: tuple[str, ...] = (),
        complete_answers: tuple[str, ...] = (),
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        split = urlsplit(upstream)
        self.upstream = (split.hostname or "127.0.0.1", split.port or 80)
        self.rate = rate
        self.check_md5 = check_md5
        # "honour" passes If-None-Match on; "refuse" answers it with 501 NotImplemented, as
        # stores without conditional writes do; "ignore" drops it, as stores that accept and
        # ignore it do.
        self.conditional = conditional
        # Flip one bit in the body of every object download (a bad middlebox on plain http).
        self.flip_gets = flip_gets
        self.flipped = 0
        # Answers to the next server-side copies (CopyObject, UploadPartCopy), one each, as S3
        # can give them: "error_in_200" (a 200 whose body is an error: nothing was copied) or
        # "no_etag" (the copy was made; its 200 answer has no ETag in it), "lost_answer" (the
        # copy was made; the connection drops before its answer) or "precondition_failed" (a
        # 412 without asking the server: what a store that honours If-None-Match answers to a
        # retried copy whose first answer was lost).
        self.copy_answers = list(copy_answers)
        # The same for the next completions of multipart uploads (POST ?uploadId=), and
        # "wrong_etag" (the upload is completed; its answer names another ETag).
        self.complete_answers = list(complete_answers)
        self.copies = 0
        self.answered = 0  # bytes of the answers' bodies sent to the client
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.requests = 0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def draw(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.random.random() >= self.rate:
                return None
            fault = self.random.choice(FAULTS)
            self.injected[fault] += 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyProxy

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        refusal = self._bad_digest(body)
        if refusal:
            self._error(400, *refusal)
            return
        conditional = self.headers.get("If-None-Match")
        if conditional and self.command in ("PUT", "POST"):
            if self.server.conditional == "refuse":
                self._error(
                    501,
                    "NotImplemented",
                    "A header you provided implies functionality that is not implemented.",
                )
                return
            if self.server.conditional == "ignore":
                del self.headers["If-None-Match"]
            # A store that honours If-None-Match on PUT and completions, not on CopyObject.
            if self.server.conditional == "ignore_on_copy" and "x-amz-copy-source" in self.headers:
                del self.headers["If-None-Match"]
        copy_answer = None
        # Not to the preflight's scratch objects: to the copies of files.
        if "x-amz-copy-source" in self.headers and "storage-migrate-copy-probe" not in self.path:
            with self.server.lock:
                self.server.copies += 1
                if self.server.copy_answers:
                    copy_answer = self.server.copy_answers.pop(0)
        elif self.command == "POST" and "uploadId=" in self.path:
            with self.server.lock:
                if self.server.complete_answers:
                    copy_answer = self.server.complete_answers.pop(0)
        if copy_answer == "precondition_failed":
            self._error(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            )
            return
        if copy_answer == "error_in_200":
            self._answer_200(
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
                b"<Message>We encountered an internal error. Please try again.</Message></Error>"
            )
            return
        fault = self.server.draw()
        if fault == "drop":
            self._drop()
            return
        if fault in _ERRORS:
            self._error(*_ERRORS[fault])
            return
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        if fault == "lost_answer" or copy_answer == "lost_answer":  # the server acted; the
            # client never hears of it
            self._drop()
            return
        if copy_answer == "wrong_etag" and response.status == 200:
            # A completion whose answer names an ETag the parts do not give.
            data = re.sub(
                rb"<ETag>[^<]*</ETag>", b"<ETag>&quot;" + b"0" * 32 + b"-2&quot;</ETag>", data
            )
        if copy_answer == "no_etag" and response.status == 200:
            tag = b"CopyPartResult" if b"CopyPartResult" in data else b"CopyObjectResult"
            self._answer_200(b'<?xml version="1.0" encoding="UTF-8"?>\n<%s></%s>' % (tag, tag))
            return
        if self._is_download(response.status) and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :]
            with self.server.lock:
                self.server.flipped += 1
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        # A HEAD answer has no body but tells the object's length.
        head_length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", head_length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
            with self.server.lock:
                self.server.answered += len(data)

    def _is_download(self, status: int) -> bool:
        """A GET of an object's bytes (not a listing: those have a query and no key)."""
        if not self.server.flip_gets or self.command != "GET" or status not in (200, 206):
            return False
        path, _, query = self.path.partition("?")
        return (
            path.strip("/").count("/") >= 1 and "list-type" not in query and "uploads" not in query
        )

    def _bad_digest(self, body: bytes) -> tuple[str, str] | None:
        """S3's answer to a PUT whose Content-MD5 is malformed or does not match its body."""
        header = self.headers.get("Content-MD5")
        if not self.server.check_md5 or self.command != "PUT" or header is None:
            return None
        try:
            digest = base64.b64decode(header, validate=True)
        except binascii.Error:
            digest = b""
        if len(digest) != 16:
            return "InvalidDigest", "The Content-MD5 you specified was invalid."
        if digest != hashlib.md5(body).digest():
            return "BadDigest", "The Content-MD5 you specified did not match what we received."
        return None

    def _error(self, status: int, code: str, message: str) -> None:
        payload = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _answer_200(self, payload: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _drop(self) -> None:
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay


@contextmanager
def faulty_proxy(
    upstream: str,
    rate: float,
    seed: int = 7,
    *,
    check_md5: bool = False,
    conditional: str = "honour",
    flip_gets: bool = False,
    copy_answers: tuple[str, ...] = (),
    complete_answers: tuple[str, ...] = (),
) -> Iterator[FaultyProxy]:
    """Run the proxy in a thread for the duration of the block."""
    proxy = FaultyProxy(
        upstream, rate, seed, check_md5, conditional, flip_gets, copy_answers, complete_answers
    )
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
