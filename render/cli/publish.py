"""``render versions``, ``rollback``, ``gc``, ``repair`` and ``serve``: the store side of the CLI."""

from __future__ import annotations

from contextlib import AbstractContextManager

import click
from rich.table import Table

from render.check.loopback import LOOPBACK, Running, serve_forever
from render.cli._common import (
    config_option,
    console,
    handle_errors,
    host_from,
    site_argument,
    site_from,
)
from render.config import HostConfig
from render.errors import UsageError
from render.mirror.sync import SyncOutcome
from render.pipeline import repair_site
from render.publish import hosts
from render.publish.gc import gc
from render.publish.history import list_versions, rollback
from render.publish.store import Store, open_store
from render.report.dashboard import configured_budgets
from render.report.serve import PREFIX as DASHBOARD
from render.report.serve import WithDashboard
from render.run import locks
from render.run.ledger import open_ledger
from render.serve.live import BrokenSite, LiveSites


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


def _site_lock(
    host: HostConfig, owner: str, name: str, *, wait: bool, reason: str
) -> AbstractContextManager[locks.Holder]:
    """The lock builds take: gc, rollback and repair never run beside a build of the site here."""
    return locks.site_lock(
        host.state_dir, f"{owner}/{name}", wait=wait, on_wait=console.print, reason=reason
    )


_no_wait = click.option(
    "--no-wait", is_flag=True, help="Fail at once (exit 1) when the site is being built."
)


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
    for column in ("version", "created", "files", "bytes", "new blobs", "live", "repack of"):
        right = column in ("files", "bytes", "new blobs")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for v in infos:
        created = v.created.replace("T", " ")[:16]
        table.add_row(
            v.version,
            created,
            str(v.files),
            _size(v.bytes),
            str(v.new_blobs),
            "live" if v.live else "",
            v.repack_of or "",
        )
    console.print(table)


@click.command("rollback")
@config_option
@click.argument("site_name", metavar="SITE")
@click.argument("version", required=False)
@_no_wait
@handle_errors
def rollback_command(
    config_path: str | None, site_name: str, version: str | None, no_wait: bool
) -> None:
    """Make an earlier version live in one write (default: the one before the live one).

    Waits for a build of the site that is running (or, with --no-wait, exits 1
    naming it).

    \b
    Example:
        render rollback acme/blog
        render rollback acme/blog 20261127T030000Z-1a2b3c4d
    """
    host = host_from(config_path)
    store = open_store(host)
    owner, name = _site_id(host, store, site_name)
    with (
        _site_lock(host, owner, name, wait=not no_wait, reason="rollback"),
        open_ledger(host.state_dir) as ledger,
    ):
        done = rollback(store, owner=owner, name=name, to=version, ledger=ledger)
    if done.version == done.previous:
        console.print(f"{done.site}: {done.version} is already live")
    else:
        console.print(f"{done.site}: {done.version} is live (was {done.previous})")


