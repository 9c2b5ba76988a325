"""``render worker``: a Celery worker for this host; ``render nightly --executor celery``'s table."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from render.cli._common import config_option, console, handle_errors, host_from, show_error
from render.config import HostConfig


@click.command(
    "worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": False}
)
@config_option
@click.option(
    "--queues", "-Q", default="builds,audits", show_default=True,
    help="Queues to take tasks from, comma-separated.",
)  # fmt: skip
@click.option(
    "--concurrency", "-c", type=click.IntRange(1, 256), default=None,
    help="Builds at the same time (Celery's default: one per core).",
)  # fmt: skip
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
            "" if run.outcome is None else f"{run.pages} ({run.rendered} rendered, {run.reused} reused)",
            run.version or "",
            run.worker,
            f"{run.seconds:.2f} s",
        )
    console.print(table)
    if failed:
        raise SystemExit(1)


COMMANDS = [worker]
