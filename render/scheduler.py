"""The ``render scheduler`` daemon: nightly builds per site, auto-rebuilds after edits.

APScheduler 3 runs one job per site (``CrontabTrigger`` from ``render.cron``:
crontab meaning, the site's time zone, a per-site jitter from a hash of the
site id) in an SQLAlchemy job store at ``<state>/scheduler.sqlite``, so a
restart keeps the jobs and runs a missed nightly once (``coalesce``, a long
``misfire_grace_time``). Builds run in a pool of ``[schedule] workers``
threads; each calls the runner (``render.pipeline.run_site`` by default), which
takes the site lock (``render.run.locks``) so that ``render force`` and the
daemon never build one site at the same time.

The main thread reconciles the jobs with the sites folder every minute, polls
the databases of ``auto`` sites, and on SIGTERM/SIGINT stops taking builds,
tells running ones to stop before their root switch (``should_stop``), waits
for them and returns. Builds that were queued but not started are put back so
the next start runs them as a catch-up.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING

from render import cron
from render.config import HostConfig, SiteConfig, load_site, site_dirs
from render.errors import RenderError
from render.run import locks
from render.run.buildlog import log_event
from render.run.locks import Holder

JOBSTORE_FILE = "scheduler.sqlite"
_DAEMONS: dict[str, Daemon] = {}  # state folder -> the daemon running on it in this process


class Reason(Enum):
    schedule = "schedule"  # the site's cron time came
    catch_up = "catch-up"  # a run missed while the daemon was down (or stopped)
    auto = "auto"  # edits to the database went quiet
    force = "force"  # `render force` (not started by the daemon)


class RunSummary(Protocol):
    """What the daemon logs of a build: ``render.pipeline.RunReport`` is one."""

    @property
    def outcome(self) -> Enum: ...  # its value is the logged outcome ("published", ...)
    @property
    def seconds(self) -> float: ...
    @property
    def version(self) -> str | None: ...  # the version it published, if any
    @property
    def pages(self) -> int: ...
    @property
    def rendered(self) -> int: ...
    @property
    def reused(self) -> int: ...


class SiteRunner(Protocol):
    """``render.pipeline.run_site``'s shape, as far as the daemon calls it."""

    def __call__(
        self,
        site: SiteConfig,
        *,
        host: HostConfig,
        reason: str,
        should_stop: Callable[[], bool] | None = ...,
    ) -> RunSummary: ...


def _default_runner(
    site: SiteConfig,
    *,
    host: HostConfig,
    reason: str,
    should_stop: Callable[[], bool] | None = None,
) -> RunSummary:
    from render import pipeline  # layer 7; imported late so the scheduler loads without it

    return pipeline.run_site(site, host=host, reason=reason, should_stop=should_stop)


# --- for `render status`, without a running daemon -------------------------


def trigger_for(site: SiteConfig, host: HostConfig) -> cron.CrontabTrigger:
    """The site's schedule: its cron string (or the host default), time zone and jitter."""
    return cron.trigger(
        site.site.schedule or host.schedule.default,
        timezone=site.site.timezone,
        offset=cron.jitter_offset(str(site.id), host.schedule.jitter),
    )


def next_run(site: SiteConfig, host: HostConfig, *, now: datetime | None = None) -> datetime | None:
    """When the site's next scheduled build starts (in its time zone), jitter included."""
    spec = trigger_for(site, host)
    return cron.next_fire(spec.expr, timezone=spec.timezone, offset=spec.offset, after=now)


def running(state_dir: Path, site_id: object) -> Holder | None:
    """Who builds the site right now (pid, host, reason, started), or None."""
    return locks.running(state_dir, site_id)


# --- the daemon ------------------------------------------------------------


class _Scheduler(BackgroundScheduler):  # type: ignore[misc]
    """APScheduler 3.11's BackgroundScheduler, minus one shutdown race.

    Its thread runs ``_process_jobs`` once more after ``shutdown()`` sets the
    state to stopped (the pause check lets "stopped" through): a job due at
    that moment is submitted to the closed pool, fails, and its next run time
    moves on, so the run is lost. Here nothing is processed unless running.
    """

    def _process_jobs(self) -> float | None:
        if self.state != STATE_RUNNING:
            return None
        wait: float | None = super()._process_jobs()
        return wait


