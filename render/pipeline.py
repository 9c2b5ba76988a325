"""``run_site()``: the one orchestrator of the chain.

config -> snapshot -> build -> check (seo, lighthouse) -> publish -> reports, ledger.
``render build``, ``render force``, ``render nightly`` and the scheduler all
call it; none of them re-implements a step. A stage that fails stops this
site's run with its error, the ledger records it, and the live version stays
live.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TypeVar

from render import builder, lighthouse, seo
from render.build import gcpause, record, snapshot, workers
from render.build.sources import scan_sources
from render.build.tree import Build, materialize
from render.check import gate as checks
from render.config import HostConfig, SiteConfig, SiteId
from render.errors import DiskFullError, MirrorError, RenderError, is_disk_full, written
from render.mirror import sync as mirror
from render.publish import purge, repair
from render.publish import versions as publish
from render.publish.reports import store_reports
from render.publish.store import Store, open_store
from render.run import locks
from render.run.ledger import Ledger, open_ledger


class Outcome(Enum):
    published = "published"  # a new version is live
    unchanged = "unchanged"  # the built tree equals the live version; no new version
    skipped = "skipped"  # database, templates and config unchanged since the last publish
    abandoned = "abandoned"  # asked to stop before the root switch; the old version is live


@dataclass(frozen=True, kw_only=True)
class Options:
    """How ``run_site`` runs: what the CLI flags and the scheduler ask for."""

    force: bool = False  # build even when nothing changed
    out: Path | None = None  # also write the finished tree here
    allow_seo_errors: bool = False
    skip_lighthouse: bool = False
    full_audit: bool = False  # re-audit every sampled page, not only the changed ones
    wait: bool = True  # wait for another build of this site, or fail at once


@dataclass(frozen=True, kw_only=True)
class RunReport:
    site: SiteId
    reason: str
    outcome: Outcome
    seconds: float
    pages: int = 0
    rendered: int = 0
    reused: int = 0
    version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    build: Build | None = None
    checks: checks.CheckReport | None = None
    publication: publish.Publication | None = None
    purge: purge.PurgeReport | None = None
    mirror: mirror.SiteSync | None = None  # the embedded mirror's sync, when [mirror] enabled


StageProgress = Callable[[str, int, int], None]
"""``(stage, done, total)``: pages rendered, audits finished."""


T = TypeVar("T")


def _aside(function: Callable[[Path], T], argument: Path) -> concurrent.futures.Future[T]:
    """Run ``function(argument)`` in a thread of its own; the caller takes the result later."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def work() -> None:
        try:
            future.set_result(function(argument))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=work, name="render-aside", daemon=True).start()
    return future


