"""One build per site at a time, across processes: a file lock per site.

The lock is ``flock(LOCK_EX)`` on ``<state>/locks/<owner>/<name>.lock``, opened
with ``O_CLOEXEC`` so a program started with ``exec`` (Chromium, nginx, a
shell) does not inherit it, and closed in any ``fork()``-ed child (a
multiprocessing render worker) so a child that outlives its parent never keeps
the site locked. ``flock`` (not ``lockf``/``fcntl`` record locks) because a
record lock vanishes when *any* descriptor on the file closes.

While held, the file holds who holds it (pid, host, reason, start time) as one
JSON line, so a waiter can say who it waits for; the holder empties it before
releasing. The file itself is never deleted (deleting a lock file races with
the next locker).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from render.errors import DiskFullError, LockedError, is_disk_full

_HELD: set[int] = set()  # descriptors this process holds a site lock on


def _close_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


@dataclass(frozen=True, kw_only=True)
class Holder:
    """Who holds a site lock."""

    pid: int
    host: str
    reason: str
    started: datetime

    def describe(self) -> str:
        """``pid 4242 on web1 (schedule, since 2026-11-27 03:00:07 UTC)``."""
        since = self.started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"pid {self.pid} on {self.host} ({self.reason}, since {since})"

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": self.pid,
                "host": self.host,
                "reason": self.reason,
                "started": self.started.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(
                pid=int(data["pid"]),
                host=str(data["host"]),
                reason=str(data["reason"]),
                started=datetime.fromisoformat(data["started"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def lock_path(state_dir: Path, site_id: object) -> Path:
    """``<state>/locks/<owner>/<name>.lock`` for ``owner/name``."""
    owner, _, name = str(site_id).partition("/")
    return Path(state_dir) / "locks" / owner / f"{name}.lock"


def _read_holder(fd: int) -> Holder | None:
    return Holder.from_json(os.pread(fd, 4096, 0).decode("utf-8", "replace").strip())


@contextlib.contextmanager
def site_lock(
    state_dir: Path,
    site_id: object,
    *,
    wait: bool,
    on_wait: Callable[[str], None] | None = None,
    reason: str = "build",
) -> Iterator[Holder]:
    """Hold the site's build lock for the ``with`` block; yield our own ``Holder``.

    ``wait=False`` raises ``LockedError`` naming the holder when the site is
    being built; ``wait=True`` calls ``on_wait`` once with a message naming the
    holder, then blocks until the lock is free.
    """
    path = lock_path(state_dir, site_id)
    with _hold(
        path, str(site_id), what="a build is running", wait=wait, on_wait=on_wait, reason=reason
    ) as me:
        yield me


@contextlib.contextmanager
def daemon_lock(state_dir: Path) -> Iterator[Holder]:
    """One ``render scheduler`` per state folder; ``LockedError`` naming the running one."""
    path = Path(state_dir) / "locks" / "scheduler.lock"
    with _hold(
        path,
        None,
        what="a scheduler is already running",
        wait=False,
        on_wait=None,
        reason="scheduler",
    ) as me:
        yield me


@contextlib.contextmanager
def _hold(
    path: Path,
    site: str | None,
    *,
    what: str,
    wait: bool,
    on_wait: Callable[[str], None] | None,
    reason: str,
) -> Iterator[Holder]:
    with _writing(path, site):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    owner_pid = os.getpid()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            who = holder.describe() if holder else "another process"
            if not wait:
                hint = (
                    "run again without --no-wait to wait for it; 'render status' shows running builds"
                    if site
                    else "stop it first (systemctl stop render-scheduler), or use another state folder"
                )
                raise LockedError(f"{what}: {who}", site=site, hint=hint) from None
            if on_wait is not None:
                prefix = f"{site}: " if site else ""
                on_wait(f"{prefix}waiting for the running build to finish: {who}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        me = Holder(
            pid=owner_pid,
            host=socket.gethostname(),
            reason=reason,
            started=datetime.now(UTC).replace(microsecond=0),
        )
        with _writing(path, site):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (me.to_json() + "\n").encode("utf-8"), 0)
        _HELD.add(fd)
        try:
            yield me
        finally:
            _HELD.discard(fd)
            if os.getpid() == owner_pid:
                os.ftruncate(fd, 0)
    finally:
        if os.getpid() == owner_pid:
            # Unlock explicitly: a child forked without exec shares this open file
            # description, and a plain close would leave the lock held by it.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@contextlib.contextmanager
def _writing(path: Path, site: str | None) -> Iterator[None]:
    """A full disk while writing the lock file is an error naming it, not a traceback."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError.of(
            exc, writing=f"the lock file {path}", folder=path.parent, stage="lock", site=site
        ) from exc


def running(state_dir: Path, site_id: object) -> Holder | None:
    """Who is building ``site_id`` right now, or None (without taking the lock)."""
    path = lock_path(state_dir, site_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        holder = _read_holder(fd)
        if holder is None:
            return None
        try:
            # a holder that died without emptying the file left stale text behind
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
