"""``render origin``: the production origin (ASGI under uvicorn)."""

from __future__ import annotations

import re

import click

from render.cli._common import config_option, console, handle_errors, host_from
from render.errors import UsageError
from render.run.buildlog import configure_logging

_BIND = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[^:\s]*):\d{1,5}$")


@click.command("origin")
@config_option
@click.option(
    "--bind",
    default=None,
    metavar="ADDR:PORT",
    help="Address and port to listen on; default [origin] bind.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Server processes, each with its own caches; default [origin] workers.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="One log line per request (render's log format).",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@handle_errors
def origin_command(
    config_path: str | None,
    bind: str | None,
    workers: int | None,
    access_log: bool,
    log_format: str,
) -> None:
    """Serve every site's live version, and render stale pages on request.

    A site answers to its base_url's host name (Host header), as with
    'render serve'. A page whose data changed since the last build is
    rendered when asked for (waiting at most [origin] max_wait_ms), and the
    next build reuses it. SIGTERM finishes the requests under way and exits 0.
    Put nginx in front (ovh/nginx/render-origin.conf).

    \b
    Example:
        render origin --bind 127.0.0.1:8100 --workers 2
    """
    host = host_from(config_path)
    bind = bind or host.origin.bind
    if not _BIND.match(bind):
        raise UsageError(f"--bind {bind!r}: expected ADDR:PORT, e.g. 127.0.0.1:8100")
    configure_logging(log_format)
    console.print(
        f"render origin: serving the live versions on http://{bind}/ ({host.origin.server})"
    )
    from render.origin import server  # the ASGI servers and the app: only for this command

    server.run(
        host,
        bind=bind,
        workers=workers or host.origin.workers,
        access_log=access_log,
        log_format=log_format,
    )


COMMANDS = [origin_command]
