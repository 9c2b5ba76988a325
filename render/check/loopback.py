"""A small HTTP server on loopback that serves a tree through a resolver.

Used to show a site (``render serve``) and to check a build in a browser
(Lighthouse, the no-JavaScript read). Python's plain ``http.server`` keeps a
listen backlog of 5 and drops connections when a browser opens many at once;
this one threads per connection, speaks HTTP/1.1 with keep-alive and keeps a
deep backlog.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import unquote, urlsplit

from render.build.tree import FileEntry
from render.paths import is_file_url

LOOPBACK = "127.0.0.1"


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
            self.server.errors += 1
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], resolver: Resolver) -> None:
        self.resolver = resolver
        self.errors = 0
        super().__init__(address, _Handler)


@dataclass(frozen=True, kw_only=True)
class Running:
    host: str
    port: int
    server: _Server

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def serve(resolver: Resolver, *, host: str = LOOPBACK, port: int = 0) -> Iterator[Running]:
    """Serve in a background thread for the length of the ``with`` block."""
    server = _Server((host, port), resolver)
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
    ready: Callable[[Running], None] | None = None,
) -> None:
    """Serve in the foreground until interrupted."""
    server = _Server((host, port), resolver)
    running = Running(host=host, port=server.server_address[1], server=server)
    if ready is not None:
        ready(running)
    try:
        server.serve_forever()
    finally:
        server.server_close()
