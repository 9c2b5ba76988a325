"""Test kit for the edge Worker: workerd through Miniflare on 127.0.0.1, with an R2 bucket
loaded from a local store folder (``edge/test/harness.mjs``), and a stub origin."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import require

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "edge" / "test" / "harness.mjs"
MINIFLARE = REPO / "node_modules" / "miniflare" / "package.json"
HARNESS_HOST = "render-edge-harness.invalid"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def fetch(
    port: int,
    path: str,
    *,
    host: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


class EdgeRuntime:
    """A running harness: ``port``, ``sync()``, ``reload()``, ``ops()``."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.port = int(url.rsplit(":", 1)[1])

    def _command(self, command: str, answer: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline().strip()
        assert line.startswith(answer), f"harness answered {line!r} to {command!r}"
        return line

    def sync(self) -> int:
        """Upload what changed in the store folder into the bucket; how many objects."""
        return int(self._command("sync", "synced").split()[1])

    def reload(self) -> None:
        """A fresh isolate: the Worker's in-memory caches start empty."""
        self._command("reload", "reloaded")

    def ops(self, *, reset: bool = True) -> list[str]:
        """The R2 operations the Worker made since the last reset (``get <key>``, ...)."""
        reply = fetch(self.port, "/__ops?reset=1" if reset else "/__ops", host=HARNESS_HOST)
        ops: list[str] = json.loads(reply.body)["ops"]
        return ops

    def get(self, path: str, *, host: str, **kwargs: object) -> Reply:
        return fetch(self.port, path, host=host, **kwargs)  # type: ignore[arg-type]


@contextmanager
def edge_runtime(
    store: Path, *, origin: str | None = None, ttl: float = 5, cookie: str | None = None
) -> Iterator[EdgeRuntime]:
    node = shutil.which("node")
    require(node is not None and MINIFLARE.exists(), "node and miniflare (npm ci) are needed")
    assert node is not None
    command = [node, str(HARNESS), "--store", str(store), "--port", "0", "--ttl", str(ttl)]
    if origin:
        command += ["--origin", origin]
    if cookie:
        command += ["--cookie", cookie]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("ready "), f"the harness did not start: {line!r}"
        yield EdgeRuntime(process, line.split()[1])
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@dataclass
class StubOrigin:
    """An origin on loopback that answers every request with what it saw."""

    port: int = 0
    seen: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def stub_origin() -> Iterator[StubOrigin]:
    stub = StubOrigin()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            stub.seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("X-Forwarded-Host", ""),
                    "cookie": self.headers.get("Cookie", ""),
                    "body": body.decode(),
                }
            )
            data = f"origin {self.command} {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = _answer  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
