"""``render mirror sync`` and ``render mirror status``: run on the mirror host."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click
from rich.table import Table

from render.cli._common import config_option, console, err_console, handle_errors, host_from
from render.config import HostConfig
from render.errors import MirrorError, RenderError
from render.files import utc_stamp
from render.mirror.status import MirrorState, human_seconds, mirror_status
from render.mirror.sync import SyncOutcome, SyncReport, run_forever, sync
from render.publish.store import Store, open_store


@click.group("mirror")
def mirror() -> None:
    """Keep a mirror host's release folders in step with the store.

    \b
    On the mirror (the OVH VPS, see ovh/README.md):
        render mirror sync            # poll the store, switch releases (the daemon)
        render mirror sync --once     # one pass over every site, then exit
        render mirror status          # live version in the store vs served
    """


def _root(host: HostConfig, root_dir: str | None) -> Path:
    return Path(root_dir).absolute() if root_dir else host.mirror_path


@mirror.command("sync")
@config_option
@click.option("--once", is_flag=True, help="One pass over every site, then exit (else poll).")
@click.option(
    "--root",
    "root_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Mirror folder (default [mirror] path, or <state>/mirror).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=2),
    default=None,
    help="Releases kept per site (default [mirror] keep; current and the one before always stay).",
)
@handle_errors
def sync_command(
    config_path: str | None, once: bool, root_dir: str | None, keep: int | None
) -> None:
    """Pull each site's live version from the store and switch `current` to it.

    \b
    Example:
        render mirror sync --once --root /var/lib/render-mirror
    """
    host = host_from(config_path)
    root = _root(host, root_dir)
    keep = keep if keep is not None else host.mirror.keep
    concurrency = max(1, host.mirror.concurrency)
    store = open_store(host)
    try:
        if once:
            report = sync(store, root, keep=keep, concurrency=concurrency)
            _show_report(report, verbose=True)
            if report.failed:
                raise MirrorError(
                    f"{len(report.failed)} of {len(report.sites)} sites failed to sync",
                    hint="those sites keep serving their previous release; the next sync retries",
                )
            return
        _poll(store, root, host=host, keep=keep, concurrency=concurrency)
    finally:
        store.close()


def _poll(store: Store, root: Path, *, host: HostConfig, keep: int, concurrency: int) -> None:
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    interval = max(1, host.mirror.interval)
    err_console.print(f"mirror: syncing {root} every {interval} s (with jitter); Ctrl-C stops")
    run_forever(
        store,
        root,
        stop=stop,
        interval=interval,
        keep=keep,
        concurrency=concurrency,
        on_report=lambda report: _show_report(report, verbose=False),
        on_error=_show_failure,
    )


def _stamp() -> str:
    return utc_stamp()


def _show_failure(exc: Exception) -> None:
    text = exc.headline() if isinstance(exc, RenderError) else f"{type(exc).__name__}: {exc}"
    err_console.print(f"{_stamp()} sync failed: {text}", markup=False)


def _show_report(report: SyncReport, *, verbose: bool) -> None:
    """A table after --once; one line per change (and per failure) when polling."""
    if not verbose:
        for s in report.sites:
            if s.outcome is SyncOutcome.unchanged:
                continue
            what = f"{s.outcome.value} {s.version or ''}".strip()
            extra = (
                f" ({s.fetched} fetched, {s.linked} linked)"
                if s.outcome is SyncOutcome.switched
                else ""
            )
            line = f"{_stamp()} {s.site}: {what}{extra}"
            if s.error:
                line += f": {s.error}"
            console.print(line, markup=False)
        if report.map_changed:
            console.print(
                f"{_stamp()} {report.root / 'hosts.map'} changed: reload nginx", markup=False
            )
        return
    table = Table(title=f"mirror sync: {report.root}")
    table.add_column("Site", no_wrap=True)
    table.add_column("Version", no_wrap=True)
    table.add_column("Outcome")
    table.add_column("New", justify="right")
    table.add_column("Linked", justify="right")
    for s in report.sites:
        table.add_row(s.site, s.version or "-", s.outcome.value, str(s.fetched), str(s.linked))
    console.print(table)
    for s in report.sites:
        if s.removed:
            console.print(f"{s.site}: removed old releases {', '.join(s.removed)}", markup=False)
    for s in report.failed:
        console.print(f"{s.site}: {s.error}", markup=False)
        if s.hint:
            console.print(f"  Hint: {s.hint}", markup=False)
    if report.map_changed:
        console.print(f"{report.root / 'hosts.map'} changed: nginx needs a reload to see new hosts")
    if not report.sites:
        console.print("the store has no published sites yet")


@mirror.command("status")
@config_option
@click.option(
    "--root",
    "root_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Mirror folder (default [mirror] path, or <state>/mirror).",
)
@handle_errors
def status_command(config_path: str | None, root_dir: str | None) -> None:
    """Each site's live version in the store, the version the mirror serves, and the lag.

    \b
    Example:
        render mirror status --root /var/lib/render-mirror
    """
    host = host_from(config_path)
    root = _root(host, root_dir)
    store = open_store(host)
    try:
        rows = mirror_status(store, root)
    finally:
        store.close()
    table = Table(title=f"mirror: {root}")
    table.add_column("Site", no_wrap=True)
    table.add_column("Version", no_wrap=True)  # whole ids: 'render rollback' takes them
    table.add_column("State")
    table.add_column("Behind")
    styles = {
        MirrorState.current: "green",
        MirrorState.behind: "yellow",
        MirrorState.unreadable: "red",
    }
    for row in rows:
        state = row.state.value
        if row.state in styles:
            state = f"[{styles[row.state]}]{state}[/]"
        behind = human_seconds(row.behind_seconds)
        if row.waiting_seconds is not None:
            behind += f"\n(live {human_seconds(row.waiting_seconds)} ago)"
        versions = f"store  {row.live or '-'}\nmirror {row.served or '-'}"
        table.add_row(row.site, versions, state, behind.strip())
    console.print(table)
    for row in rows:
        if row.last_error:
            console.print(f"{row.site}: last sync: {row.last_error}", markup=False)
    if not rows:
        console.print("no sites in the store or on the mirror yet")


COMMANDS = [mirror]
