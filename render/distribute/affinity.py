"""Queue affinity: a site's build goes to the worker that built it last, when that worker is free.

A worker that built a site has its record and objects in its own state
folder: building there again costs what changed, while another worker first
fetches the record and every page's bytes from the store (``carry``). So:

- every build worker also consumes a queue of its own, ``builds@<node name>``;
- it keeps, in Redis, ``render:worker:<node>`` (its slots, with a TTL a few
  heartbeats long: a worker that stops, or dies, drops out on its own) and
  ``render:busy:<node>`` (builds running now: counted up and down by the
  builds, set again from the worker's own count at every heartbeat);
- a build that completes sets ``render:last:<owner>/<name>`` to its node;
- the enqueuer sends a site to its last builder's queue when that worker is
  alive and has a free slot, else to the shared ``builds`` queue, which every
  build worker consumes.

All of it is advice: a site sent to the shared queue builds anywhere (a
restore first), and the site lock and the store's compare-and-swap keep a
build that runs twice to one publish. Reading it costs the enqueuer one
round trip per decision; Celery's own ``inspect`` broadcast is not used.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from render.distribute import broker

if TYPE_CHECKING:
    import redis

ALIVE = "render:worker:"
BUSY = "render:busy:"
LAST = "render:last:"
BEAT = 2.0  # seconds between heartbeats
TTL = 7  # seconds a heartbeat lasts: three missed ones and the worker is gone


def own_queue(node: str) -> str:
    """The queue only worker ``node`` consumes."""
    return f"{broker.BUILDS}@{node}"


class Heartbeat:
    """Runs in the worker's main process: says every ``BEAT`` seconds that it is alive."""

    def __init__(
        self, client: redis.Redis, *, node: str, slots: int, busy: Callable[[], int]
    ) -> None:
        self._client = client
        self._node = node
        self._slots = slots
        self._busy = busy
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="render-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError):  # Redis restarting: the next beat says it again
            pipe = self._client.pipeline(transaction=False)
            pipe.set(ALIVE + self._node, json.dumps({"slots": self._slots}), ex=TTL)
            pipe.set(BUSY + self._node, self._busy(), ex=TTL)
            pipe.execute()

    def _run(self) -> None:
        while not self._done.wait(BEAT):
            self.beat()

    def stop(self) -> None:
        from redis.exceptions import RedisError

        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=BEAT * 2)
        with contextlib.suppress(RedisError):
            self._client.delete(ALIVE + self._node, BUSY + self._node)


def started(client: redis.Redis, node: str) -> None:
    """A build began on ``node`` (the count the enqueuer reads between heartbeats)."""
    from redis.exceptions import RedisError

    with contextlib.suppress(RedisError):
        client.incr(BUSY + node)


def ended(client: redis.Redis, node: str, *, site: str, built: bool) -> None:
    """A build ended on ``node``; ``built``: its state folder now has the site's latest record."""
    from redis.exceptions import RedisError

    with contextlib.suppress(RedisError):
        pipe = client.pipeline(transaction=False)
        pipe.decr(BUSY + node)
        if built:
            pipe.set(LAST + site, node)
        pipe.execute()


def slots(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Every live worker's ``(slots, free slots)`` now."""
    nodes = [key.decode()[len(ALIVE) :] for key in client.scan_iter(match=ALIVE + "*", count=500)]
    if not nodes:
        return {}
    pipe = client.pipeline(transaction=False)
    for node in nodes:
        pipe.get(ALIVE + node)
        pipe.get(BUSY + node)
    replies = pipe.execute()
    found: dict[str, tuple[int, int]] = {}
    for node, alive, busy in zip(nodes, replies[0::2], replies[1::2], strict=True):
        if alive is None:  # expired between the scan and the read
            continue
        try:
            total = int(json.loads(alive)["slots"])
            running = max(0, int(busy or 0))
        except (ValueError, KeyError, TypeError):
            continue
        found[node] = (total, max(0, total - running))
    return found


def last_builders(client: redis.Redis, keys: list[str]) -> dict[str, str]:
    """The node that last built each site in ``keys`` (sites never built are left out)."""
    if not keys:
        return {}
    values = client.mget([LAST + key for key in keys])
    return {
        key: value.decode() if isinstance(value, bytes) else str(value)
        for key, value in zip(keys, values, strict=True)
        if value
    }
