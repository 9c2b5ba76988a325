"""``run_site()``: the one orchestrator of the chain.

config -> snapshot -> build -> check (seo, lighthouse) -> publish -> reports, ledger.
``render build``, ``render force``, ``render nightly`` and the scheduler all
call it; none of them re-implements a step. A stage that fails stops this
site's run with its error, the ledger records it, and the live version stays
live.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
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
from render.mirror.layout import MAP_FILE, Layout
from render.publish import purge, repair, staging
from render.publish import versions as publish
from render.publish.manifest import blob_key
from render.publish.reports import store_reports
from render.publish.store import Store, open_store
from render.run import locks
from render.run.ledger import AuditRow, Ledger, open_ledger


class Outcome(Enum):
    published = "published"  # a new version is live
    unchanged = "unchanged"  # the built tree equals the live version; no new version
    skipped = "skipped"  # database, templates and config unchanged since the last publish
    abandoned = "abandoned"  # asked to stop before the root switch; the old version is live
    staged = "staged"  # a new version is in the store, not live: an audit task switches it


@dataclass(frozen=True, kw_only=True)
class Options:
    """How ``run_site`` runs: what the CLI flags and the scheduler ask for."""

    force: bool = False  # build even when nothing changed
    out: Path | None = None  # also write the finished tree here
    allow_seo_errors: bool = False
    skip_lighthouse: bool = False
    full_audit: bool = False  # re-audit every sampled page, not only the changed ones
    wait: bool = True  # wait for another build of this site, or fail at once
    # stop before the root switch, without Lighthouse: the version is staged in the store
    # for an audit task elsewhere (``[schedule] audits = "queue"``, ``render.staged``)
    stage: bool = False


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
    staged: staging.Staged | None = None  # Outcome.staged: the version and its root switch
    sample: tuple[lighthouse.SampledPage, ...] = ()  # Outcome.staged: the pages to audit


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


@dataclass(kw_only=True)
class _Run:
    """One site's run in progress: the one place that times stages and ends the ledger's row."""

    site: SiteConfig
    host: HostConfig
    reason: str
    options: Options
    ledger: Ledger
    progress: StageProgress | None
    run_id: int
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        mark = time.perf_counter()
        yield
        self.timings[stage] = time.perf_counter() - mark

    def end(
        self,
        outcome: Outcome,
        *,
        build: Build | None = None,
        verdict: checks.CheckReport | None = None,
        publication: publish.Publication | None = None,
        purged: purge.PurgeReport | None = None,
        synced: mirror.SiteSync | None = None,
        staged: staging.Staged | None = None,
        sample: tuple[lighthouse.SampledPage, ...] = (),
    ) -> RunReport:
        """The run's report, and its ledger row finished with what the report says.

        Pages and the version are counted only for a run that got to publish (or stage).
        """
        counted = build is not None and (publication is not None or staged is not None)
        version = publication.version if publication else staged.version if staged else None
        report = RunReport(
            site=self.site.id,
            reason=self.reason,
            outcome=outcome,
            seconds=time.perf_counter() - self.started,
            timings=self.timings,
            pages=len(build.pages) if counted and build else 0,
            rendered=build.rendered if counted and build else 0,
            reused=build.reused if counted and build else 0,
            version=version,
            build=build,
            checks=verdict,
            publication=publication,
            purge=purged,
            mirror=synced,
            staged=staged,
            sample=sample,
        )
        if counted:
            self.ledger.finish_run(
                self.run_id,
                outcome=outcome.value,
                pages=report.pages,
                rendered=report.rendered,
                reused=report.reused,
                version=report.version,
                timings=self.timings,
            )
        else:
            self.ledger.finish_run(self.run_id, outcome=outcome.value, timings=self.timings)
        return report

    def fail(self, exc: BaseException) -> RenderError | None:
        """End the ledger's row of a run that raised; the error to raise (None: re-raise a bug)."""
        error = exc if isinstance(exc, RenderError) else _disk_full(exc, self.host)
        if error is None:  # a bug: it keeps its traceback
            _finish_failed(
                self.ledger, self.run_id, exc, stage="bug", message=repr(exc), timings=self.timings
            )
            return None
        owner, name = self.site.id.owner, self.site.id.name
        error.with_site(str(self.site.id), hint=_live_hint(self.ledger.live_version(owner, name)))
        _finish_failed(
            self.ledger,
            self.run_id,
            error,
            stage=error.stage,
            message=error.message,
            timings=self.timings,
        )
        return error


@dataclass(frozen=True, kw_only=True)
class _Built:
    build: Build
    input_hash: str
    seo: seo.SeoReport
    last_audits: list[AuditRow]  # the last run's Lighthouse rows, which this run may carry


