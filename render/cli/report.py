"""``render report``, ``render dashboard`` and ``render metrics``: what the builds found, over time."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from render.cli._common import config_option, console, handle_errors, host_from, site_argument
from render.config import HostConfig, site_dirs
from render.errors import ConfigError, UsageError
from render.report.document import HISTORY, document, site_ids
from render.report.terminal import renderables
from render.run.ledger import open_ledger


def _resolve(host: HostConfig, name: str, known: list[tuple[str, str]]) -> tuple[str, str]:
    """``owner/name`` or a unique ``name``, among the ledger's sites and the configured ones."""
    configured = [(p.parent.name, p.name) for p in site_dirs(host)]
    candidates = sorted(set(known) | set(configured))
    if "/" in name:
        owner, _, site = name.partition("/")
        if (owner, site) in candidates:
            return owner, site
    else:
        found = [c for c in candidates if c[1] == name]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ConfigError(
                f"site name {name!r} is ambiguous",
                hint="name it as owner/name: " + ", ".join(f"{o}/{n}" for o, n in found),
            )
    raise ConfigError(
        f"no site {name!r} in {host.sites_dir} or the ledger",
        hint="'render status' lists the sites",
    )


@click.command("report")
@config_option
@site_argument
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report document (schema 1) as JSON."
)
@click.option(
    "--history",
    type=click.IntRange(min=0, max=HISTORY),
    default=None,
    help=f"Builds in the JSON's history (default {HISTORY}; the tables show the latest).",
)
@handle_errors
def report_command(
    config_path: str | None, site_name: str, as_json: bool, history: int | None
) -> None:
    """The site's latest build: stages, pages, what was published, SEO findings, Lighthouse.

    --json prints one document whose shape is render/report/schema-1.json.

    \b
    Example:
        render report demo/blog
        render report blog --json | jq '.sites[0].latest.seo'
    """
    host = host_from(config_path)
    with open_ledger(host.state_dir) as ledger:
        owner, name = _resolve(host, site_name, site_ids(ledger))
        from render.report.dashboard import configured_budgets  # pygal: only when used

        budgets = configured_budgets(host)
        doc = document(
            ledger,
            [(owner, name)],
            history=HISTORY if history is None else history,
            budgets=budgets,
        )
    if as_json:
        click.echo(json.dumps(doc, indent=1, sort_keys=True))
        return
    for renderable in renderables(doc["sites"][0]):
        console.print(renderable)


@click.command("dashboard")
@config_option
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write (default <state>/dashboard).",
)
@handle_errors
def dashboard_command(config_path: str | None, out: Path | None) -> None:
    """Write the static HTML dashboard: every site, and a page per site with its last 90 builds.

    Also data.json (the report document, schema 1) and one CSV per metric, for
    other dashboards. It reads with JavaScript off; 'render serve' shows it at
    /_dashboard/ on 127.0.0.1.

    \b
    Example:
        render dashboard -o /tmp/dash && xdg-open /tmp/dash/index.html
    """
    host = host_from(config_path)
    target = out if out is not None else host.state_dir / "dashboard"
    started = time.perf_counter()
    from render.report import dashboard as dashboard_module  # pygal: only for this command

    written = dashboard_module.write_dashboard(
        host, target, budgets=dashboard_module.configured_budgets(host)
    )
    console.print(
        f"wrote the dashboard of {written.sites} site(s) to {target}/index.html"
        f" ({written.files} files, {time.perf_counter() - started:.1f} s)"
    )


@click.command("metrics")
@config_option
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file atomically (node-exporter's textfile collector) instead of stdout.",
)
@handle_errors
def metrics_command(config_path: str | None, out: Path | None) -> None:
    """Print each site's last build as Prometheus metrics (text format).

    \b
    Example:
        render metrics -o /var/lib/prometheus/node-exporter/render.prom
    """
    host = host_from(config_path)
    from render.report import metrics as metrics_module  # prometheus_client: only here

    with open_ledger(host.state_dir) as ledger:
        text = metrics_module.exposition(ledger)
    if out is None:
        sys.stdout.write(text)
        return
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {out}: {exc.strerror}") from None


COMMANDS = [report_command, dashboard_command, metrics_command]
