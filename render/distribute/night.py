"""A night's dispatch: as many builds in flight as the live workers have slots, each to its worker.

``render.distribute.enqueue.run_sites`` sends a night through this. Instead of
putting every site on the shared queue at once, it keeps the live workers'
slots full and, each time a slot frees, picks the next site with
``render.distribute.affinity``: a site whose last builder has a free slot
goes to that worker's own queue, the others to the shared queue. Each build
pushes its task id onto a list of the night's own in Redis when it ends, so
the enqueuer hears of it at once (one blocking pop), in whatever order the
builds finish.

When no worker has said it is alive (a heartbeat), everything goes to the
shared queue at once, as before affinity. A build sent to a worker's own
queue whose heartbeat then stops (the machine died) is sent again to the
shared queue: it would otherwise wait for that worker to come back. The
site lock and the store's compare-and-swap keep the two to one publish.

A build that staged its version for an audit task (``[schedule] audits =
"queue"``) pushes a ``staged:<task id>`` notice as it hands over: its slot is
free, and the night waits on for the audit task's own notice (same task id)
without counting it against the build workers' slots.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from render.distribute import affinity, broker

if TYPE_CHECKING:
    import redis
    from celery.result import AsyncResult

POLL = 1.0  # seconds between checks that do not wait on a notice: lost notices, dead workers
NOTICE_TTL = 86400


@dataclass
class _Sent:
    key: str
    result: AsyncResult
    node: str | None  # the worker whose own queue it went to; None: the shared queue


class Night:
    """The sites of one night, sent as slots free and received as they finish."""

    def __init__(
        self,
        keys: Sequence[str],
        *,
        client: redis.Redis,
        send: Callable[[str, str, str], AsyncResult],
    ) -> None:
        self.notify = f"render:done:{uuid.uuid4().hex}"
        self._client = client
        self._send = send  # (site, queue, notify list) -> the task's result
        self._pending: deque[str] = deque(keys)
        self._flight: dict[str, _Sent] = {}  # by task id
        self._auditing: dict[str, _Sent] = {}  # staged builds whose audit task is to come back
        self.routed: dict[str, str] = {}  # site -> the queue it was last sent to

    def waiting(self) -> bool:
        return bool(self._pending or self._flight or self._auditing)

    def _post(self, key: str, node: str | None) -> None:
        queue = broker.BUILDS if node is None else affinity.own_queue(node)
        result = self._send(key, queue, self.notify)
        self._flight[result.id] = _Sent(key=key, result=result, node=node)
        self.routed[key] = queue

    def fill(self) -> None:
        """Send builds until every live worker's slot has one (all at once when none is known)."""
        from redis.exceptions import RedisError

        try:
            slots = affinity.slots(self._client)
            last = affinity.last_builders(self._client, list(self._pending))
        except RedisError:
            slots, last = {}, {}  # Redis restarting: the shared queue needs no advice
        if not slots:
            while self._pending:
                self._post(self._pending.popleft(), None)
            return
        room = sum(total for total, _ in slots.values()) - len(self._flight)
        mine = {node: 0 for node in slots}
        for sent in self._flight.values():
            if sent.node in mine:
                mine[sent.node] += 1
        # a node's free slots: what it says, less what this night queued for it alone
        free = {
            node: max(0, min(idle, total - mine[node])) for node, (total, idle) in slots.items()
        }
        for node in list(free):
            while room > 0 and free[node] > 0:
                key = next((k for k in self._pending if last.get(k) == node), None)
                if key is None:
                    break
                self._pending.remove(key)
                self._post(key, node)
                free[node] -= 1
                room -= 1
        # the rest to any worker: first the sites whose last builder is gone or unknown
        order = sorted(self._pending, key=lambda k: last.get(k) in slots)
        for key in order[: max(0, room)]:
            self._pending.remove(key)
            self._post(key, None)

    def wait(self, *, deadline: float) -> list[tuple[str, AsyncResult]]:
        """The builds that ended next, as ``(site, result)``; after ``deadline``, every one left."""
        from redis.exceptions import RedisError

        while self._flight or self._auditing:
            if time.monotonic() >= deadline:
                left = [
                    (s.key, s.result) for s in [*self._flight.values(), *self._auditing.values()]
                ]
                self._flight.clear()
                self._auditing.clear()
                return left
            try:
                popped = self._client.blpop([self.notify], timeout=POLL)
            except RedisError:
                time.sleep(0.5)  # a reconnect's pace; the checks below do not need the notice
                popped = None
            if popped is not None:
                notice = _text(popped[1])
                if notice.startswith(broker.STAGED):  # a build slot freed: the caller fills it
                    staged = self._flight.pop(notice.removeprefix(broker.STAGED), None)
                    if staged is not None:  # else its audit's notice came first: it is done
                        self._auditing[staged.result.id] = staged
                        return []
                    continue
                sent = self._flight.pop(notice, None) or self._auditing.pop(notice, None)
                if sent is not None:  # else a redelivered build's second notice, or a resent one
                    return [(sent.key, sent.result)]
                continue
            done = self._check()
            if done:
                return done
        return []

    def _check(self) -> list[tuple[str, AsyncResult]]:
        """Builds that ended without a notice (Redis restarted), and builds stranded on a dead worker."""
        from redis.exceptions import RedisError

        done: list[tuple[str, AsyncResult]] = []
        for table in (self._flight, self._auditing):
            for task_id, sent in list(table.items()):
                try:
                    ready = sent.result.ready()
                except (RedisError, OSError, ConnectionError):
                    return done
                if ready:
                    del table[task_id]
                    done.append((sent.key, sent.result))
        stranded = [(t, s) for t, s in self._flight.items() if s.node is not None]
        if stranded:
            try:
                alive = affinity.slots(self._client)
            except RedisError:
                return done
            for task_id, sent in stranded:
                if sent.node not in alive:
                    del self._flight[task_id]
                    self._post(sent.key, None)
        return done

    def close(self) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError):
            self._client.delete(self.notify)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