@dataclass(frozen=True, kw_only=True)
class _Checked:
    verdict: checks.CheckReport
    audit_html: Mapping[str, bytes]  # HTML reports by hash, stored after the root switch


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
    run = _Run(
        site=site,
        host=host,
        reason=reason,
        options=options,
        ledger=ledger,
        progress=progress,
        run_id=ledger.start_run(site.id.owner, site.id.name, reason=reason),
    )
    try:
        built = _build(run)
        if built is None:
            # nothing to build, but a run that stopped after its root switch (or a
            # rollback) may have left the mirror behind the store: one read of the root
            caught_up = (
                _catch_up_mirror(host, site.id.owner, site.id.name) if host.mirror.enabled else None
            )
            return run.end(Outcome.skipped, synced=caught_up)
        checked = _check(run, built)
        if should_stop is not None and should_stop():
            if options.out is not None:
                materialize(built.build.files, built.build.blobs, options.out)
            return run.end(Outcome.abandoned, build=built.build)
        if options.stage:
            return _stage(run, built, checked)
        return _publish(run, built, checked)
    except BaseException as exc:
        error = run.fail(exc)
        if error is None or error is exc:
            raise
        raise error from exc


def _build(run: _Run) -> _Built | None:
    """Snapshot, build and SEO; None when nothing changed since the last publish."""
    site, host, options = run.site, run.host, run.options
    owner, name = site.id.owner, site.id.name
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
            run.timings["snapshot"] = snap.seconds
            with run.timed("build"):
                previous = loading.result()
                sources = scan_sources(site, previous, limits=host.limits)
                input_hash = sources.input_hash(snap)
                if (
                    not options.force
                    and options.out is None
                    and run.ledger.last_input_hash(owner, name) == input_hash
                ):
                    return None
                progress = run.progress
                on_pages = (
                    None
                    if progress is None
                    else (lambda done, total: progress("build", done, total))
                )
                last_audits = run.ledger.last_lighthouse(owner, name)
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
        with run.timed("seo"):
            build = seo.generate(build)
            seo_report = seo.lint(build)
    return _Built(build=build, input_hash=input_hash, seo=seo_report, last_audits=last_audits)


def _check(run: _Run, built: _Built) -> _Checked:
    """Lighthouse and the no-JavaScript read, the findings into the ledger, then the gate."""
    site, options, progress = run.site, run.options, run.progress
    with run.timed("lighthouse"):
        config = site.lighthouse
        if options.skip_lighthouse or options.stage:  # staged: the audit task audits
            config = replace(config, enabled=False)
        audits = lighthouse.check(
            built.build,
            config=config,
            previous=built.last_audits,
            full=options.full_audit,
            progress=None if progress is None else (lambda what: progress(what, 0, 0)),
        )
        # Findings and HTML reports stay out of the tree (render.publish.reports); the
        # reports' bytes go into the build's objects so the next run can carry them.
        audit_html = audits.html()
        for data in audit_html.values():
            built.build.blobs.write(data)
    owner, name = site.id.owner, site.id.name
    findings = [*seo.ledger_rows(built.seo), *audits.ledger_findings()]
    run.ledger.record_seo(run.run_id, owner, name, findings)
    run.ledger.record_lighthouse(run.run_id, owner, name, audits.ledger_audits())
    verdict = checks.CheckReport(
        seo=built.seo, lighthouse=audits, allow_seo_errors=options.allow_seo_errors
    )
    checks.gate(verdict)
    return _Checked(verdict=verdict, audit_html=audit_html)


def _publish(run: _Run, built: _Built, checked: _Checked) -> RunReport:
    """Publish (the root switched last), then the mirror, the CDN purge and the stored reports."""
    site, host, build = run.site, run.host, built.build
    owner, name = site.id.owner, site.id.name
    store = open_store(host)
    try:
        with run.timed("publish"):
            try:
                publication = publish.publish(
                    build,
                    store=store,
                    ledger=run.ledger,
                    concurrency=host.store.concurrency,
                    grace_hours=host.store.gc_grace_hours,
                    pack_limit=host.store.pack_limit,
                )
            except RenderError as exc:
                if run.options.out is not None:  # the tree was asked for: still written
                    try:
                        materialize(build.files, build.blobs, run.options.out)
                    except (RenderError, OSError) as out_exc:  # the publish's error comes first
                        exc.add_note(f"--out was not written either: {out_exc}")
                raise
        run.ledger.set_input_hash(owner, name, built.input_hash)
        synced = None
        try:
            if host.mirror.enabled:
                with run.timed("mirror"):
                    synced = sync_mirror(host, store, owner, name)
        finally:  # --out after the mirror, so its files can be the mirror's
            if run.options.out is not None:
                with run.timed("out"):
                    served = (
                        Layout(host.mirror_path, owner, name).current
                        if synced is not None and synced.served == publication.version
                        else None
                    )
                    _write_out(build, store, run.options.out, served=served)
        mark = time.perf_counter()
        purged = purge.purge_publication(publication, site=site, host=host)
        if purged is not None:
            run.timings["purge"] = time.perf_counter() - mark
        with run.timed("reports"):  # after the root switch: reports never delay it
            audits = checked.verdict.lighthouse
            store_reports(
                store,
                owner=owner,
                name=name,
                version=publication.version,
                files={seo.REPORT_PATH: seo.report_json(built.seo), **audits.files()},
                html=checked.audit_html,
            )
    finally:
        store.close()
    published = publication.outcome is publish.PublishOutcome.published
    return run.end(
        Outcome.published if published else Outcome.unchanged,
        build=build,
        verdict=checked.verdict,
        publication=publication,
        purged=purged,
        synced=synced,
    )