def _scheduled_job(state_key: str, site_key: str) -> None:
    """What the persistent job store names (a module-level function pickles by reference)."""
    daemon = _DAEMONS.get(state_key)
    if daemon is None:
        log_event(
            "build.skip", logging.WARNING, site=site_key, note="no daemon for this state folder"
        )
        return
    daemon.run_scheduled(site_key)


@dataclass
class _Watch:
    """Auto mode bookkeeping for one site's database."""

    seen: tuple[int, ...] | None
    built: tuple[int, ...] | None
    changed_at: float = field(default=0.0)


def _signature(database: Path) -> tuple[int, ...] | None:
    """Size and mtime of the database and its WAL: cheap, and changes on every commit."""
    parts: list[int] = []
    for path in (database, database.with_name(database.name + "-wal")):
        try:
            st = path.stat()
        except FileNotFoundError:
            parts += [-1, -1]
            continue
        # an empty WAL (a reader opened the database, or a checkpoint truncated it) is no edit
        parts += [st.st_size, st.st_mtime_ns] if st.st_size else [-1, -1]
    return tuple(parts) if parts[0] != -1 else None


class Daemon:
    """One scheduler over the host's sites; ``run()`` blocks until ``stop()`` or a signal."""

    def __init__(
        self,
        host: HostConfig,
        *,
        runner: SiteRunner | None = None,
        reconcile_every: float = 60.0,
        handle_signals: bool = True,
    ) -> None:
        self.host = host
        self.ready = threading.Event()  # set once the jobs are in place and running
        self._runner: SiteRunner = runner or _default_runner
        self._reconcile_every = reconcile_every
        self._handle_signals = handle_signals
        self._key = str(host.state_dir.resolve())
        self._stop = threading.Event()
        self._signal: str | None = None
        self._mutex = threading.Lock()
        self._building: set[str] = set()
        self._queued_auto: set[str] = set()
        self._catch_up: set[str] = set()
        self._rewind: dict[str, datetime] = {}
        self._broken: dict[str, str] = {}
        self._sites: dict[str, SiteConfig] = {}
        self._watch: dict[str, _Watch] = {}
        self._scheduler: BackgroundScheduler | None = None

    # -- lifecycle --

    def stop(self) -> None:
        """Stop taking builds; ``run()`` returns once running builds end. Thread-safe."""
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        state = self.host.state_dir
        state.mkdir(parents=True, exist_ok=True)
        with locks.daemon_lock(state):
            restore = self._install_signals()
            _DAEMONS[self._key] = self
            try:
                self._serve(state)
            finally:
                _DAEMONS.pop(self._key, None)
                for signum, handler in restore.items():
                    signal.signal(signum, handler)

    def _install_signals(self) -> dict[int, Any]:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signal = signal.Signals(signum).name
            self._stop.set()

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _new_scheduler(self, state: Path, *, workers: int) -> BackgroundScheduler:
        return _Scheduler(
            jobstores={
                "default": SQLAlchemyJobStore(url=f"sqlite:///{state / JOBSTORE_FILE}"),
                "volatile": MemoryJobStore(),
            },
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.host.schedule.misfire_grace,
            },
            timezone=UTC,
        )

    def _serve(self, state: Path) -> None:
        schedule = self.host.schedule
        sched = self._scheduler = self._new_scheduler(state, workers=schedule.workers)
        sched.add_listener(self._on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        sched.start(paused=True)
        try:
            self.reconcile(first=True)
            sched.resume()
            log_event(
                "daemon.start", sites=len(self._sites), workers=schedule.workers, state=str(state)
            )
            self.ready.set()
            tick = max(0.2, min(float(schedule.poll or 1), self._reconcile_every))
            next_reconcile = time.monotonic() + self._reconcile_every
            while not self._stop.wait(tick):
                now = time.monotonic()
                if now >= next_reconcile:
                    self.reconcile()
                    next_reconcile = now + self._reconcile_every
                self._check_auto(now)
            with self._mutex:
                busy = sorted(self._building)
            log_event(
                "daemon.stopping", signal=self._signal or "stop", running=",".join(busy) or "-"
            )
            sched.pause()
        finally:
            sched.shutdown(wait=True)  # waits for running builds; queued ones return at once
            self._scheduler = None
            self._apply_rewinds(state)
            self.ready.clear()
            log_event("daemon.stop")

    # -- jobs --

    def reconcile(self, *, first: bool = False) -> None:
        """Make the jobs match the sites folder: add, change, remove; report broken sites."""
        sched = self._scheduler
        assert sched is not None, "reconcile() runs inside run()"
        wanted: dict[str, tuple[cron.CrontabTrigger, SiteConfig]] = {}
        try:
            folders = site_dirs(self.host)
        except OSError as exc:
            log_event("config.error", logging.ERROR, error=f"{self.host.sites_dir}: {exc}")
            return
        for folder in folders:
            key = f"{folder.parent.name}/{folder.name}"
            try:
                site = load_site(folder, host=self.host)
            except RenderError as exc:
                text = "; ".join(exc.headline().splitlines())
                if self._broken.get(key) != text:
                    log_event(
                        "config.error",
                        logging.ERROR,
                        site=key,
                        error=text,
                        note="site skipped until its site.toml is fixed",
                    )
                self._broken[key] = text
                continue
            if self._broken.pop(key, None) is not None:
                log_event("config.ok", site=key)
            wanted[key] = (trigger_for(site, self.host), site)

        now = datetime.now(UTC)
        grace = self.host.schedule.misfire_grace
        jobs = {job.id: job for job in sched.get_jobs(jobstore="default")}
        for key, (trig, _site) in wanted.items():
            job = jobs.get(key)
            if job is None:
                job = sched.add_job(
                    _scheduled_job,
                    trigger=trig,
                    args=(self._key, key),
                    id=key,
                    name=key,
                    jobstore="default",
                    replace_existing=True,
                )
                log_event("job.added", site=key, schedule=str(trig), next=_iso(job.next_run_time))
                continue
            if job.trigger != trig:
                job = sched.reschedule_job(key, jobstore="default", trigger=trig)
                log_event("job.changed", site=key, schedule=str(trig), next=_iso(job.next_run_time))
            elif first:
                due = job.next_run_time is not None and job.next_run_time <= now
                if due:
                    self._catch_up.add(key)
                log_event(
                    "job.kept",
                    site=key,
                    schedule=str(trig),
                    next=_iso(job.next_run_time),
                    missed="yes" if due else "no",
                )
            if tuple(job.args) != (self._key, key) or job.misfire_grace_time != grace:
                sched.modify_job(
                    key, jobstore="default", args=(self._key, key), misfire_grace_time=grace
                )
        for key in jobs.keys() - wanted.keys() - self._broken.keys():
            sched.remove_job(key, jobstore="default")
            log_event("job.removed", site=key)
        self._sites = {key: site for key, (_, site) in wanted.items()}
        self._update_watches()

    def planned(self) -> dict[str, datetime | None]:
        """Site -> next run time of its job (for tests and diagnostics)."""
        sched = self._scheduler
        if sched is None:
            return {}
        return {job.id: job.next_run_time for job in sched.get_jobs(jobstore="default")}

    def _on_event(self, event: JobExecutionEvent) -> None:
        if event.jobstore != "default":
            return
        what = "build.missed" if event.code == EVENT_JOB_MISSED else "build.skip"
        note = (
            f"started too late (misfire_grace {self.host.schedule.misfire_grace} s)"
            if event.code == EVENT_JOB_MISSED
            else "the previous scheduled build of this site is still running"
        )
        log_event(
            what,
            logging.WARNING,
            site=event.job_id,
            scheduled=_iso(event.scheduled_run_time),
            note=note,
        )

    def _apply_rewinds(self, state: Path) -> None:
        """Scheduled builds that never ran because we stopped: due again at the next start."""
        if not self._rewind:
            return
        sched = self._new_scheduler(state, workers=1)
        sched.start(paused=True)
        try:
            for key, when in sorted(self._rewind.items()):
                try:
                    sched.modify_job(key, jobstore="default", next_run_time=when)
                except JobLookupError:
                    continue
                log_event("build.deferred", site=key, note="runs as a catch-up at the next start")
        finally:
            sched.shutdown(wait=False)
            self._rewind.clear()

    # -- builds --

    def run_scheduled(self, key: str) -> None:
        with self._mutex:
            reason = Reason.catch_up if key in self._catch_up else Reason.schedule
            self._catch_up.discard(key)
        self.build(key, reason)

    def build(self, key: str, reason: Reason) -> None:
        """Run one build of the site in folder ``key`` and log its start and end."""
        with self._mutex:
            if reason is Reason.auto:
                self._queued_auto.discard(key)
            if self._stop.is_set():
                if reason in (Reason.schedule, Reason.catch_up):
                    self._rewind[key] = datetime.now(UTC)
                log_event("build.skip", site=key, reason=reason.value, note="shutting down")
                return
            if key in self._building:
                log_event("build.skip", site=key, reason=reason.value, note="already building")
                return
            self._building.add(key)
        started = time.monotonic()
        details: dict[str, object] = {}
        try:
            log_event("build.start", site=key, reason=reason.value)
            try:
                site = load_site(self.host.sites_dir / key, host=self.host)
                report = self._runner(
                    site, host=self.host, reason=reason.value, should_stop=self._stop.is_set
                )
                outcome, seconds = str(report.outcome.value), report.seconds
                if report.version is not None:
                    details["version"] = report.version
                details.update(pages=report.pages, rendered=report.rendered, reused=report.reused)
            except RenderError as exc:
                outcome, seconds = "failed", time.monotonic() - started
                details["error"] = "; ".join(exc.headline().splitlines())
            except Exception as exc:  # a bug in a build must not take the daemon down
                logging.getLogger("render.scheduler").exception("build of %s crashed", key)
                outcome, seconds = "error", time.monotonic() - started
                details["error"] = repr(exc)
            unfinished = outcome not in ("published", "unchanged", "skipped")
            if self._stop.is_set() and reason in (Reason.schedule, Reason.catch_up) and unfinished:
                with self._mutex:
                    self._rewind[key] = datetime.now(UTC)
            level = logging.WARNING if outcome in ("failed", "error") else logging.INFO
            log_event(
                "build.end",
                level,
                site=key,
                reason=reason.value,
                outcome=outcome,
                seconds=round(seconds, 3),
                **details,
            )
        finally:
            with self._mutex:
                self._building.discard(key)

    # -- auto mode --

    def _update_watches(self) -> None:
        for key, site in self._sites.items():
            if site.site.auto and key not in self._watch:
                now_sig = _signature(site.database)
                self._watch[key] = _Watch(seen=now_sig, built=now_sig)
        for key in list(self._watch):
            if key not in self._sites or not self._sites[key].site.auto:
                del self._watch[key]

    def _check_auto(self, now: float) -> None:
        sched = self._scheduler
        if sched is None:
            return
        for key, watch in self._watch.items():
            sig = _signature(self._sites[key].database)
            if sig != watch.seen:
                watch.seen, watch.changed_at = sig, now
                continue
            if watch.seen == watch.built or now - watch.changed_at < self.host.schedule.debounce:
                continue
            with self._mutex:
                if key in self._building or key in self._queued_auto:
                    continue
                self._queued_auto.add(key)
            watch.built = watch.seen
            sched.add_job(
                self.build,
                args=(key, Reason.auto),
                id=f"auto:{key}",
                name=f"auto {key}",
                jobstore="volatile",
                replace_existing=True,
                misfire_grace_time=None,
            )


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


def run_daemon(
    host: HostConfig, *, runner: SiteRunner | None = None, reconcile_every: float = 60.0
) -> None:
    """Run the scheduler in the foreground until SIGTERM/SIGINT (``render scheduler``)."""
    Daemon(host, runner=runner, reconcile_every=reconcile_every).run()
