"""What a Celery worker runs: one site's build through ``render.pipeline.run_site``.

The worker reads its own host config (``render worker --config``): its own
state folder (the local cache of records and objects, and its own ledger), the
shared sites folder and the shared store. A build takes the site's lock in
Redis (``sitelock``), restores the site's record from the store when this
worker has none (``carry``), runs the pipeline, stores the record again, and
returns a plain summary (JSON) that the enqueuing process writes to its
ledger. An expected failure (a ``RenderError``) is a result too, not a task
failure: only a bug fails the task, with its traceback.

A build the enqueuer asked to stage (``[schedule] audits = "queue"``) stops
before the root switch and replaces itself (Celery's ``Task.replace``) with an
audit task on the ``audits`` queue, which keeps the build's task id: the
enqueuer waits on one result, which the audit task gives once it audited the
staged version and switched the root (``render.staged``), or refused to. No
worker slot waits on another task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from render.config import HostConfig, SiteConfig, load_site
from render.distribute import affinity, broker, carry, sitelock
from render.errors import RenderError
from render.lighthouse import SampledPage
from render.pipeline import Options, run_site
from render.publish.staging import Staged
from render.publish.store import open_store
from render.publish.versions import Publication
from render.run.ledger import open_ledger
from render.staged import audit_staged

if TYPE_CHECKING:
    import redis
    from celery import Celery, Task

_host: HostConfig | None = None  # set by ``configure`` before the worker starts


def configure(host: HostConfig) -> Celery:
    """The worker's app, with the build task bound to ``host``'s configuration."""
    global _host
    _host = host
    app = broker.make_app(host)
    app.task(name=broker.BUILD_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)(
        build_site
    )
    app.task(name=broker.AUDIT_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)(
        audit_site
    )
    from celery.signals import (
        celeryd_after_setup,
        worker_process_init,
        worker_ready,
        worker_shutdown,
    )

    worker_process_init.connect(_allow_children, weak=False)
    celeryd_after_setup.connect(_own_queue, weak=False)
    worker_ready.connect(_start_heartbeat, weak=False)
    worker_shutdown.connect(_stop_heartbeat, weak=False)
    return app


_heartbeat: affinity.Heartbeat | None = None


def _own_queue(sender: str, instance: Any, **_: object) -> None:
    """A build worker also consumes ``builds@<its node name>`` (queue affinity)."""
    queues = instance.app.amqp.queues
    if broker.BUILDS in queues.consume_from:
        queues.select_add(affinity.own_queue(sender))


def _start_heartbeat(sender: Any, **_: object) -> None:
    """The worker says it is alive, and how many builds it runs, while it runs.

    ``sender`` is the worker's consumer; its controller knows the pool's size.
    """
    global _heartbeat
    host = _host
    assert host is not None
    if broker.BUILDS not in sender.app.amqp.queues.consume_from:
        return  # an audits-only worker takes no builds
    from celery.worker import state

    _heartbeat = affinity.Heartbeat(
        broker.client(host),
        node=sender.hostname,
        slots=int(sender.controller.concurrency),
        busy=lambda: len(state.active_requests),
    )
    _heartbeat.start()


def _stop_heartbeat(**_: object) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


def _allow_children(**_: object) -> None:
    """Let a pool process start the build's render processes.

    Celery's prefork pool marks its processes daemonic, and ``multiprocessing``
    refuses children to a daemonic process. A build's render processes are
    ended by the build itself (``render.build.workers``), and when a pool
    process dies their pipes to it close and they exit, so the flag only
    stands in the way.
    """
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    config["daemon"] = False
    # billiard leaves its own AuthenticationString here, which the standard library's
    # forkserver refuses to pickle for the render processes: a fresh key of the right type
    config["authkey"] = multiprocessing.process.AuthenticationString(os.urandom(32))  # type: ignore[attr-defined]


def build_site(
    task: Task, key: str, reason: str, options: dict[str, Any], notify: str | None = None
) -> dict[str, Any]:
    """Build the site in folder ``key`` (``owner/name``); a summary of the run, as JSON.

    ``notify``: a Redis list to push this task's id onto at the end (the
    enqueuer's night, ``render.distribute.night``).
    """
    host = _host
    assert host is not None, "configure() runs before the worker takes tasks"
    client = _client(host)
    node = str(task.request.hostname or "")
    affinity.started(client, node)
    built = handed = False
    try:
        summary = _build(task, host, client, key, reason, options)
        built = summary["outcome"] in ("published", "unchanged", "staged") and not summary.get(
            "carry_error"
        )
        summary["node"] = node
        if summary["outcome"] == "staged":
            from celery.exceptions import Ignore

            audit = task.app.signature(
                broker.AUDIT_TASK,
                args=[key, summary, options],
                kwargs={} if notify is None else {"notify": notify},
                queue=broker.AUDITS,
            )
            try:
                task.replace(audit)  # raises Ignore once the audit task is on its queue
            except Ignore:
                handed = True
                raise
        return summary
    finally:
        affinity.ended(client, node, site=key, built=built)
        if notify is not None:  # handed over: the audit task, with this id, notifies at its end
            _notify(client, notify, (broker.STAGED if handed else "") + str(task.request.id))


def audit_site(
    task: Task, key: str, build: dict[str, Any], options: dict[str, Any], notify: str | None = None
) -> dict[str, Any]:
    """Audit the version the build of ``key`` staged, then switch the root to it; the summary.

    ``build`` is the build's summary: the result is it, with the audit's
    outcome, its machine, and its Lighthouse rows for the enqueuer's ledger.
    """
    host = _host
    assert host is not None, "configure() runs before the worker takes tasks"
    summary = {
        **build,
        "audit_node": str(task.request.hostname or ""),
        "audit_worker": f"{socket.gethostname()}:{os.getpid()}",
        "audit_state": str(host.state_dir.resolve()),
    }
    try:
        site = load_site(host.sites_dir / key, host=host)
        done = audit_staged(
            site,
            Staged.from_json(build["staged"], site=key),
            [SampledPage(**page) for page in build["sample"]],
            host=host,
            full=bool(options.get("full_audit")),
        )
    except RenderError as exc:
        summary.update(_failure(exc))
        return summary
    finally:
        if notify is not None:
            _notify(_client(host), notify, str(task.request.id))
    timings = {**(build.get("timings") or {}), **done.timings}
    summary.update(timings=timings, audits=done.ledger_audits(), audit_fetched=done.fetched)
    summary["findings"] = list(done.audits.ledger_findings())
    if done.blocked is not None:
        summary.update(_failure(done.blocked))
        return summary
    assert done.outcome is not None
    summary.update(outcome=done.outcome.value, publication=_publication(done.publication))
    if done.publication is None:
        summary["version"] = None
    return summary


def _failure(exc: RenderError) -> dict[str, Any]:
    return {
        "outcome": "failed_check" if exc.stage == "check" else "failed",
        "stage": exc.stage,
        "message": exc.message,
        "hint": exc.hint,
        "detail": exc.detail,
        "headline": exc.headline(),
    }


def _publication(publication: Publication | None) -> dict[str, Any] | None:
    if publication is None:
        return None
    return {
        "outcome": publication.outcome.value,
        "version": publication.version,
        "parent": publication.parent,
        "files": publication.files,
        "bytes": publication.bytes,
        "new_blobs": publication.uploaded_blobs,
        "new_bytes": publication.uploaded_bytes,
        "seconds": publication.seconds,
    }


_redis: redis.Redis | None = None


def _client(host: HostConfig) -> redis.Redis:
    """This pool process's Redis client (made after the fork, kept across builds)."""
    global _redis
    if _redis is None:
        _redis = broker.client(host)
    return _redis


