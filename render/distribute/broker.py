"""The Celery app of a host: broker, result backend, queues and delivery guarantees.

Delivery is at least once: a task is acknowledged after it ran (``acks_late``),
and a worker process that dies mid-build hands it back to the queue
(``reject_on_worker_lost``). A message a whole machine took with it comes back
after the broker's visibility timeout, set a little past the longest allowed
build (``[schedule] build_timeout``) so a build still running is never handed
out twice on that account. A build that runs twice anyway publishes once: the
site lock in Redis serialises the two, and the store's compare-and-swap on
``root.json`` makes the second one ``unchanged``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from render.config import HostConfig, Secret
from render.errors import BrokerError, ConfigError

if TYPE_CHECKING:
    import redis
    from celery import Celery

BROKER_ENV = "RENDER_BROKER_URL"
BUILDS = "builds"  # the queue of site builds
AUDITS = "audits"  # audits of staged versions ([schedule] audits = "queue"), on Chromium machines
# besides these, each build worker consumes a queue of its own (render.distribute.affinity)
QUEUES = (BUILDS, AUDITS)
BUILD_TASK = "render.build_site"
AUDIT_TASK = "render.audit_staged"  # a build that staged its version is replaced by this one
STAGED = "staged:"  # a night's notice: a build ended, its audit task is queued (distribute.night)
VISIBILITY_MARGIN = 300  # seconds past the longest build before a message is handed out again


def broker_url(host: HostConfig, *, environ: Mapping[str, str] | None = None) -> Secret:
    """``$RENDER_BROKER_URL``, else ``[schedule] broker_url``; a ``ConfigError`` when neither."""
    env = os.environ if environ is None else environ
    value = env.get(BROKER_ENV) or host.schedule.broker_url
    if not value:
        raise ConfigError(
            "schedule.broker_url: required when the executor is 'celery'",
            hint=f"set [schedule] broker_url in {host.path.name} or ${BROKER_ENV}",
        )
    scheme = urlsplit(value).scheme
    if scheme not in ("redis", "rediss", "redis+socket"):
        raise ConfigError(
            f"schedule.broker_url: expected a redis:// URL, got a {scheme or 'schemeless'} URL",
            hint="render's workers use Redis as broker and result backend",
        )
    return Secret(value)


def make_app(host: HostConfig, *, environ: Mapping[str, str] | None = None) -> Celery:
    """A Celery app for ``host``: Redis broker and result backend, acks late, one task at a time."""
    from celery import Celery  # loaded only when the executor is celery

    url = broker_url(host, environ=environ).reveal()
    visibility = host.schedule.build_timeout + VISIBILITY_MARGIN
    app = Celery("render", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,  # a long build does not hold other sites' messages
        task_default_queue=BUILDS,
        task_routes={BUILD_TASK: {"queue": BUILDS}, AUDIT_TASK: {"queue": AUDITS}},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_extended=True,
        result_expires=7 * 86400,
        task_time_limit=host.schedule.build_timeout,
        broker_transport_options={"visibility_timeout": visibility},
        result_backend_transport_options={"visibility_timeout": visibility},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a broker restarted mid-night: keep reconnecting
        result_backend_always_retry=True,  # a result stored while Redis restarts is retried
        result_backend_max_sleep_between_retries_ms=2000,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def client(host: HostConfig, *, timeout: float = 10.0) -> redis.Redis:
    """A Redis client on the broker (locks, heartbeats, notices); the URL stays inside."""
    import redis as redispy

    return redispy.Redis.from_url(
        broker_url(host).reveal(),
        socket_connect_timeout=timeout,
        socket_timeout=timeout + 5,  # past a blocking pop's own wait
        health_check_interval=30,
    )


def check(host: HostConfig, *, timeout: float = 5.0) -> None:
    """One ping of the broker before a night is enqueued: a ``BrokerError`` at once, not per site."""
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(
        broker_url(host).reveal(), socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        client.ping()
    except RedisError as exc:  # its text names host and port, never the password
        raise BrokerError(
            f"the broker did not answer: {exc}",
            hint="is redis-server running at [schedule] broker_url (or $RENDER_BROKER_URL)?",
        ) from None
    finally:
        client.close()
