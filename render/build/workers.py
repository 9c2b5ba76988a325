"""Render processes: tenant templates compile and render here, never in the parent.

Each worker is a separate process with an address-space limit and a CPU-time
limit per page, so a template that loops for ever, folds a huge constant or
doubles a string until memory runs out fails its own page, and the parent
(and every other site) carries on. The parent hands out chunks of pages, reads
results as they come, and kills a worker that dies or goes silent past its
deadline; a shared slot per worker says which page it was on, so the error
names that page's template.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from render.errors import BuildError, RenderError, TemplateError

_BATCH_PAGES = 64
_CHUNK_MIN, _CHUNK_MAX = 4, 256  # pages handed to a render process at a time
_SHARES = 3  # a chunk is at most 1/(processes * _SHARES) of the pages left
_BATCH_SECONDS = 0.25
_GRACE_SECONDS = 5.0
# SIGXCPU comes within a second of a page's limit; a worker past the limit by this
# much CPU time is stuck where the signal cannot interrupt it (one long C call).
_CPU_GRACE_SECONDS = 2.0
# Where a worker's CPU time can be read, the wall-clock deadline is only a backstop:
# on a busy machine a page well under its CPU limit can take several times as long.
_WALL_FACTOR = 4


@dataclass(frozen=True, kw_only=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int
    page_max_bytes: int


class CpuExceeded(Exception):
    """Raised in a worker by SIGXCPU when a page has used up its CPU time."""


def _on_sigxcpu(_signum: int, _frame: object) -> None:
    raise CpuExceeded()


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def arm_cpu_limit(seconds: int) -> None:
    """Allow the current page ``seconds`` more CPU seconds (soft limit; SIGXCPU after)."""
    soft = int(_cpu_used()) + seconds + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def disarm_cpu_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))


# A task is (index, spec); a worker's ``factory`` builds a ``handle(spec) -> result``,
# which may have a ``flush()`` that the worker calls before it reports a chunk done.
Handler = Callable[[Any], Any]
Factory = Callable[[], Handler]


def _worker_main(
    conn: multiprocessing.connection.Connection,
    factory: Factory,
    limits: Limits,
    slots: Any,
    slot: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    try:
        handle = factory()
    except BaseException as exc:  # report a failed setup instead of dying silently
        conn.send(("setup-failed", repr(exc)))
        return
    flush = getattr(handle, "flush", None)
    while True:
        message = conn.recv()
        if message is None:
            return
        batch: list[tuple[int, Any]] = []
        last = time.monotonic()
        for index, spec in message:
            slots[slot] = index
            batch.append((index, handle(spec)))
            now = time.monotonic()
            if len(batch) >= _BATCH_PAGES or now - last > _BATCH_SECONDS:
                conn.send(("results", batch))
                batch, last = [], now
        slots[slot] = -1
        if flush is not None:  # what the handler buffered is written before the chunk is done
            try:
                flush()
            except RenderError as exc:  # (a full disk) the parent raises it
                conn.send(("failed", exc))
                continue
        conn.send(("rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
        conn.send(("done", batch))


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    slot: int
    busy: bool = False
    heard: float = 0.0
    cpu: float = 0.0  # its CPU seconds when last heard from

    def hear(self, now: float) -> None:
        self.heard = now
        self.cpu = _cpu_of(self.process.pid) or 0.0

    def overdue(self, now: float, limits: Limits) -> bool:
        """Past the current page's limit: by CPU time where Linux tells it, else by wall time."""
        silent = now - self.heard
        cpu = _cpu_of(self.process.pid)
        if cpu is None:
            return silent > limits.cpu_seconds + _GRACE_SECONDS
        if cpu - self.cpu > limits.cpu_seconds + _CPU_GRACE_SECONDS:
            return True
        return silent > (limits.cpu_seconds + _GRACE_SECONDS) * _WALL_FACTOR


