"""The enqueuing side: send one task per site build, wait for the results, write the ledger.

``render nightly --executor celery`` and the scheduler daemon (``[schedule]
executor = "celery"``) call this instead of running the pipeline themselves.
Each result comes back here through the result backend, and this process
writes it to its own ledger, so ``render status``, the reports and the
dashboard see every build, whichever worker ran it. (A worker whose state
folder is this very one, on this machine, has written the run already; it is
not written twice.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from render.config import HostConfig, SiteConfig
from render.distribute import broker
from render.distribute.night import Night
from render.errors import BrokerError, RenderError
from render.pipeline import Options, Outcome
from render.run.ledger import Ledger, open_ledger

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult


@dataclass(frozen=True, kw_only=True)
class RemoteRun:
    """One site's build on a worker, as its result came back (``RunSummary``'s shape)."""

    site: str
    reason: str
    outcome: Outcome | None  # None: the build failed (``error`` says why)
    seconds: float = 0.0
    pages: int = 0
    rendered: int = 0
    reused: int = 0
    version: str | None = None
    worker: str = ""
    error: RenderError | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _options(options: Options) -> dict[str, Any]:
    if options.out is not None:
        raise BrokerError("--out writes on the worker's disk: not with the celery executor")
    data = dataclasses.asdict(options)
    data.pop("out")
    return data


def submit(
    app: Celery,
    key: str,
    *,
    reason: str,
    options: Options | None = None,
    queue: str = broker.BUILDS,
    notify: str | None = None,
) -> AsyncResult:
    """Put one build of the site in folder ``key`` on ``queue`` (default: the shared one).

    ``notify``: a Redis list the build pushes its task id onto when it ends.
    """
    from kombu.exceptions import OperationalError

    try:
        return app.send_task(
            broker.BUILD_TASK,
            args=[key, reason, _options(options or Options())],
            kwargs={} if notify is None else {"notify": notify},
            queue=queue,
        )
    except OperationalError as exc:
        raise BrokerError(
            f"the broker did not take the task: {exc}",
            site=key,
            hint="is redis-server running at [schedule] broker_url?",
        ) from None


def collect(result: AsyncResult, *, key: str, reason: str, timeout: float) -> RemoteRun:
    """Wait for one result; a lost task or a crashed build becomes a failed ``RemoteRun``."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = result.get(
                timeout=max(0.1, deadline - time.monotonic()), propagate=False, interval=0.2
            )
            # stop listening for it now, while the backend is reachable (not in __del__)
            with contextlib.suppress(Exception):
                result.backend.remove_pending_result(result)
            break
        except CeleryTimeout:
            error = BrokerError(
                f"no result within {timeout:.0f} s",
                site=key,
                hint="is a worker running ('render worker')?",
            )
            return RemoteRun(site=key, reason=reason, outcome=None, error=error)
        except (ConnectionError, OSError) as exc:  # the backend went away: wait for it again
            if time.monotonic() >= deadline:
                error = BrokerError(f"the result backend is unreachable: {exc}", site=key)
                return RemoteRun(site=key, reason=reason, outcome=None, error=error)
            time.sleep(0.5)  # a reconnect's pace, not a race: the loop re-reads the result
    if not isinstance(value, dict):  # the task raised: a bug on the worker
        crashed = RenderError(f"the worker's build crashed: {value!r}", site=key, stage="bug")
        return RemoteRun(site=key, reason=reason, outcome=None, error=crashed)
    return from_summary(value)


def from_summary(summary: dict[str, Any]) -> RemoteRun:
    key, reason = str(summary["site"]), str(summary["reason"])
    if summary["outcome"] in ("failed", "failed_check"):
        error = RenderError(
            str(summary.get("message") or ""),
            site=key,
            stage=summary.get("stage"),
            hint=summary.get("hint"),
            detail=summary.get("detail"),
        )
        return RemoteRun(
            site=key,
            reason=reason,
            outcome=None,
            seconds=summary.get("seconds", 0.0),
            worker=summary.get("worker", ""),
            error=error,
            summary=summary,
        )
    return RemoteRun(
        site=key,
        reason=reason,
        outcome=Outcome(summary["outcome"]),
        seconds=summary["seconds"],
        pages=summary.get("pages") or 0,
        rendered=summary.get("rendered") or 0,
        reused=summary.get("reused") or 0,
        version=summary.get("version"),
        worker=summary.get("worker", ""),
        summary=summary,
    )


