"""``render serve`` under stress: idle and aborting clients, a thread bound, one broken site.

Every server here listens on a free port of 127.0.0.1 and is stopped at the
end of its test; waits are socket timeouts or events with generous deadlines,
never sleeps, and nothing asserts on speed (``bench/`` is for that).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3server import make_build, site_files

from render.check.loopback import Response, serve
from render.errors import PublishError
from render.publish.manifest import root_key, version_key
from render.publish.store import LocalStore
from render.publish.versions import publish
from render.serve.live import LiveSites

DEADLINE = 30.0  # seconds: only ever reached when something is wrong


def _ok(_host: str, path: str) -> Response:
    return Response(body=b"x" * 4_000_000 if path == "/big" else b"ok")


def _get(url: str, *, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a client that gives up does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_reply(sock: socket.socket) -> tuple[int, bytes]:
    reply = http.client.HTTPResponse(sock)
    reply.begin()
    return reply.status, reply.read()


def _read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):  # a socket timeout here fails the test
        data += chunk
    return data


@pytest.mark.parametrize(
    ("sent", "reply"),
    [
        (b"", b""),  # connects and sends nothing
        (b"GET / HTTP/1.1\r\nHost: x\r\n", b""),  # stops halfway through the headers
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"ok"),  # keeps the connection open after a reply
    ],
    ids=["silent", "half-request", "idle-keep-alive"],
)
def test_an_idle_connection_is_closed_after_the_idle_timeout(sent: bytes, reply: bytes) -> None:
    with serve(_ok, idle_seconds=0.5) as running, _connect(running.port) as sock:
        sock.sendall(sent)
        data = _read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") if reply else data == b""
    assert data.endswith(reply)


def test_aborted_requests_show_no_traceback_and_the_server_keeps_answering(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with serve(_ok) as running:
        for _ in range(300):  # half a request, then a reset
            with _connect(running.port) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x")
                _reset(sock)
        for _ in range(20):  # a whole request for a big reply, then a reset while it is sent
            with _connect(running.port) as sock:
                sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(1) == b"H"
                _reset(sock)
        assert _get(f"{running.url}/") == (200, b"ok")
        server = running.server
    assert capfd.readouterr().err == ""
    assert 0 < server.aborted <= 320
    assert server.errors == 0


def test_more_slow_connections_than_workers_start_no_more_threads() -> None:
    workers, clients = 4, 12
    entered = threading.Semaphore(0)
    release = threading.Event()
    threads_seen: list[int] = []

    def slow(_host: str, path: str) -> Response:
        threads_seen.append(threading.active_count())
        if path == "/slow":
            entered.release()
            release.wait(DEADLINE)
        return Response(body=path.encode())

    before = threading.active_count()
    with serve(slow, workers=workers, idle_seconds=0.5) as running:
        socks = [_connect(running.port) for _ in range(clients)]
        try:
            for sock in socks:
                sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            for _ in range(workers):  # every worker is busy with a slow request
                assert entered.acquire(timeout=DEADLINE)
            release.set()
            # The connections stay open: a worker is freed only by the idle timeout.
            assert [_read_reply(sock) for sock in socks] == [(200, b"/slow")] * clients
        finally:
            for sock in socks:
                sock.close()
        assert _get(f"{running.url}/after") == (200, b"/after")
    assert len(threads_seen) == clients + 1
    assert max(threads_seen) <= before + 1 + workers  # the accept loop and the workers
    assert threading.active_count() == before


def _two_sites(store: LocalStore, work: Path) -> str:
    """Publish acme/blog and acme/docs; return blog's live version."""
    blog = publish(make_build(work / "blog", site_files(1)), store=store, ledger=None)
    docs = make_build(
        work / "docs",
        {"index.html": b"docs home"},
        name="docs",
        base_url="https://docs.example.org/",
    )
    publish(docs, store=store, ledger=None)
    return blog.version


