"""``render edge deploy`` and ``render edge routing``: the Cloudflare Worker in ``edge/``."""

from __future__ import annotations

import subprocess

import click

from render.cli._common import config_option, console, handle_errors, host_from
from render.edge import deploy as edge_deploy
from render.edge.routing import write_routing_js
from render.errors import ConfigError
from render.publish.store import open_store


@click.group("edge")
def edge() -> None:
    """The edge Worker: serves live versions straight from the R2 bucket (see edge/README.md)."""


@edge.command("deploy")
@config_option
@click.option("--dry-run", is_flag=True, help="Print the wrangler command and config; run nothing.")
@click.option("--name", default="render-edge", show_default=True, help="The Worker's name.")
@click.option(
    "--origin", default="", help="App origin for sessions and writes (default: the zone's)."
)
@click.option("--route", "routes", multiple=True, help="A host name the Worker serves (repeat).")
@click.option("--zone", default="", help="The Cloudflare zone of the --route host names.")
@click.option(
    "--ttl",
    type=click.IntRange(min=0, max=300),
    default=5,
    show_default=True,
    help="Seconds root.json and host claims may be cached.",
)
@handle_errors
def deploy_command(
    config_path: str | None,
    dry_run: bool,
    name: str,
    origin: str,
    routes: tuple[str, ...],
    zone: str,
    ttl: int,
) -> None:
    """Deploy the edge Worker with wrangler, bound to the host's R2 bucket.

    \b
    Example:
        render edge deploy --dry-run --route blog.example.com --zone example.com
    """
    host = host_from(config_path)
    plan = edge_deploy.plan(
        host, name=name, origin=origin, routes=routes, zone=zone, ttl_seconds=ttl
    )
    store = open_store(host)
    missing = edge_deploy.unclaimed(store)
    if dry_run:
        for item in missing:
            console.print(
                f"# would claim the host {item.host} for {item.site} (hosts/{item.host}.json)",
                markup=False,
                highlight=False,
            )
        console.print(f"# would write {plan.config_path}:", markup=False, highlight=False)
        console.print(plan.config, markup=False, highlight=False, end="")
        console.print(f"# would run:\n{plan.shell()}", markup=False, highlight=False)
        return
    edge_deploy.claim_all(store, missing, grace_hours=host.store.gc_grace_hours)
    edge_deploy.write(plan)
    try:
        result = subprocess.run(plan.command, check=False)
    except FileNotFoundError:
        raise ConfigError(
            "render edge deploy: npx is not installed",
            hint="install Node.js 20, or run the command of --dry-run yourself",
        ) from None
    if result.returncode != 0:
        raise ConfigError(
            f"wrangler deploy failed (exit {result.returncode})",
            hint="see wrangler's message above; 'npx wrangler login' first",
        )


@edge.command("routing")
@handle_errors
def routing_command() -> None:
    """Write edge/src/routing.js again from render.serve.routing (the one source of the rule)."""
    console.print(str(write_routing_js(edge_deploy.EDGE_DIR)), markup=False, highlight=False)


COMMANDS = [edge]
