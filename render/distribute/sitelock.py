"""A site's lock across machines: a Redis lock with a lease, renewed while the build runs.

The local file lock (``render.run.locks``) keeps two builds of a site apart on
one machine; this one keeps them apart across workers. It is redis-py's
``Lock``: a random token under ``render:lock:<owner>/<name>`` that expires
after ``[schedule] lock_lease`` seconds unless renewed. A thread renews it
every third of the lease; a worker that dies stops renewing, and the lock is
free a lease later. A holder that cannot renew (Redis gone, or the lease ran
out while the process was stalled) has lost the lock: ``lost()`` turns true,
and the pipeline abandons the build before its root switch
(``run_site(should_stop=...)``), so the lock fences the one step that matters.
Even a stale holder that got past that check cannot undo a newer version: the
store's compare-and-swap on ``root.json`` refuses a switch on top of a root it
did not read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from render.config import SiteId
from render.errors import BrokerError, LockedError

if TYPE_CHECKING:
    import redis

PREFIX = "render:lock:"
RECONNECT = 120.0  # seconds a worker waits for Redis to come back before it fails the build


class SiteLease:
    """A held lock; ``lost()`` is true once it could not be renewed."""

    def __init__(self, lock: redis.lock.Lock, *, lease: float) -> None:
        self._lock = lock
        self._lease = lease
        self._lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="render-lease", daemon=True)

    def lost(self) -> bool:
        return self._lost.is_set()

    def _renew(self) -> None:
        """Renew every third of the lease; Redis briefly away (a restart) is not a loss.

        The lease is lost when Redis says another token holds the key, or when
        no renewal got through for a whole lease.
        """
        from redis.exceptions import LockError, RedisError

        renewed = time.monotonic()
        pause = self._lease / 3
        while not self._done.wait(pause):
            try:
                self._lock.reacquire()
            except LockError:
                self._lost.set()
                return
            except RedisError:
                if time.monotonic() - renewed >= self._lease:
                    self._lost.set()
                    return
                pause = self._lease / 10  # try again sooner while the lease lasts
                continue
            renewed, pause = time.monotonic(), self._lease / 3

    def start(self) -> None:
        self._thread.start()

    def release(self) -> None:
        from redis.exceptions import LockError, RedisError

        self._done.set()
        self._thread.join()
        if self._lost.is_set():
            return
        with contextlib.suppress(LockError, RedisError):  # expired, or Redis gone: it
            self._lock.release()  # frees itself a lease later


def key(site: SiteId) -> str:
    return f"{PREFIX}{site}"


@contextmanager
def hold(
    client: redis.Redis,
    site: SiteId,
    *,
    lease: float,
    wait: float | None,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[SiteLease]:
    """Hold ``site``'s lock in Redis; wait up to ``wait`` seconds (None: as long as it takes)."""
    from redis.exceptions import RedisError

    lock = client.lock(key(site), timeout=lease, sleep=0.1, thread_local=False)
    reconnect_until = time.monotonic() + RECONNECT
    while True:
        try:
            got = lock.acquire(blocking=False)
            if not got:
                if on_wait is not None:
                    on_wait()
                got = lock.acquire(blocking=True, blocking_timeout=wait)
            break
        except RedisError as exc:  # Redis restarting: wait for it a while
            if time.monotonic() >= reconnect_until:
                raise BrokerError(
                    f"the site lock in Redis could not be taken: {exc}",
                    site=str(site),
                    hint=f"Redis did not answer for {RECONNECT:.0f} s",
                ) from None
            time.sleep(0.5)  # the pace of reconnecting, not a race
    if not got:
        raise LockedError(
            f"another worker holds this site's lock (waited {wait:.0f} s)",
            site=str(site),
            hint=f"the lock frees itself {lease:.0f} s after its holder stops renewing it",
        )
    held = SiteLease(lock, lease=lease)
    held.start()
    try:
        yield held
    finally:
        held.release()