def _cpu_of(pid: int | None) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used, from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def _light_main() -> Iterator[None]:
    """Start render processes without re-running the ``__main__`` script in them.

    A forkserver child re-imports the parent's main module, and for the
    ``render`` console script that means the whole CLI (boto3, APScheduler,
    ...): most of a second per process. Render processes need nothing from
    ``__main__``, so for the length of ``start()`` the main module says it is
    this (already loaded, cheap) module.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    main.__spec__ = importlib.util.find_spec("render._spawn_main")
    try:
        yield
    finally:
        main.__spec__ = None


_PRELOAD = ["render.build.renderer"]


def warm_up() -> None:
    """Start the fork server now, so that its imports run while the caller does other work.

    Render processes fork from one server process that has imported the
    renderer (Jinja and all) once; starting it takes about 0.2 s. Called
    when a site's snapshot is taken, that overlaps the build's planning; the
    pool's first process then starts in milliseconds. It lives as long as
    this process.
    """
    multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    with _light_main():
        multiprocessing.forkserver.ensure_running()


class Pool:
    """Render processes, started early (while the parent plans) and fed chunks later."""

    def __init__(self, factory: Factory, *, limits: Limits) -> None:
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._factory = factory
        self.limits = limits
        self._slots = self._ctx.RawArray("q", 8)
        self._workers: list[_Worker] = []
        self.peak_rss_kb = 0  # the largest render process's peak resident memory
        self.cpu_seconds = 0.0  # CPU time the render processes used, summed when they stop
        # Start the first process in the background: the parent plans meanwhile.
        self._starting: threading.Thread | None = threading.Thread(
            target=self._grow, args=(1,), name="render-pool-start", daemon=True
        )
        self._starting.start()

    def grow(self, count: int) -> None:
        """Have at least ``count`` processes running (at most 8)."""
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        self._grow(count)

    def _grow(self, count: int) -> None:
        while len(self._workers) < min(count, len(self._slots)):
            slot = len(self._workers)
            self._slots[slot] = -1
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=_worker_main,
                args=(child, self._factory, self.limits, self._slots, slot),
                name=f"render-worker-{slot}",
                daemon=True,
            )
            if type(self._factory).__module__ == "__main__":  # it must come from the script
                proc.start()
            else:
                with _light_main():
                    proc.start()
            child.close()
            self._workers.append(_Worker(process=proc, conn=parent, slot=slot))

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        for worker in self._workers:
            if worker.process.is_alive():
                self.cpu_seconds += _cpu_of(worker.process.pid) or 0.0
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []

    def run(
        self,
        specs: Sequence[Any],
        *,
        describe: Callable[[int], str],
        is_error: Callable[[Any], bool],
        progress: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """Handle every spec; results in spec order.

        Stops at the first result for which ``is_error`` is true and returns
        what it has (the caller raises). A worker killed by its limits, or
        silent past its deadline, raises ``TemplateError`` naming
        ``describe(index)``.
        """
        if not specs:
            return []
        self.grow(1)
        pool = self._workers
        slots = self._slots
        limits = self.limits
        indexed = list(enumerate(specs))
        start = 0  # the next spec to hand out
        results: list[Any] = [None] * len(specs)
        failed = False
        while not failed and (start < len(indexed) or any(w.busy for w in pool)):
            for worker in pool:
                if not worker.busy and start < len(indexed):
                    # Chunks shrink as the work runs out (guided scheduling): pages
                    # differ in cost (a tag page lists hundreds of articles), and a
                    # large last chunk would leave the other processes idle.
                    size = (len(indexed) - start) // (len(pool) * _SHARES)
                    size = max(_CHUNK_MIN, min(_CHUNK_MAX, size))
                    worker.conn.send(indexed[start : start + size])
                    start += size
                    worker.busy = True
                    worker.hear(time.monotonic())
            ready = multiprocessing.connection.wait(
                [w.conn for w in pool if w.busy] + [w.process.sentinel for w in pool if w.busy],
                timeout=1.0,
            )
            now = time.monotonic()
            for worker in pool:
                if not worker.busy:
                    continue
                if worker.conn in ready:
                    try:
                        kind, payload = worker.conn.recv()
                    except (EOFError, OSError):
                        _died(worker, slots, describe, limits)
                    if kind == "rss":
                        self.peak_rss_kb = max(self.peak_rss_kb, payload)
                        continue
                    if kind == "setup-failed":
                        raise BuildError(f"a render worker could not start: {payload}")
                    if kind == "failed":
                        raise payload
                    worker.hear(now)
                    for index, result in payload:
                        results[index] = result
                        if is_error(result):
                            failed = True
                    if progress is not None and payload:
                        progress(len(payload))
                    if kind == "done":
                        worker.busy = False
                elif worker.process.sentinel in ready or not worker.process.is_alive():
                    _died(worker, slots, describe, limits)
                elif worker.overdue(now, limits):
                    index = slots[worker.slot]
                    worker.process.kill()
                    raise TemplateError(
                        f"rendering {describe(index)} ran past its limit of {limits.cpu_seconds} CPU seconds and was stopped",
                        hint="simplify the template's loops, or raise [limits] template_cpu_seconds",
                    )
        if failed:
            # workers may still be busy with chunks whose results nobody wants
            self.close()
        return results


def _died(worker: _Worker, slots: Any, describe: Callable[[int], str], limits: Limits) -> None:
    worker.process.join(timeout=2)
    code = worker.process.exitcode
    index = slots[worker.slot]
    what = describe(index) if index >= 0 else "a page"
    if code is not None and code < 0 and -code in (signal.SIGXCPU, signal.SIGKILL):
        reason = f"was killed after its limit of {limits.cpu_seconds} CPU seconds"
    elif code is not None and code < 0:
        reason = f"was killed by signal {signal.Signals(-code).name}"
    else:
        reason = (
            f"stopped unexpectedly (exit code {code}; memory limit {limits.memory_bytes >> 20} MB)"
        )
    raise TemplateError(
        f"rendering {what} {reason}", hint="simplify the template, or raise [limits]"
    )
