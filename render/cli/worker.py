"""``render worker``: a Celery worker for this host; ``render nightly --executor celery``'s table."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from render.cli._common import config_option, console, handle_errors, host_from, show_error
from render.config import HostConfig
from render.errors import UsageError


@click.command(
    "worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": False}
)
@config_option
@click.option(
    "--queues",
    "-Q",
    default="builds,audits",
    show_default=True,
    help="Queues to take tasks from, comma-separated.",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 256),
    default=None,
    help="Builds at the same time (Celery's default: one per core).",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def worker(
    config_path: str | None, queues: str, concurrency: int | None, celery_args: tuple[str, ...]
) -> None:
    """Run a Celery worker that builds this host's sites (for systemd).

    A thin wrapper over 'celery worker': any of its options after the ones
    here still work (-n NAME, --loglevel, --max-tasks-per-child, ...). The
    broker is [schedule] broker_url or $RENDER_BROKER_URL (never printed).
    This machine's state folder is its local cache; the sites folder and
    the store are shared with the other machines.

    \b
    Example:
        render worker --config /srv/render/render.toml -c 2 -n build1@%h
    """
    host = host_from(config_path)
    from render.distribute import tasks

    app = tasks.configure(host)
    argv = ["worker", "--queues", queues, "--loglevel", "INFO"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    app.worker_main(argv=[*argv, *celery_args])


def nightly_remote(host: HostConfig, folders: list[Path]) -> None:
    """``render nightly --executor celery``: enqueue every site, show each result as it comes."""
    from render.distribute.enqueue import RemoteRun, run_sites

    keys = [f"{folder.parent.name}/{folder.name}" for folder in folders]
    failed = 0

    def done(run: RemoteRun) -> None:
        nonlocal failed
        if run.error is not None:
            failed += 1
            show_error(run.error)

    runs = run_sites(host, keys, reason="nightly", on_done=done)
    table = Table(title=f"render nightly: {len(keys)} sites on Celery workers, {failed} failed")
    for column in ("site", "result", "pages", "live version", "worker", "time"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.site,
            run.outcome.value if run.outcome is not None else "failed",
            ""
            if run.outcome is None
            else f"{run.pages} ({run.rendered} rendered, {run.reused} reused)",
            run.version or "",
            run.worker,
            f"{run.seconds:.2f} s",
        )
    console.print(table)
    if failed:
        raise SystemExit(1)


@click.command("plan")
@config_option
@click.option("--sites", type=click.IntRange(min=1), required=True, help="Sites in the night.")
@click.option(
    "--pages",
    type=click.FloatRange(min=1),
    default=None,
    help="Pages per site (default: the mean of the measured builds).",
)
@click.option(
    "--audits",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Lighthouse audits per site.",
)
@click.option(
    "--audit-seconds",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds per audit (default: measured, else 4).",
)
@click.option(
    "--window",
    "window_hours",
    type=click.FloatRange(min=0.1),
    default=4.0,
    show_default=True,
    help="Hours the night may take.",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Builds one worker runs at a time (its --concurrency).",
)
@handle_errors
def plan(
    config_path: str | None,
    sites: int,
    pages: float | None,
    audits: float,
    audit_seconds: float | None,
    window_hours: float,
    slots: int,
) -> None:
    """Estimate the workers a night of N sites needs, from the ledger's measured stages.

    Uses the mean seconds per stage of this host's finished builds; build and
    SEO scale with --pages, Lighthouse with --audits.

    \b
    Example:
        render plan --sites 10000 --pages 1000 --audits 5 --window 4
    """
    from render.distribute.capacity import plan as make_plan
    from render.run.ledger import open_ledger

    host = host_from(config_path)
    with open_ledger(host.state_dir) as ledger:
        found = make_plan(
            ledger,
            sites=sites,
            pages=pages,
            audits=audits,
            audit_seconds=audit_seconds,
            window_hours=window_hours,
            slots=slots,
        )
    if found is None:
        raise UsageError(
            "the ledger has no finished build to measure", hint="run 'render nightly' once first"
        )
    table = Table(
        title=f"one site: {found.pages:.0f} pages, {found.audits:g} audits "
        f"(from {found.builds_measured} builds)"
    )
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in sorted(found.stage_seconds.items(), key=lambda kv: -kv[1]):
        table.add_row(stage, f"{seconds:.2f}")
    table.add_row("site", f"{found.site_seconds:.2f}")
    console.print(table)
    console.print(
        f"{found.sites} sites: {found.night_seconds / 3600:.1f} hours of builds; "
        f"{found.workers} workers of this size ({found.slots} build(s) at a time each) "
        f"finish in {found.window_hours:g} hours"
    )


COMMANDS = [worker, plan]
