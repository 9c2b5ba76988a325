"""``render scheduler``: the build daemon, in the foreground."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import click

from render.cli._common import config_option, handle_errors, host_from
from render.errors import UsageError
from render.run.buildlog import configure_logging

if TYPE_CHECKING:  # the daemon's imports (APScheduler, SQLAlchemy) load only when it runs
    from render.scheduler import SiteRunner


def _load_runner(spec: str) -> SiteRunner:
    module, _, name = spec.partition(":")
    try:
        found: SiteRunner = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageError(f"--runner {spec!r}: {exc}", hint="use module:function") from None
    return found


@click.command("scheduler")
@config_option
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per event on stderr: key=value text, or JSON for log collectors.",
)
@click.option(
    "--reconcile",
    "reconcile_every",
    type=click.FloatRange(min=0.5),
    default=60.0,
    show_default=True,
    help="Seconds between re-reads of the sites folder (new, removed, rescheduled sites).",
)
@click.option("--runner", default=None, hidden=True, help="module:function that builds a site.")
@handle_errors
def scheduler(
    config_path: str | None, log_format: str, reconcile_every: float, runner: str | None
) -> None:
    """Run the build scheduler in the foreground (for systemd).

    One job per site, at its [site] schedule (else [schedule] default) in its
    time zone, spread by [schedule] jitter; [site] auto sites also rebuild
    once edits to their database go quiet. Jobs persist in
    <state>/scheduler.sqlite: a run missed while the daemon was down runs once
    when it starts. SIGTERM or Ctrl-C: no new builds, running ones stop before
    their root switch, exit 0.

    \b
    Example:
        render scheduler --config /srv/render/render.toml --log-format json
    """
    host = host_from(config_path)
    configure_logging(log_format)
    from render.scheduler import run_daemon

    run_daemon(
        host,
        runner=_load_runner(runner) if runner else None,
        reconcile_every=reconcile_every,
    )


COMMANDS = [scheduler]
