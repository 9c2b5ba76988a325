"""``render init``, ``build``, ``force``, ``nightly`` and ``status``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from render.cli._common import (
    F,
    config_option,
    console,
    handle_errors,
    host_from,
    show_error,
    site_argument,
    site_from,
)
from render.config import HostConfig, SiteConfig, load_site, site_dirs
from render.demo import init_host
from render.errors import ConfigError, RenderError
from render.mirror.sync import SyncOutcome
from render.pipeline import Options, Outcome, RunReport, run_site
from render.run.ledger import open_ledger


@click.command()
@click.option("--demo", is_flag=True, help="Also create the demo site with its database.")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=".")
@handle_errors
def init(demo: bool, folder: Path) -> None:
    """Create a host: render.toml and a sites/ folder in FOLDER (default: here).

    \b
    Example:
        render init --demo demo && cd demo && render nightly
    """
    created = init_host(folder, demo=demo)
    for path in created:
        console.print(f"created {path}")
    console.print(f"next: cd {folder} && render nightly")


def _build_options(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--out",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                help="Also write the finished static tree to this folder (read-only files:"
                " hard links to the local store's blobs).",
            ),
            click.option(
                "--allow-seo-errors",
                is_flag=True,
                help="Publish even when the SEO lint finds errors.",
            ),
            click.option(
                "--skip-lighthouse",
                is_flag=True,
                help="Do not run Lighthouse and the no-JavaScript read.",
            ),
            click.option(
                "--no-wait",
                is_flag=True,
                help="Fail at once (exit 1) when this site is being built by another process.",
            ),
        ]
    ):
        func = option(func)
    return func


@click.command()
@config_option
@site_argument
@_build_options
@handle_errors
def build(
    config_path: str | None,
    site_name: str,
    out: Path | None,
    allow_seo_errors: bool,
    skip_lighthouse: bool,
    no_wait: bool,
) -> None:
    """Build, check and publish one SITE (owner/name, or name where unique).

    Skipped when the database, templates and config are unchanged since the
    last publish.

    \b
    Example:
        render build demo/blog --out /tmp/blog
    """
    host = host_from(config_path)
    options = Options(
        out=out,
        allow_seo_errors=allow_seo_errors,
        skip_lighthouse=skip_lighthouse,
        wait=not no_wait,
    )
    _run_one(host, site_from(host, site_name), reason="build", options=options)


@click.command()
@config_option
@site_argument
@_build_options
@click.option(
    "--full-audit", is_flag=True, help="Re-audit every sampled page, not only the changed ones."
)
@handle_errors
def force(
    config_path: str | None,
    site_name: str,
    out: Path | None,
    allow_seo_errors: bool,
    skip_lighthouse: bool,
    no_wait: bool,
    full_audit: bool,
) -> None:
    """Build, check and publish one SITE now, even when nothing changed.

    Waits for a build of the same site that is running (or, with --no-wait,
    exits 1 naming it).

    \b
    Example:
        render force demo/blog
    """
    host = host_from(config_path)
    options = Options(
        force=True,
        out=out,
        allow_seo_errors=allow_seo_errors,
        skip_lighthouse=skip_lighthouse,
        full_audit=full_audit,
        wait=not no_wait,
    )
    _run_one(host, site_from(host, site_name), reason="force", options=options)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _run_one(host: HostConfig, site: SiteConfig, *, reason: str, options: Options) -> None:
    with _progress() as bar:
        task = bar.add_task(f"{site.id}: build", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            if total:
                bar.update(task, description=f"{site.id}: {stage}", total=total, advance=done)
            else:
                bar.update(task, description=f"{site.id}: {stage}")

        def waiting(message: str) -> None:
            bar.console.print(message)

        report = run_site(
            site, host=host, reason=reason, options=options, progress=progress, on_wait=waiting
        )
    _print_report(report, out=options.out)


def _print_report(report: RunReport, *, out: Path | None) -> None:
    caught_up = _mirror_caught_up(report)
    if report.outcome is Outcome.skipped:
        console.print(
            f"{report.site}: unchanged since the last publish (render force {report.site} to rebuild)"
        )
        if caught_up:
            console.print(caught_up)
        return
    console.print(
        f"{report.site}: {report.pages} pages, {report.rendered} rendered, {report.reused} reused "
        f"in {report.seconds:.2f} s"
    )
    if report.checks is not None:
        for line in report.checks.summary():
            console.print(f"{report.site}: {line}")
    pub = report.publication
    if pub is not None and report.outcome is Outcome.published:
        console.print(
            f"{report.site}: published {pub.version}: {pub.uploaded_blobs} new files "
            f"({pub.uploaded_bytes:,} bytes) of {pub.files}, to {pub.store}"
        )
    elif pub is not None:
        console.print(f"{report.site}: no change; {pub.version} stays live")
    if caught_up:
        console.print(caught_up)
    if report.purge is not None:
        style = "" if report.purge.ok else "[yellow]warning:[/yellow] "
        console.print(f"{report.site}: {style}CDN purge: {report.purge.summary()}")
    if out is not None:
        console.print(f"{report.site}: static tree written to {out}")


def _mirror_caught_up(report: RunReport) -> str | None:
    """A line when the embedded mirror switched without a new version: it had been left behind."""
    synced = report.mirror
    if report.outcome is Outcome.published or synced is None:
        return None
    if synced.outcome is not SyncOutcome.switched:
        return None
    return f"{report.site}: the mirror folder was behind the store; it now serves {synced.version}"


@click.command()
@config_option
@click.option(
    "--executor",
    type=click.Choice(["local", "celery"]),
    default=None,
    help="Build here, or enqueue on Celery workers ('render worker'); default [schedule] executor.",
)
@handle_errors
def nightly(config_path: str | None, executor: str | None) -> None:
    """Build every site under the host's sites folder; go on past failures.

    Exits 1 when any site failed.

    \b
    Example:
        render nightly --config /srv/render/render.toml
        render nightly --executor celery     # one task per site on the workers
    """
    host = host_from(config_path)
    folders = site_dirs(host)
    if (executor or host.schedule.executor) == "celery":
        from render.cli.worker import nightly_remote

        nightly_remote(host, folders)
        return
    rows: list[tuple[str, str, str, str, str, str]] = []
    failed = 0
    with _progress() as bar:
        overall = bar.add_task("sites", total=len(folders))
        for folder in folders:
            name = f"{folder.parent.name}/{folder.name}"
            pages = bar.add_task(f"{name}: build", total=None)

            def progress(
                stage: str, done: int, total: int, pages: TaskID = pages, name: str = name
            ) -> None:
                if total:
                    bar.update(pages, description=f"{name}: {stage}", total=total, advance=done)
                else:
                    bar.update(pages, description=f"{name}: {stage}")

            try:
                site = load_site(folder, host=host)
                report = run_site(site, host=host, reason="nightly", progress=progress)
                rows.append(
                    (
                        name,
                        report.outcome.value,
                        _pages(report),
                        _checks(report),
                        report.version or "",
                        f"{report.seconds:.2f} s",
                    )
                )
            except RenderError as exc:
                failed += 1
                bar.stop()
                show_error(exc)
                bar.start()
                rows.append((name, "failed", exc.stage or "", "", "", ""))
            bar.remove_task(pages)
            bar.advance(overall)
    table = Table(title=f"render nightly: {len(folders)} sites, {failed} failed")
    for column in ("site", "result", "pages", "checks", "live version", "time"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if failed:
        raise SystemExit(1)


def _checks(report: RunReport) -> str:
    """``SEO 0 errors, 2 warnings; Lighthouse min a11y 1.00 ...`` for the summary table."""
    if report.checks is None:
        return ""
    seo = report.checks.seo
    text = f"SEO {seo.errors} errors, {seo.warnings} warnings"
    audits = report.checks.lighthouse.audits
    if audits:
        lows = []
        for category, short in (
            ("accessibility", "a11y"),
            ("best-practices", "bp"),
            ("seo", "seo"),
            ("performance", "perf"),
        ):
            scores = [a.scores.get(category) for a in audits if a.scores.get(category) is not None]
            if scores:
                lows.append(f"{short} {min(scores):.2f}")  # type: ignore[type-var]
        text += "; Lighthouse lowest " + " ".join(lows)
    return text


def _pages(report: RunReport) -> str:
    if report.outcome is Outcome.skipped:
        return "unchanged"
    return f"{report.pages} ({report.rendered} rendered, {report.reused} reused)"


@click.command()
@config_option
@handle_errors
def status(config_path: str | None) -> None:
    """List the sites with their live version and last build.

    \b
    Example:
        render status
    """
    from render import scheduler  # APScheduler and SQLAlchemy load only for status

    host = host_from(config_path)
    table = Table(title=f"sites in {host.sites_dir}")
    for column in (
        "site",
        "live version",
        "last build",
        "result",
        "took",
        "pages",
        "next run",
        "now",
    ):
        table.add_column(column)
    with open_ledger(host.state_dir) as ledger:
        for folder in site_dirs(host):
            owner, name = folder.parent.name, folder.name
            try:
                site = load_site(folder, host=host)
            except ConfigError as exc:
                table.add_row(
                    f"{owner}/{name}", "", "", "config error", "", exc.problems[0], "", ""
                )
                continue
            owner, name = site.id.owner, site.id.name
            run = ledger.last_run(owner, name)
            when = took = pages = result = ""
            if run is not None:
                when = datetime.fromtimestamp(run.started).strftime("%Y-%m-%d %H:%M")
                took = f"{(run.finished or run.started) - run.started:.1f} s"
                result = run.outcome or ""
                if run.pages is not None:
                    pages = f"{run.pages} ({run.rendered} rendered, {run.reused} reused)"
            upcoming = scheduler.next_run(site, host)
            holder = scheduler.running(host.state_dir, site.id)
            table.add_row(
                f"{owner}/{name}",
                ledger.live_version(owner, name) or "-",
                when,
                result,
                took,
                pages,
                upcoming.strftime("%Y-%m-%d %H:%M %Z") if upcoming else "",
                f"building ({holder.describe()})" if holder else "",
            )
    console.print(table)


COMMANDS = [init, build, force, nightly, status]