@pytest.mark.parametrize("damage", ["root", "tree", "unreadable root"])
def test_a_broken_site_answers_503_alone_and_comes_back_when_fixed(
    tmp_path: Path, damage: str
) -> None:
    store = LocalStore(tmp_path / "store")
    version = _two_sites(store, tmp_path)
    key = version_key("acme", "blog", version) if damage == "tree" else root_key("acme", "blog")
    problem = f"{key} in the store is corrupt: not valid JSON (Expecting ',' delimiter: line 1 column 19 (char 18))"  # noqa: E501
    if damage == "unreadable root":
        problem = f"local folder {store.root}: cannot read {key}: Is a directory"
    path = store.local_path(key)
    assert path is not None
    good = path.read_bytes()
    if damage == "unreadable root":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(b'{"version": "oops"')
    told: list[str] = []
    live = LiveSites(store, cache=tmp_path / "cache", refresh_seconds=0, report=told.append)
    home = site_files(1)["index.html"]
    with serve(live) as running:
        for _ in range(3):
            assert _get(f"{running.url}/", host="docs.example.org") == (200, b"docs home")
            assert _get(f"{running.url}/acme/docs/") == (200, b"docs home")
            assert _get(f"{running.url}/acme/blog/") == (
                503,
                f"acme/blog is unavailable: {problem}\n".encode(),
            )
            assert _get(f"{running.url}/", host="blog.acme.localhost")[0] == 503
        if damage == "unreadable root":
            path.rmdir()
        path.write_bytes(good)
        assert _get(f"{running.url}/acme/blog/") == (200, home)
        assert _get(f"{running.url}/", host="blog.example.com") == (200, home)
    assert told == [
        f"acme/blog: {problem}; it answers 503 until this is fixed",
        f"acme/blog: serving {version} again",
    ]


class _Unlistable(LocalStore):
    """A local store whose listing fails while ``failure`` is set, as a bucket out of reach."""

    failure: str | None = None

    def sites(self) -> list[tuple[str, str]]:
        if self.failure is not None:
            raise PublishError(self.failure)
        return super().sites()


def test_a_store_that_cannot_be_listed_keeps_the_last_listing_served(tmp_path: Path) -> None:
    store = _Unlistable(tmp_path / "store")
    _two_sites(store, tmp_path)
    told: list[str] = []
    live = LiveSites(store, cache=tmp_path / "cache", refresh_seconds=0, report=told.append)
    store.failure = "cannot reach the bucket"
    with pytest.raises(PublishError, match="^publish: cannot reach the bucket$"):
        live.sites()  # nothing was listed yet: nothing to serve
    store.failure = None
    assert [(s.owner, s.name) for s in live.sites()] == [("acme", "blog"), ("acme", "docs")]
    store.failure = "cannot reach the bucket"
    with serve(live) as running:
        for _ in range(3):
            assert _get(f"{running.url}/acme/docs/") == (200, b"docs home")
        store.failure = None
        assert _get(f"{running.url}/acme/docs/") == (200, b"docs home")
    assert told == [
        "cannot list the sites: cannot reach the bucket; serving the last listing",
        "the sites can be listed again",
    ]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``render serve --port 0`` over a store where acme/blog's root.json is corrupt."""
    (tmp_path / "render.toml").write_text('[store]\npath = "store"\n')
    store = LocalStore(tmp_path / "store")
    _two_sites(store, tmp_path / "work")
    store.put(root_key("acme", "blog"), b"{", content_type="application/json", cache_control="x")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "render",
            "serve",
            "--config",
            str(tmp_path / "render.toml"),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first.startswith("Serving 2 site(s) from local folder "):
            proc.send_signal(signal.SIGINT)
            pytest.fail(
                f"render serve did not start: {first!r} {proc.communicate(timeout=DEADLINE)}"
            )
        yield proc, first.rstrip().rsplit(" at ", 1)[1].rstrip("/")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=DEADLINE)


def test_render_serve_names_a_broken_site_once_and_serves_the_others(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    proc, url = served
    assert url.startswith("http://127.0.0.1:")
    for _ in range(3):
        assert _get(f"{url}/acme/blog/")[0] == 503
        assert _get(f"{url}/acme/docs/") == (200, b"docs home")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=DEADLINE)
    assert err == (
        "acme/blog: sites/acme/blog/root.json in the store is corrupt: not valid JSON"
        " (Expecting property name enclosed in double quotes: line 1 column 2 (char 1));"
        " it answers 503 until this is fixed\n"
    )
