"""``render versions``, ``rollback``, ``gc`` and ``serve``: the store side of the CLI."""

from __future__ import annotations

import click
from rich.table import Table

from render.check.loopback import LOOPBACK, Running, serve_forever
from render.cli._common import config_option, console, handle_errors, host_from, site_from
from render.config import HostConfig
from render.errors import UsageError
from render.publish.store import Store, open_store
from render.publish.versions import gc, list_versions, rollback
from render.report.dashboard import configured_budgets
from render.report.serve import PREFIX as DASHBOARD
from render.report.serve import WithDashboard
from render.run.ledger import open_ledger
from render.serve.live import LiveSites


def _site_id(host: HostConfig, store: Store, name: str) -> tuple[str, str]:
    """``owner/name`` of a configured site, or of a site that only the store still holds."""
    try:
        site = site_from(host, name)
        return site.id.owner, site.id.name
    except UsageError:
        if "/" in name:
            owner, _, rest = name.partition("/")
            if (owner, rest) in store.sites():
                return owner, rest
        raise


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


@click.command()
@config_option
@click.argument("site_name", metavar="SITE")
@click.option("--limit", type=int, default=20, show_default=True, help="Versions to show.")
@handle_errors
def versions(config_path: str | None, site_name: str, limit: int) -> None:
    """List a site's versions in the store, newest first, and which one is live.

    \b
    Example:
        render versions acme/blog
    """
    host = host_from(config_path)
    store = open_store(host)
    owner, name = _site_id(host, store, site_name)
    infos = list_versions(store, owner=owner, name=name, limit=limit)
    if not infos:
        console.print(f"{owner}/{name}: nothing published in {store.description}")
        return
    console.print(f"{owner}/{name} in {store.description}", soft_wrap=True)
    table = Table(box=None, pad_edge=False)
    for column in ("version", "created", "files", "bytes", "new blobs", "live"):
        right = column in ("files", "bytes", "new blobs")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for v in infos:
        created = v.created.replace("T", " ")[:16]
        table.add_row(v.version, created, str(v.files), _size(v.bytes), str(v.new_blobs),
                      "live" if v.live else "")  # fmt: skip
    console.print(table)


@click.command("rollback")
@config_option
@click.argument("site_name", metavar="SITE")
@click.argument("version", required=False)
@handle_errors
def rollback_command(config_path: str | None, site_name: str, version: str | None) -> None:
    """Make an earlier version live in one write (default: the one before the live one).

    \b
    Example:
        render rollback acme/blog
        render rollback acme/blog 20261127T030000Z-1a2b3c4d
    """
    host = host_from(config_path)
    store = open_store(host)
    owner, name = _site_id(host, store, site_name)
    with open_ledger(host.state_dir) as ledger:
        done = rollback(store, owner=owner, name=name, to=version, ledger=ledger)
    if done.version == done.previous:
        console.print(f"{done.site}: {done.version} is already live")
    else:
        console.print(f"{done.site}: {done.version} is live (was {done.previous})")


@click.command("gc")
@config_option
@click.argument("site_names", metavar="[SITE]...", nargs=-1)
@click.option("--keep", type=click.IntRange(min=1), default=10, show_default=True,
              help="Versions kept per site (the live one always).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@handle_errors
def gc_command(
    config_path: str | None, site_names: tuple[str, ...], keep: int, dry_run: bool
) -> None:
    """Delete old versions and the blobs no kept version names.

    Blobs younger than [store] gc_grace_hours stay (a publish may be running,
    and readers keep using the version they started on).

    \b
    Example:
        render gc --keep 5 --dry-run
    """
    host = host_from(config_path)
    store = open_store(host)
    targets = [_site_id(host, store, n) for n in site_names] if site_names else store.sites()
    verb = "would remove" if dry_run else "removed"
    freed = 0
    for owner, name in targets:
        report = gc(store, owner=owner, name=name, keep=keep,
                    grace_hours=host.store.gc_grace_hours, dry_run=dry_run)  # fmt: skip
        freed += report.freed_bytes
        for v in report.removed_versions:
            console.print(f"{report.site}: {verb} version {v}")
        young = f"; {report.young_blobs} younger blobs kept" if report.young_blobs else ""
        reports = f" {report.removed_reports} report files," if report.removed_reports else ""
        console.print(
            f"{report.site}: {verb} {len(report.removed_versions)} versions and"
            f" {report.removed_blobs} blobs,{reports} {_size(report.freed_bytes)}{young}"
        )
    console.print(
        f"{'would free' if dry_run else 'freed'} {_size(freed)} in {store.description}",
        soft_wrap=True,
    )


@click.command("serve")
@config_option
@click.option(
    "--port", type=int, default=8000, show_default=True, help="Port on 127.0.0.1 (0: any)."
)
@handle_errors
def serve_command(config_path: str | None, port: int) -> None:
    """Serve every published site's live version from the store on 127.0.0.1.

    A site answers to its base_url's host name (Host header), at
    http://<name>.<owner>.localhost:PORT/, and under /<owner>/<name>/.

    \b
    Example:
        render serve --port 8000
    """
    host = host_from(config_path)
    store = open_store(host)
    live = LiveSites(store, cache=host.state_dir / "serve-cache",
                     refresh_seconds=2.0 if host.store.kind == "local" else 30.0)  # fmt: skip
    sites = live.sites()
    resolver = WithDashboard(live, host=host, folder=host.state_dir / "serve-dashboard",
                             budgets=lambda: configured_budgets(host))  # fmt: skip

    def ready(running: Running) -> None:
        console.print(f"Serving {len(sites)} site(s) from {store.description} at {running.url}/")
        for s in sites:
            console.print(
                f"  {s.owner}/{s.name} {s.version}: {running.url}{s.prefix}/"
                f"  http://{s.name}.{s.owner}.localhost:{running.port}/  (Host: {s.base_host})"
            )
        if not sites:
            console.print("  nothing is published yet: run 'render nightly' or 'render force SITE'")
        console.print(f"The dashboard (this machine only): {running.url}{DASHBOARD}/")
        console.print("Press Ctrl-C to stop.")

    try:
        serve_forever(resolver, host=LOOPBACK, port=port, ready=ready)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise UsageError(f"cannot listen on {LOOPBACK}:{port}: {exc.strerror}",
                         hint="pick another --port") from None  # fmt: skip


COMMANDS = [versions, rollback_command, gc_command, serve_command]