def _notify(client: redis.Redis, notify: str, task_id: str) -> None:
    from redis.exceptions import RedisError

    with contextlib.suppress(RedisError):  # the enqueuer also polls the results
        pipe = client.pipeline(transaction=False)
        pipe.rpush(notify, task_id)
        pipe.expire(notify, 86400)
        pipe.execute()


def _build(
    task: Task,
    host: HostConfig,
    client: redis.Redis,
    key: str,
    reason: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    started = time.monotonic()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    summary: dict[str, Any] = {
        "began": time.time(),  # wall clock, for the bench's account of the time between tasks
        "site": key,
        "reason": reason,
        "worker": worker,
        "state": str(host.state_dir.resolve()),
        "machine": socket.gethostname(),
        "redelivered": bool(
            task.request.delivery_info and task.request.delivery_info.get("redelivered")
        ),
    }
    try:
        site = load_site(host.sites_dir / key, host=host)
        with sitelock.hold(
            client, site.id, lease=host.schedule.lock_lease, wait=host.schedule.build_timeout
        ) as lease:
            mark = time.monotonic()
            restored = _restore(host, site)
            carried = time.monotonic() - mark
            mark = time.monotonic()
            try:
                report = run_site(
                    site,
                    host=host,
                    reason=reason,
                    options=Options(**options),
                    should_stop=lease.lost,
                )
            finally:
                ran = time.monotonic() - mark
                # a complete build changed the record, whatever its checks said; a
                # build that stopped early left it as it was, and then nothing is put
                if not lease.lost():
                    mark = time.monotonic()
                    summary["carry_error"] = _save(host, site)
                    carried += time.monotonic() - mark
    except RenderError as exc:
        summary.update(_failure(exc), seconds=time.monotonic() - started)
        return summary
    summary.update(
        outcome=report.outcome.value,
        seconds=report.seconds,
        pages=report.pages,
        rendered=report.rendered,
        reused=report.reused,
        version=report.version,
        timings=report.timings,
        task_seconds=time.monotonic() - started,
        run_seconds=ran,  # run_site whole: its own lock and ledger too, as on one machine
        ended=time.time(),
        carry_seconds=carried,
        restored=None if restored is None else dataclasses.asdict(restored),
        publication=_publication(report.publication),
    )
    if report.staged is not None:  # for the audit task that replaces this one
        summary["staged"] = report.staged.to_json()
        summary["sample"] = [dataclasses.asdict(page) for page in report.sample]
    return summary


def _restore(host: HostConfig, site: SiteConfig) -> carry.Restored | None:
    """The store's record of ``site`` onto this worker, when it is not the local one.

    A record from the store is another worker's last build: this worker's
    ledger no longer knows what the live version was built from, so its
    "nothing changed" shortcut is off for the next build (which then reuses
    every page it can, and ends ``unchanged`` when nothing did change).
    """
    store = open_store(host)
    try:
        restored = carry.restore(store, host=host, site=site, concurrency=host.store.concurrency)
    finally:
        store.close()
    if restored is not None:
        with open_ledger(host.state_dir) as ledger:
            ledger.set_input_hash(site.id.owner, site.id.name, None)
    return restored


def _save(host: HostConfig, site: SiteConfig) -> str | None:
    """Put what changed in the record; why it could not, or None.

    The carried record only saves rendering elsewhere: a store that refused
    it does not fail a build that published (the store keeps the last whole
    record, which the next worker builds from).
    """
    try:
        store = open_store(host)
        try:
            carry.save(store, host=host, site=site, concurrency=host.store.concurrency)
        finally:
            store.close()
    except RenderError as exc:
        return exc.headline()
    return None
