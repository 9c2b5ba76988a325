"""What every ``render`` command shares: options, the host, showing errors once."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from render.config import HostConfig, SiteConfig, find_site, load_host, load_site
from render.errors import RenderError

F = TypeVar("F", bound=Callable[..., Any])

# Tables keep their width when the output is a pipe or a log file, not 80 columns.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, highlight=False)


def config_option(func: F) -> F:
    """``--config PATH`` (or ``$RENDER_CONFIG``); default ``./render.toml``."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        envvar="RENDER_CONFIG",
        help="Host file (default ./render.toml; or $RENDER_CONFIG).",
    )(func)


def site_argument(func: F) -> F:
    """``SITE``: ``owner/name``, or ``name`` where it is unique."""
    return click.argument("site_name", metavar="SITE")(func)


def show_error(exc: RenderError) -> None:
    """The one place an expected failure is printed."""
    lines = exc.headline().split("\n")
    click.echo(f"Error: {lines[0]}", err=True)
    for line in lines[1:]:
        click.echo(f"Error: {line}", err=True)
    if exc.detail:
        click.echo(exc.detail, err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)
    for note in getattr(exc, "__notes__", ()):
        click.echo(f"Note: {note}", err=True)


def handle_errors(func: F) -> F:
    """Turn a ``RenderError`` into its message and exit code; let bugs show a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RenderError as exc:
            show_error(exc)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def host_from(config_path: str | None) -> HostConfig:
    return load_host(config_path)


def site_from(host: HostConfig, name: str) -> SiteConfig:
    return load_site(find_site(host, name), host=host)