def _stage(run: _Run, built: _Built, checked: _Checked) -> RunReport:
    """Stage the version (blobs, tree, SEO report) for its audit elsewhere; the root untouched."""
    site, host, build = run.site, run.host, built.build
    owner, name = site.id.owner, site.id.name
    store = open_store(host)
    try:
        with run.timed("stage"):
            staged = staging.stage_tree(
                build.files,
                build.objects,
                owner=owner,
                name=name,
                base_url=site.base_url,
                store=store,
                concurrency=host.store.concurrency,
                grace_hours=host.store.gc_grace_hours,
                pack_limit=host.store.pack_limit,
            )
            if staged is not None:  # the audit task adds its own when it stores them again
                store_reports(
                    store,
                    owner=owner,
                    name=name,
                    version=staged.version,
                    files={seo.REPORT_PATH: seo.report_json(built.seo)},
                    html={},
                )
    finally:
        store.close()
    if staged is None:  # the live version has exactly this tree: nothing to audit or switch
        return run.end(Outcome.unchanged, build=build, verdict=checked.verdict)
    sample = tuple(
        lighthouse.SampledPage(path=p.path, url=p.url, hash=p.hash)
        for p in lighthouse.sample_pages(build, site.lighthouse.pages_per_route)
    )
    return run.end(
        Outcome.staged, build=build, verdict=checked.verdict, staged=staged, sample=sample
    )


def _write_out(build: Build, store: Store, out: Path, *, served: Path | None) -> None:
    """``--out``: the tree as files, each a hard link to bytes render already wrote when it can be.

    Those are the local store's loose blobs, or the files of the local
    mirror's release of this very version (``served``, its ``current``): both
    read-only and never written in place, so the tree shares their bytes
    rather than writing them a second time. Otherwise the files are written
    from the build.
    """
    some_blob = store.local_path(blob_key(build.site.id.owner, build.site.id.name, "x"))
    folder = str(some_blob.parent) if some_blob is not None else None
    first_path: dict[str, str] = {}
    release = ""
    if served is not None:  # the release itself, even if the mirror switches again meanwhile
        release = os.path.realpath(served)
        for path, entry in build.files.items():
            first_path.setdefault(entry.hash, path)
    if folder is None and not first_path:  # nothing on this machine to share
        materialize(build.files, build.blobs, out)
        return

    def read_only(path: str) -> bool:
        try:  # only a read-only file is shared (one from older code may be writable)
            return not os.stat(path).st_mode & 0o222
        except FileNotFoundError:
            return False

    def linked(digest: str) -> Path | None:
        if folder is not None and read_only(blob := os.path.join(folder, digest)):
            return Path(blob)
        if digest in first_path and read_only(file := os.path.join(release, first_path[digest])):
            return Path(file)
        return None

    materialize(build.files, build.blobs, out, linked=linked)


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


def sync_mirror(host: HostConfig, store: Store, owner: str, name: str) -> mirror.SiteSync:
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
    if result.outcome is mirror.SyncOutcome.switched or not (host.mirror_path / MAP_FILE).exists():
        mirror.write_host_map(host.mirror_path, store=store)
    return result


def _catch_up_mirror(host: HostConfig, owner: str, name: str) -> mirror.SiteSync:
    """``_sync_mirror`` for a run that published nothing: usually one read of the root."""
    store = open_store(host)
    try:
        return sync_mirror(host, store, owner, name)
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
                pack_limit=host.store.pack_mb << 20,
            )
            synced = sync_mirror(host, store, owner, name) if host.mirror.enabled else None
        finally:
            store.close()
    return done, synced


def _live_hint(live: str | None) -> str:
    if live is None:
        return "nothing was published; the site has no live version yet."
    return f"the live version {live} is unchanged."
