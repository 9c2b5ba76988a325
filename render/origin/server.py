"""Run the origin under granian (the default) or uvicorn: HTTP/1.1 keep-alive, graceful SIGTERM.

``[origin] server = "granian"``: granian's supervisor runs in this process and
starts ``--workers`` processes, each making the application (``make_app``) with
its own per-site state (stale pages, renders, the byte cache; processes share
one render per page: ``render.origin.shared``). ``"uvicorn"`` (with uvloop and
httptools) runs one worker in this process, or ``--workers N`` processes. On
SIGTERM either stops accepting, lets the requests under way finish (a request
waiting for a render waits at most ``[origin] max_wait_ms``), then the
application lets the render under way finish, drops queued ones, stops its
render processes, and the process exits 0. Why granian by default: README,
"The origin".
"""

from __future__ import annotations

import os
import signal

import uvicorn

from render.config import HostConfig, load_host
from render.origin.app import Origin
from render.publish.store import open_store
from render.run.buildlog import configure_logging

GRACE_SECONDS = 30
"""Longest wait for requests under way after SIGTERM (systemd's TimeoutStopSec is above it)."""


def make_app() -> Origin:
    """The application, for the server's worker processes (``RENDER_CONFIG`` names the host)."""
    host = load_host(os.environ.get("RENDER_CONFIG"))
    configure_logging(os.environ.get("RENDER_ORIGIN_LOG_FORMAT", "text"))  # a process of its own
    access_log = os.environ.get("RENDER_ORIGIN_ACCESS_LOG", "1") == "1"
    return Origin(host, open_store(host), access_log=access_log)


def run(
    host: HostConfig, *, bind: str, workers: int, access_log: bool, log_format: str = "text"
) -> None:
    """Serve until SIGTERM or SIGINT; return (exit 0) once the shutdown is complete."""
    if host.origin.server == "granian":
        _granian(host, bind=bind, workers=workers, access_log=access_log, log_format=log_format)
        return
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


def _granian(
    host: HostConfig, *, bind: str, workers: int, access_log: bool, log_format: str
) -> None:
    """granian's supervisor here, the application in ``workers`` processes it spawns."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    os.environ["RENDER_CONFIG"] = str(host.path)
    os.environ["RENDER_ORIGIN_ACCESS_LOG"] = "1" if access_log else "0"
    os.environ["RENDER_ORIGIN_LOG_FORMAT"] = log_format
    address, _, port = bind.rpartition(":")
    Granian(
        "render.origin.server:make_app",
        factory=True,
        address=address.strip("[]") or "127.0.0.1",
        port=int(port),
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        backlog=2048,
        log_enabled=False,
        log_access=False,
        workers_kill_timeout=GRACE_SECONDS,
    ).serve()


def _after_shutdown(_signum: int, _frame: object) -> None:
    """The signal uvicorn passes on after its graceful shutdown: nothing is left to do."""