def run_site(
    site: SiteConfig,
    *,
    host: HostConfig,
    reason: str = "build",
    options: Options | None = None,
    progress: StageProgress | None = None,
    on_wait: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunReport:
    """Build, check and publish one site. Raises the failing stage's ``RenderError``."""
    options = options or Options()
    with (
        locks.site_lock(host.state_dir, site.id, wait=options.wait, on_wait=on_wait, reason=reason),
        open_ledger(host.state_dir) as ledger,
    ):
        return _run(
            site,
            host=host,
            reason=reason,
            options=options,
            ledger=ledger,
            progress=progress,
            should_stop=should_stop,
        )


def _run(
    site: SiteConfig,
    *,
    host: HostConfig,
    reason: str,
    options: Options,
    ledger: Ledger,
    progress: StageProgress | None,
    should_stop: Callable[[], bool] | None,
) -> RunReport:
    started = time.perf_counter()
    owner, name = site.id.owner, site.id.name
    timings: dict[str, float] = {}
    run_id = ledger.start_run(owner, name, reason=reason)
    try:
        # Build and SEO hold the last build's records: no cyclic GC passes over them
        # (render.build.gcpause); publishing, with its many HTTP objects, runs with it on.
        with gcpause.paused():
            # The last build's record loads while the database is copied, and the
            # render processes' fork server starts once the copy is done, while the
            # build plans. Started beside the copy too, it made three busy processes
            # on two cores: the copy took 0.19-0.23 s instead of 0.12-0.15.
            loading = _aside(record.load_previous, record.build_dir(host, site))
            with snapshot.take(site, into=host.site_state("snapshots", site.id)) as snap:
                workers.warm_up()
                timings["snapshot"] = snap.seconds
                mark = time.perf_counter()
                previous = loading.result()
                sources = scan_sources(site, previous, limits=host.limits)
                input_hash = sources.input_hash(snap)
                if (
                    not options.force
                    and options.out is None
                    and ledger.last_input_hash(owner, name) == input_hash
                ):
                    # nothing to build, but a run that stopped after its root switch (or a
                    # rollback) may have left the mirror behind the store: one read of the root
                    caught_up = _catch_up_mirror(host, owner, name) if host.mirror.enabled else None
                    report = RunReport(
                        site=site.id,
                        reason=reason,
                        outcome=Outcome.skipped,
                        seconds=time.perf_counter() - started,
                        timings=timings,
                        mirror=caught_up,
                    )
                    ledger.finish_run(run_id, outcome=report.outcome.value, timings=timings)
                    return report
                on_pages = (
                    None
                    if progress is None
                    else (lambda done, total: progress("build", done, total))
                )
                last_audits = ledger.last_lighthouse(owner, name)
                reports = frozenset(a["report"] for a in last_audits if a["report"])
                build = builder.build(
                    site,
                    snap,
                    host=host,
                    sources=sources,
                    previous=previous,
                    keep=reports,
                    progress=on_pages,
                )
                timings["build"] = time.perf_counter() - mark

            mark = time.perf_counter()
            build = seo.generate(build)
            seo_report = seo.lint(build)
            timings["seo"] = time.perf_counter() - mark

        mark = time.perf_counter()
        config = site.lighthouse
        if options.skip_lighthouse:
            config = replace(config, enabled=False)
        audits = lighthouse.check(
            build,
            config=config,
            previous=last_audits,
            full=options.full_audit,
            progress=None if progress is None else (lambda what: progress(what, 0, 0)),
        )
        # Findings and HTML reports stay out of the tree (render.publish.reports); the
        # reports' bytes go into the build's objects so the next run can carry them.
        audit_html = audits.html()
        for data in audit_html.values():
            build.blobs.write(data)
        timings["lighthouse"] = time.perf_counter() - mark
        ledger.record_seo(
            run_id, owner, name, [*seo.ledger_rows(seo_report), *audits.ledger_findings()]
        )
        ledger.record_lighthouse(run_id, owner, name, audits.ledger_audits())
        verdict = checks.CheckReport(
            seo=seo_report, lighthouse=audits, allow_seo_errors=options.allow_seo_errors
        )
        checks.gate(verdict)

        if options.out is not None:
            materialize(build.files, build.blobs, options.out)
        if should_stop is not None and should_stop():
            report = RunReport(
                site=site.id,
                reason=reason,
                outcome=Outcome.abandoned,
                seconds=time.perf_counter() - started,
                timings=timings,
                build=build,
            )
            ledger.finish_run(run_id, outcome=report.outcome.value, timings=timings)
            return report

        mark = time.perf_counter()
        store = open_store(host)
        try:
            publication = publish.publish(
                build,
                store=store,
                ledger=ledger,
                concurrency=host.store.concurrency,
                grace_hours=host.store.gc_grace_hours,
            )
            timings["publish"] = time.perf_counter() - mark
            ledger.set_input_hash(owner, name, input_hash)
            synced = None
            if host.mirror.enabled:
                mark = time.perf_counter()
                synced = _sync_mirror(host, store, owner, name)
                timings["mirror"] = time.perf_counter() - mark
            mark = time.perf_counter()
            purged = purge.purge_publication(publication, site=site, host=host)
            if purged is not None:
                timings["purge"] = time.perf_counter() - mark
            mark = time.perf_counter()  # after the root switch: reports never delay it
            store_reports(
                store,
                owner=owner,
                name=name,
                version=publication.version,
                files={seo.REPORT_PATH: seo.report_json(seo_report), **audits.files()},
                html=audit_html,
            )
            timings["reports"] = time.perf_counter() - mark
        finally:
            store.close()
        outcome = (
            Outcome.published
            if publication.outcome is publish.PublishOutcome.published
            else Outcome.unchanged
        )
        report = RunReport(
            site=site.id,
            reason=reason,
            outcome=outcome,
            seconds=time.perf_counter() - started,
            pages=len(build.pages),
            rendered=build.rendered,
            reused=build.reused,
            version=publication.version,
            timings=timings,
            build=build,
            checks=verdict,
            publication=publication,
            purge=purged,
            mirror=synced,
        )
        ledger.finish_run(
            run_id,
            outcome=outcome.value,
            pages=report.pages,
            rendered=report.rendered,
            reused=report.reused,
            version=report.version,
            timings=timings,
        )
        return report
    except BaseException as exc:
        error = exc if isinstance(exc, RenderError) else _disk_full(exc, host)
        if error is None:  # a bug: it keeps its traceback
            _finish_failed(ledger, run_id, exc, stage="bug", message=repr(exc), timings=timings)
            raise
        error.with_site(str(site.id), hint=_live_hint(ledger.live_version(owner, name)))
        _finish_failed(
            ledger, run_id, error, stage=error.stage, message=error.message, timings=timings
        )
        if error is exc:
            raise
        raise error from exc


def _disk_full(exc: BaseException, host: HostConfig) -> RenderError | None:
    """A full disk that no stage named (``DiskFullError``), or None."""
    if not is_disk_full(exc):
        return None
    where = written(exc, host.state_dir)
    return DiskFullError.of(exc, writing=where, folder=where, stage=None)


def _finish_failed(
    ledger: Ledger,
    run_id: int,
    exc: BaseException,
    *,
    stage: str | None,
    message: str,
    timings: dict[str, float],
) -> None:
    """Record a failed run; a ledger that cannot (its disk is full too) never hides why.

    The ledger's failure becomes a note on the run's error, which the CLI
    shows after it.
    """
    outcome = "failed_check" if stage == "check" else "failed"
    try:
        ledger.finish_run(run_id, outcome=outcome, stage=stage, message=message, timings=timings)
    except (RenderError, sqlite3.Error, OSError) as ledger_exc:
        exc.add_note(f"the ledger did not record this failure: {ledger_exc}")


def _sync_mirror(host: HostConfig, store: Store, owner: str, name: str) -> mirror.SiteSync:
    """Bring the local mirror folder to the store's live version (the embedded default)."""
    result = mirror.sync_site(
        store,
        host.mirror_path,
        owner,
        name,
        keep=host.mirror.keep,
        concurrency=host.mirror.concurrency,
    )
    if result.error is not None:
        raise MirrorError(
            f"the store has the new version, but the mirror folder did not switch: {result.error}",
            hint=result.hint or "run 'render mirror sync --once' to retry",
        )
    if (
        result.outcome is mirror.SyncOutcome.switched
        or not (host.mirror_path / mirror.MAP_FILE).exists()
    ):
        mirror.write_host_map(host.mirror_path, store=store)
    return result


def _catch_up_mirror(host: HostConfig, owner: str, name: str) -> mirror.SiteSync:
    """``_sync_mirror`` for a run that published nothing: usually one read of the root."""
    store = open_store(host)
    try:
        return _sync_mirror(host, store, owner, name)
    finally:
        store.close()


def repair_site(
    site: SiteConfig,
    *,
    host: HostConfig,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> tuple[repair.Repair, mirror.SiteSync | None]:
    """``render repair``: the live version whole again in the store, then in the embedded mirror.

    Holds the site lock: a build does not rewrite the objects the repair uploads from.
    """
    owner, name = site.id.owner, site.id.name
    with locks.site_lock(host.state_dir, site.id, wait=wait, on_wait=on_wait, reason="repair"):
        store = open_store(host)
        try:
            done = repair.repair(
                store,
                owner=owner,
                name=name,
                objects=record.build_dir(host, site) / "objects",
                scratch=host.state_dir / "repair" / owner / name,
                concurrency=host.store.concurrency,
            )
            synced = _sync_mirror(host, store, owner, name) if host.mirror.enabled else None
        finally:
            store.close()
    return done, synced


def _live_hint(live: str | None) -> str:
    if live is None:
        return "nothing was published; the site has no live version yet."
    return f"the live version {live} is unchanged."
