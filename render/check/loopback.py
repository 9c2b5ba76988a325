"""A small HTTP server on loopback that serves a tree through a resolver.

Used to show a site (``render serve``) and to check a build in a browser
(Lighthouse, the no-JavaScript read). Python's plain ``http.server`` keeps a
listen backlog of 5 and drops connections when a browser opens many at once;
this one speaks HTTP/1.1 with keep-alive and keeps a deep backlog.

Connections are handled by a fixed pool of worker threads: a connection is
accepted only when a worker is free, so a flood of clients waits in the
listen backlog instead of starting a thread each. A connection that sends
nothing (or reads nothing) for ``idle_seconds`` is closed, so idle or
stalled clients give their worker back. A client that resets or breaks the
connection is counted in ``aborted``; neither it nor a timeout shows a
traceback.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

from render.build.tree import FileEntry
from render.paths import is_file_url

LOOPBACK = "127.0.0.1"
WORKERS = 32
"""Connections served at once; more wait in the listen backlog."""
IDLE_SECONDS = 10.0
"""A connection that sends nothing (or takes nothing) for this long is closed."""


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


Resolver = Callable[[str, str], Response]
"""``(host header, decoded URL path) -> Response``."""


class Blobs(Protocol):
    """Where a tree's bytes are: ``render.build.objects.Objects``, or the live sites' blob cache."""

    def read(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; ``OSError`` when they cannot be read."""
        ...


def tree_resolver(files: Mapping[str, FileEntry], blobs: Blobs, *, prefix: str = "") -> Resolver:
    """Resolve pretty URLs through a tree: ``/a/`` -> ``a/index.html``, 404 -> ``404.html``."""

    def resolve(_host: str, path: str) -> Response:
        return resolve_in_tree(files, blobs, path, prefix=prefix)

    return resolve


def resolve_in_tree(
    files: Mapping[str, FileEntry], blobs: Blobs, path: str, *, prefix: str = ""
) -> Response:
    rel = path.lstrip("/")
    status, entry = 200, files.get(rel + "index.html" if rel == "" or rel.endswith("/") else rel)
    if entry is None:
        if rel and not rel.endswith("/") and not is_file_url(path) and f"{rel}/index.html" in files:
            return Response(status=301, headers={"Location": f"{prefix}{path}/"})
        status, entry = 404, files.get("404.html")
        if entry is None:
            return Response(
                status=404, body=b"<!doctype html><title>Not found</title><h1>Not found</h1>\n"
            )
    try:
        body = blobs.read(entry.hash)
    except OSError:
        return Response(status=404, body=b"not found\n", content_type="text/plain")
    return Response(status=status, body=body, content_type=entry.type)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_seconds)  # each read and write

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._respond(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._respond(head=False)

    def _respond(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        try:
            response = self.server.resolver(host, path)
        except Exception:  # a resolver bug must not kill the server; show a 500
            self.server.count("errors")
            response = Response(status=500, body=b"internal error\n", content_type="text/plain")
        body = response.body
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


_Job = tuple[socket.socket, Any]


class _Server(HTTPServer):
    """``HTTPServer`` with a fixed pool of ``workers`` threads and an idle timeout per connection."""

    request_queue_size = 256
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], resolver: Resolver, *, workers: int, idle_seconds: float
    ) -> None:
        self.resolver = resolver
        self.idle_seconds = idle_seconds
        self.errors = 0  # resolver bugs answered with a 500
        self.aborted = 0  # connections the client reset or broke
        self._counts = threading.Lock()
        self._free = threading.Semaphore(workers)  # one per idle worker
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._open: set[socket.socket] = set()  # connections a worker is on
        self._closing = False
        self._workers: list[threading.Thread] = []  # server_close runs when binding fails
        super().__init__(address, _Handler)
        self._workers = [
            threading.Thread(target=self._work, name=f"render-serve-{i}", daemon=True)
            for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def count(self, name: Literal["errors", "aborted"]) -> None:
        """Add one to ``errors`` or ``aborted``; workers count at the same time."""
        with self._counts:
            setattr(self, name, getattr(self, name) + 1)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only once a worker is free: the others wait in the listen backlog."""
        self._free.acquire()
        try:
            if self._closing:
                raise OSError("the server is shutting down")
            return super().get_request()
        except BaseException:
            self._free.release()
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        self._jobs.put((request, client_address))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            request, client_address = job
            with self._counts:
                self._open.add(request)
                closing = self._closing
            try:
                if not closing:
                    self.finish_request(request, client_address)
            except (ConnectionError, TimeoutError):  # the client went away: nothing to show
                self.count("aborted")
            except Exception:  # a bug: its traceback, as socketserver shows it
                self.handle_error(request, client_address)
            finally:
                with self._counts:
                    self._open.discard(request)
                self.shutdown_request(request)
                self._free.release()

    def shutdown(self) -> None:
        self._closing = True
        self._free.release()  # wakes an accept that waits for a worker
        super().shutdown()

    def server_close(self) -> None:
        """Stop listening, end the open connections and wait for the workers."""
        super().server_close()
        with self._counts:
            self._closing = True
            for request in self._open:  # a worker blocked reading it sees the end at once
                with suppress(OSError):  # already gone
                    request.shutdown(socket.SHUT_RDWR)
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            worker.join()


@dataclass(frozen=True, kw_only=True)
class Running:
    host: str
    port: int
    server: _Server

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def serve(
    resolver: Resolver,
    *,
    host: str = LOOPBACK,
    port: int = 0,
    workers: int = WORKERS,
    idle_seconds: float = IDLE_SECONDS,
) -> Iterator[Running]:
    """Serve in a background thread for the length of the ``with`` block."""
    server = _Server((host, port), resolver, workers=workers, idle_seconds=idle_seconds)
    thread = threading.Thread(target=server.serve_forever, name="render-serve", daemon=True)
    thread.start()
    try:
        yield Running(host=host, port=server.server_address[1], server=server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_forever(
    resolver: Resolver,
    *,
    host: str = LOOPBACK,
    port: int = 0,
    workers: int = WORKERS,
    idle_seconds: float = IDLE_SECONDS,
    ready: Callable[[Running], None] | None = None,
) -> None:
    """Serve in the foreground until interrupted."""
    server = _Server((host, port), resolver, workers=workers, idle_seconds=idle_seconds)
    running = Running(host=host, port=server.server_address[1], server=server)
    if ready is not None:
        ready(running)
    try:
        server.serve_forever()
    finally:
        server.server_close()
