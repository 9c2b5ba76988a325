"""A real Redis server and real Celery workers (``render worker``), on loopback, for tests.

    with redis_server(tmp_path) as url, worker(cfg, name="w1") as w1:
        ...

Each worker is a "machine": its own render.toml and state folder; the sites
folder and the store are shared. Everything started here is stopped here,
with bounded waits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import require
from sitekit import SiteSpec, html, toml_value, write_site

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Redis:
    url: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.folder),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn,
            ):
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
            return False

        _wait(up, timeout=START_TIMEOUT, what="redis-server")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    """A redis-server of our own on a free loopback port; append-only, so a restart keeps the queue."""
    require(os.path.exists(REDIS), "redis-server is missing (apt-get install redis-server)")
    folder = tmp_path / "redis"
    folder.mkdir()
    port = free_port()
    server = Redis(url=f"redis://127.0.0.1:{port}/0", port=port, folder=folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def write_config(
    root: Path, *, sites: Path, store: Path, broker: str | None, schedule: Mapping[str, Any] = {}
) -> Path:
    """One machine's render.toml: shared sites and store, its own state, no embedded mirror."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        "[host]",
        f"sites = {toml_value(str(sites))}",
        "",
        "[store]",
        f"path = {toml_value(str(store))}",
        "",
        "[mirror]",
        "enabled = false",
        "",
        "[limits]",
        "workers = 1",
        "",
        "[schedule]",
    ]
    if "executor" not in schedule:
        lines.append('executor = "celery"')
    if broker is not None:
        lines.append(f"broker_url = {toml_value(broker)}")
    lines += [f"{k} = {toml_value(v)}" for k, v in schedule.items()]
    path = root / "render.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def small_site(rows: int = 3, *, word: str = "post") -> SiteSpec:
    """A site of ``rows`` post pages and an index, served at ``https://<word>.example.com``."""
    return SiteSpec(
        base_url=f"https://{word}.example.com",
        sql=[
            "create table posts (id integer primary key, slug text, body text)",
            *(f"insert into posts values ({i}, '{word}-{i}', 'body {i}')" for i in range(rows)),
        ],
        routes=[
            {"path": "/", "template": "index.html"},
            {"path": "/posts/{slug}/", "query": "select * from posts", "template": "post.html"},
        ],
        templates={"index.html": html("<p>home</p>"), "post.html": html("<p>{{ row.body }}</p>")},
    )


def write_sites(sites: Path, specs: Mapping[str, SiteSpec]) -> None:
    for key, spec in specs.items():
        owner, _, name = key.partition("/")
        write_site(sites / owner / name, spec)


@dataclass
class Worker:
    name: str
    config: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def state(self) -> Path:
        return self.config.parent / ".render"

    def pool_pids(self) -> list[int]:
        """The worker's pool processes (its children)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(p) for p in children.read_text().split()]
        except OSError:
            return []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown: finish, then exit
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own group: pool processes too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@contextlib.contextmanager
def worker(
    config: Path,
    *,
    name: str,
    broker: str,
    concurrency: int = 1,
    env: Mapping[str, str] = {},
    queues: str | None = None,
) -> Iterator[Worker]:
    """``render worker`` in a process group of its own; yields once it answers a ping.

    ``queues``: ``--queues`` (default: the command's own, builds and audits).
    """
    log = config.parent / f"{name}.log"
    environ = {k: v for k, v in os.environ.items() if k != "RENDER_CONFIG"}
    environ.update(env)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "render",
                "worker",
                "--config",
                str(config),
                *(["--queues", queues] if queues else []),
                "-c",
                str(concurrency),
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
            start_new_session=True,
        )
    running = Worker(name=name, config=config, process=process, log=log)
    try:
        _wait_ready(running, broker)
        yield running
    finally:
        running.stop()


def _wait_ready(running: Worker, broker: str) -> None:
    from celery import Celery

    app = Celery("ping", broker=broker, backend=broker, set_as_current=False)
    try:

        def ready() -> bool:
            if running.process.poll() is not None:
                raise AssertionError(
                    f"worker {running.name} exited: {running.log.read_text(errors='replace')}"
                )
            replies = app.control.ping(
                timeout=0.5, destination=[f"{running.name}@{socket.gethostname()}"]
            )
            return bool(replies)

        _wait(ready, timeout=START_TIMEOUT, what=f"worker {running.name}")
    finally:
        app.close()
