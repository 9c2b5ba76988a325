"""Run the origin under uvicorn: HTTP/1.1 keep-alive, graceful SIGTERM.

uvicorn (with uvloop and httptools) runs the application in this process, so
the per-site state (stale pages, single-flight renders, the byte cache) is one
object; ``--workers N`` starts N such processes on one socket, each with its
own state. On SIGTERM uvicorn stops accepting, lets the requests under way
finish (a request waiting for a render waits at most ``[origin] max_wait_ms``),
then the application lets the render under way finish, drops queued ones,
stops its render processes, and the process exits 0.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import uvicorn

from render.config import HostConfig, load_host
from render.origin.app import Origin
from render.publish.store import open_store
from render.run.buildlog import configure_logging

GRACE_SECONDS = 30
"""Longest wait for requests under way after SIGTERM (systemd's TimeoutStopSec is above it)."""


def make_app() -> Origin:
    """The application, for uvicorn's worker processes (``RENDER_CONFIG`` names the host)."""
    host = load_host(os.environ.get("RENDER_CONFIG"))
    configure_logging(os.environ.get("RENDER_ORIGIN_LOG_FORMAT", "text"))  # a process of its own
    access_log = os.environ.get("RENDER_ORIGIN_ACCESS_LOG", "1") == "1"
    return Origin(host, open_store(host), access_log=access_log)


class _Lazy:
    """The application made on its first call, for servers that import an object (granian)."""

    def __init__(self) -> None:
        self.app: Origin | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            self.app = make_app()
        await self.app(scope, receive, send)


asgi = _Lazy()
"""``render.origin.server:asgi`` for ASGI servers that take an import path."""


def run(
    host: HostConfig, *, bind: str, workers: int, access_log: bool, log_format: str = "text"
) -> None:
    """Serve until SIGTERM or SIGINT; return (exit 0) once the shutdown is complete."""
    # uvicorn re-raises the signal it caught once it has shut down, to the handler that
    # was in place before it started: this one, so the process ends with 0, not -15
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _after_shutdown)
    address, _, port = bind.rpartition(":")
    options: dict[str, object] = dict(
        host=address.strip("[]") or "127.0.0.1",
        port=int(port),
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=True,
        timeout_graceful_shutdown=GRACE_SECONDS,
        backlog=2048,
        log_level="warning",
        timeout_keep_alive=15,
    )
    if workers > 1:
        os.environ["RENDER_CONFIG"] = str(host.path)
        os.environ["RENDER_ORIGIN_ACCESS_LOG"] = "1" if access_log else "0"
        os.environ["RENDER_ORIGIN_LOG_FORMAT"] = log_format
        uvicorn.run("render.origin.server:make_app", factory=True, workers=workers, **options)  # type: ignore[arg-type]
        return
    app = Origin(host, open_store(host), access_log=access_log)
    uvicorn.Server(uvicorn.Config(app, **options)).run()  # type: ignore[arg-type]


def _after_shutdown(_signum: int, _frame: object) -> None:
    """The signal uvicorn passes on after its graceful shutdown: nothing is left to do."""