@click.command("gc")
@config_option
@click.argument("site_names", metavar="[SITE]...", nargs=-1)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Versions kept per site (the live one always).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@_no_wait
@handle_errors
def gc_command(
    config_path: str | None, site_names: tuple[str, ...], keep: int, dry_run: bool, no_wait: bool
) -> None:
    """Delete old versions and the blobs and packs no kept version names.

    Blobs and packs younger than [store] gc_grace_hours stay (readers keep
    using the version they started on). When the live version's blobs lie in
    too many packs, gc repacks them: a new version with the same files in
    fewer packs goes live (the old packs go at a later gc, after the grace).
    Each site is locked as a build locks it, and a publish from another host
    waits for the site's gc to finish.

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
        with _site_lock(host, owner, name, wait=not no_wait, reason="gc"):
            report = gc(
                store,
                owner=owner,
                name=name,
                keep=keep,
                grace_hours=host.store.gc_grace_hours,
                dry_run=dry_run,
                pack_limit=host.store.pack_limit,
            )
        freed += report.freed_bytes
        for v in report.removed_versions:
            console.print(f"{report.site}: {verb} version {v}")
        young_count = report.young_blobs + report.young_packs
        young = f"; {young_count} younger blobs and packs kept" if young_count else ""
        reports = f" {report.removed_reports} report files," if report.removed_reports else ""
        console.print(
            f"{report.site}: {verb} {len(report.removed_versions)} versions,"
            f" {report.removed_blobs} blobs and {report.removed_packs} packs,{reports}"
            f" {_size(report.freed_bytes)}{young}"
        )
        if report.repack is not None:
            made = report.repack
            did = (
                f"repacked {made.of} as {made.version}"
                if made.version
                else f"would repack {made.of}"
            )
            console.print(
                f"{report.site}: {did}: {made.after} packs instead of {made.before} objects",
                soft_wrap=True,
            )
    console.print(
        f"{'would free' if dry_run else 'freed'} {_size(freed)} in {store.description}",
        soft_wrap=True,
    )


@click.command("repair")
@config_option
@site_argument
@_no_wait
@handle_errors
def repair_command(config_path: str | None, site_name: str, no_wait: bool) -> None:
    """Read back every blob of SITE's live version; put the missing or corrupt ones back.

    The bytes come from the site's last build on this host, checked against
    their hash. A pack is read once and put back byte for byte; one that
    cannot be (it also held older versions' blobs, lost with it) is replaced
    by a new version with the same files in new packs. Run it when the mirror refuses a blob ("does not match its
    hash") or misses one: a publish never uploads a blob the live version
    already names. It also points the host claim at the live version (the
    edge Worker serves what the claim names). The embedded mirror is synced
    after.

    \b
    Example:
        render repair acme/blog
    """
    host = host_from(config_path)
    done, synced = repair_site(
        site_from(host, site_name), host=host, wait=not no_wait, on_wait=console.print
    )
    for bad in done.repaired:
        if bad.pack is None:
            did = "uploaded again"
        elif done.repacked is None:
            did = f"its pack {bad.pack[:12]} put back"
        else:
            did = f"in the new packs of {done.repacked}"
        console.print(f"{done.site}: {bad.path}: blob {bad.hash[:12]} was {bad.problem}; {did}")
    if done.repacked is not None:
        console.print(
            f"{done.site}: a pack of {done.version} could not be put back as it was (it also held"
            f" older versions' blobs); the same files are live as {done.repacked}",
            soft_wrap=True,
        )
    if done.pointer is hosts.Pointed.pointed:
        console.print(
            f"{done.site}: hosts/{done.host}.json now points the edge at {done.version}",
            soft_wrap=True,
        )
    console.print(
        f"{done.site}: checked {done.checked} blobs of {done.version};"
        f" {len(done.repaired)} uploaded again"
    )
    if synced is not None and synced.outcome is SyncOutcome.switched:
        console.print(f"{done.site}: the mirror folder now serves {synced.version}")


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
    A site whose root.json or version tree cannot be read answers 503 (and
    is named once on stderr) while the others keep serving.

    \b
    Example:
        render serve --port 8000
    """
    host = host_from(config_path)
    store = open_store(host)
    live = LiveSites(
        store,
        cache=host.state_dir / "serve-cache",
        refresh_seconds=2.0 if host.store.kind == "local" else 30.0,
        report=lambda line: click.echo(line, err=True),
    )
    sites = live.sites()
    resolver = WithDashboard(
        live,
        host=host,
        folder=host.state_dir / "serve-dashboard",
        budgets=lambda: configured_budgets(host),
    )

    def ready(running: Running) -> None:
        console.print(f"Serving {len(sites)} site(s) from {store.description} at {running.url}/")
        for s in sites:
            state = "unavailable (503)" if isinstance(s, BrokenSite) else s.version
            console.print(
                f"  {s.owner}/{s.name} {state}: {running.url}{s.prefix}/"
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
        raise UsageError(
            f"cannot listen on {LOOPBACK}:{port}: {exc.strerror}", hint="pick another --port"
        ) from None


COMMANDS = [versions, rollback_command, gc_command, repair_command, serve_command]
