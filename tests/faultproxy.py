"""A small fault-injecting HTTP proxy on loopback, for putting in front of the moto server.

Every request is logged (method, path, query, status). A rule decides what
happens to a request: pass it on, answer it with an error without passing it
on, pass it on and then answer with an error (a lost response), drop the
connection half-way through the request body, hold it until released, or pass
it on after a delay (the benchmarks' far store).
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import SplitResult, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # /bucket/key, unquoted as sent
    query: str
    attempt: int  # 1 for the first time this method+path was seen, 2 for its retry, ...


@dataclass(frozen=True)
class Pass:
    pass


@dataclass(frozen=True)
class Reply:
    """Answer without passing the request on (throttling, 5xx, refused credentials)."""

    status: int
    code: str = "InternalError"
    message: str = "injected fault"


@dataclass(frozen=True)
class LoseResponse:
    """Pass the request on, then answer with ``status`` instead of the real response."""

    status: int = 503


@dataclass(frozen=True)
class Drop:
    """Read part of the request body, then reset the connection."""


@dataclass(frozen=True)
class Hold:
    """Keep the request waiting until ``event`` is set, then reset the connection."""

    event: threading.Event


@dataclass(frozen=True)
class Delay:
    """Pass the request on after ``seconds`` (the latency to a far store; for benchmarks)."""

    seconds: float


Action = Pass | Reply | LoseResponse | Drop | Hold | Delay
Rule = Callable[[Request], Action | None]


@dataclass(frozen=True)
class Entry:
    method: str
    path: str
    query: str
    status: int  # -1: connection dropped or held
    action: str
    headers: tuple[tuple[str, str], ...] = ()  # the request's headers


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    log: list[Entry] = field(default_factory=list)
    held: int = 0

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        self._up = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._attempts: dict[tuple[str, str], int] = {}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def decide(self, method: str, path: str, query: str) -> tuple[Request, Action]:
        with self._lock:
            n = self._attempts.get((method, path), 0) + 1
            self._attempts[(method, path)] = n
        request = Request(method, path, query, n)
        for rule in list(self.rules):
            action = rule(request)
            if action is not None:
                return request, action
        return request, Pass()

    def record(self, entry: Entry) -> None:
        with self._lock:
            self.log.append(entry)

    def mark(self) -> int:
        """A position in the log, for ``since``."""
        with self._lock:
            return len(self.log)

    def entries(self, since: int = 0) -> list[Entry]:
        with self._lock:
            return list(self.log[since:])

    def count(
        self, method: str, *, contains: str = "", since: int = 0, status: int | None = None
    ) -> int:
        return sum(
            1
            for e in self.entries(since)
            if e.method == method and contains in e.path and (status is None or e.status == status)
        )

    @contextmanager
    def running(self) -> Iterator[FaultProxy]:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        # SO_LINGER 0: close with a RST, as a dropped connection looks to the client
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _log(self, split: SplitResult, status: int, action: str) -> None:
        entry = Entry(
            self.command, split.path, split.query, status, action, tuple(self.headers.items())
        )
        self.owner.record(entry)

    def _handle(self) -> None:
        split = urlsplit(self.path)
        request, action = self.owner.decide(self.command, split.path, split.query)
        name = type(action).__name__
        if isinstance(action, Drop):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(max(1, length // 2))
            self._log(split, -1, name)
            self._reset()
            return
        body = self._body()
        if isinstance(action, Hold):
            with self.owner._lock:
                self.owner.held += 1
            action.event.wait(timeout=60)
            self._log(split, -1, name)
            self._reset()
            return
        if isinstance(action, Reply):
            payload = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{action.code}</Code>'
                f"<Message>{action.message}</Message></Error>"
            ).encode()
            self._log(split, action.status, name)  # logged before the client hears back
            self._send(action.status, {"Content-Type": "application/xml"}, payload)
            return
        if isinstance(action, Delay):
            time.sleep(action.seconds)
        status, headers, payload = self._forward(body)
        if isinstance(action, LoseResponse):
            self._log(split, action.status, name)
            self._send(
                action.status,
                {"Content-Type": "application/xml"},
                b"<Error><Code>ServiceUnavailable</Code><Message>lost</Message></Error>",
            )
            return
        self._log(split, status, name)
        self._send(status, headers, payload)

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self.owner._up, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP}
            return response.status, out, payload
        finally:
            conn.close()

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "server", "date"):
                self.send_header(key, value)
        if self.command == "HEAD":
            self.send_header(
                "Content-Length", headers.get("Content-Length", headers.get("content-length", "0"))
            )
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815