def write_ledger(ledger: Ledger, run: RemoteRun, *, host: HostConfig) -> None:
    """Record ``run`` in this host's ledger, as ``run_site`` would have."""
    summary = run.summary
    if summary.get("machine") == socket.gethostname() and summary.get("state") == str(
        host.state_dir.resolve()
    ):
        return  # the worker shares this state folder: run_site wrote this run already
    owner, _, name = run.site.partition("/")
    run_id = ledger.start_run(owner, name, reason=run.reason)
    timings = summary.get("timings") or {}
    if "audits" in summary:  # an audit task's findings (``[schedule] audits = "queue"``)
        ledger.record_seo(run_id, owner, name, summary.get("findings") or [])
        ledger.record_lighthouse(run_id, owner, name, summary["audits"])
    if run.outcome is None:
        error = run.error
        stage = error.stage if error is not None else None
        ledger.finish_run(
            run_id,
            outcome="failed_check" if stage == "check" else "failed",
            stage=stage,
            message=error.message if error else None,
            timings=timings,
        )
        return
    publication = summary.get("publication")
    if publication and publication["outcome"] == "published":
        ledger.record_version(
            owner,
            name,
            version=publication["version"],
            parent=publication["parent"],
            created=publication["version"].split("-")[0],
            files=publication["files"],
            bytes=publication["bytes"],
            new_blobs=publication["new_blobs"],
            new_bytes=publication["new_bytes"],
            seconds=publication["seconds"],
            live=True,
        )
    elif run.version is not None and ledger.live_version(owner, name) != run.version:
        ledger.set_live(owner, name, run.version)
    ledger.finish_run(
        run_id,
        outcome=run.outcome.value,
        pages=run.pages,
        rendered=run.rendered,
        reused=run.reused,
        version=run.version,
        timings=timings,
    )


def run_sites(
    host: HostConfig,
    keys: Sequence[str],
    *,
    reason: str,
    options: Options | None = None,
    on_done: Callable[[RemoteRun], None] | None = None,
    app: Celery | None = None,
) -> list[RemoteRun]:
    """Build every site in ``keys`` on the workers, each as a slot frees; write the ledger.

    Returns the runs in the order of ``keys``; ``on_done`` sees each as it ends.
    Each site goes to the worker that built it last when that one is free
    (``render.distribute.night``).
    """
    broker.check(host)
    app = app or broker.make_app(host)
    opts = options or Options()
    if host.schedule.audits == "queue":  # each build stages; an audit task switches the root
        opts = dataclasses.replace(opts, stage=True)
    _options(opts)  # --out refused before anything is sent
    timeout = float(host.schedule.build_timeout) * max(1, len(keys))
    deadline = time.monotonic() + timeout
    client = broker.client(host)
    night = Night(
        keys,
        client=client,
        send=lambda key, queue, notify: submit(
            app, key, reason=reason, options=opts, queue=queue, notify=notify
        ),
    )
    runs: dict[str, RemoteRun] = {}
    try:
        with open_ledger(host.state_dir) as ledger:
            night.fill()
            while night.waiting():
                for key, result in night.wait(deadline=deadline):
                    left = max(0.1, deadline - time.monotonic())
                    run = collect(result, key=key, reason=reason, timeout=left)
                    write_ledger(ledger, run, host=host)
                    runs[key] = run
                    if on_done is not None:
                        on_done(run)
                night.fill()
    finally:
        night.close()
        client.close()
    return [runs[key] for key in keys]


@dataclass(frozen=True, kw_only=True)
class RemoteDone:
    """A build a worker finished (``render.scheduler.RunSummary``'s shape)."""

    outcome: Outcome
    seconds: float
    version: str | None
    pages: int
    rendered: int
    reused: int


def run_one(
    site: SiteConfig,
    *,
    host: HostConfig,
    reason: str,
    should_stop: Callable[[], bool] | None = None,
) -> RemoteDone:
    """The scheduler's ``SiteRunner`` under celery: one task, its result; raises its error.

    ``should_stop`` is not passed on: a build on a worker runs to its end even
    when the daemon that enqueued it stops (the daemon waits for it).
    """
    (run,) = run_sites(host, [str(site.id)], reason=reason)
    if run.error is not None or run.outcome is None:
        raise run.error or BrokerError("no result", site=str(site.id))
    return RemoteDone(
        outcome=run.outcome,
        seconds=run.seconds,
        version=run.version,
        pages=run.pages,
        rendered=run.rendered,
        reused=run.reused,
    )
