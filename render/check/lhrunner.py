"""Running Lighthouse and the no-JavaScript read in real Chromium, under outside limits.

The :class:`Runner` protocol is the seam between choosing what to audit
(:mod:`render.lighthouse`) and auditing it. :class:`ChromiumRunner` is the real
one: it starts ``parallel`` audit workers (:mod:`render.check.auditworker`), each a
process tree of the loopback tree server, one Chromium shared by all of its
audits and one long-lived Lighthouse driver, and hands them pages from one
queue.

The network is cut where the host lets us: as root, each worker runs in its
own network namespace that has nothing but loopback (and its own PID
namespace, so killing it kills every process in it); otherwise Chromium gets
a resolver that resolves nothing and a proxy that refuses, with only the tree
server exempt. A page whose checks run past the limit has its whole worker
tree killed; the next page gets a fresh worker.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from render.build.tree import FileEntry
from render.config import LighthouseConfig
from render.errors import RenderError

DEFAULT_CHROMIUM = "/usr/bin/chromium"
_DRIVER = Path(__file__).parent.parent / "assets" / "lighthouse-driver.mjs"
_NAMESPACE = ("unshare", "--net", "--pid", "--fork", "--kill-child")
_PARITY_SECONDS = 30.0
_START_SECONDS = 60.0  # starting the browser is not the page's fault: a limit of its own
_TAIL = 2000


class NetworkBlock(enum.Enum):
    """How the audited browser was kept off the network."""

    namespace = "namespace"  # a network namespace with only loopback (needs root)
    browser = "browser"  # Chromium settings: resolver maps all to nothing, refusing proxy


class Method(enum.Enum):
    """How Lighthouse is driven; ``node`` measured fastest (see bench/lighthouse.py)."""

    node = "node"  # Lighthouse's Node API in one long-lived process, shared Chromium
    cli = "cli"  # Lighthouse's CLI per page against the shared Chromium (--port)
    cli_fresh = "cli-fresh"  # Lighthouse's CLI per page, a new Chromium each time


class FailureKind(enum.Enum):
    timeout = "timeout"  # ran past the limit; its process tree was killed
    crash = "crash"  # Lighthouse, the browser or the worker failed


@dataclass(frozen=True, kw_only=True)
class AuditJob:
    path: str  # output file of the page: posts/x/index.html
    url: str  # URL path: /posts/x/
    runs: int  # Lighthouse runs; 0 = only the no-JavaScript read
    parity: bool = True


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """One Lighthouse run of one page."""

    scores: Mapping[str, float | None]
    metrics: Mapping[str, float | None]
    html: bytes | None
    error: str | None = None  # Lighthouse's runtime error, when it reported one


@dataclass(frozen=True, kw_only=True)
class JobFailure:
    kind: FailureKind
    message: str
    stderr_tail: str = ""


@dataclass(frozen=True, kw_only=True)
class JobResult:
    path: str
    runs: tuple[RunResult, ...] = ()
    js_on: str | None = None  # main text with JavaScript
    js_off: str | None = None  # visible text without JavaScript
    failure: JobFailure | None = None
    seconds: float = 0.0
    # seconds: startup, lighthouse (all runs), traced (into the first run), parity
    timings: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    results: Mapping[str, JobResult]
    network: NetworkBlock
    method: Method
    seconds: float = 0.0
    workers: int = 0  # worker processes started (a killed one is replaced)


class Runner(Protocol):
    """Audits pages of a tree; the real one is :class:`ChromiumRunner`."""

    def run(
        self,
        files: Mapping[str, FileEntry],
        objects: Path,
        jobs: Sequence[AuditJob],
        *,
        config: LighthouseConfig,
        progress: Callable[[str], None] | None = None,
    ) -> RunOutcome: ...


@dataclass(frozen=True, kw_only=True)
class Tools:
    chromium: str
    node: str
    lighthouse: Path  # the lighthouse package folder in node_modules


def find_tools(config: LighthouseConfig) -> Tools:
    """Chromium, Node and Lighthouse, or a RenderError saying to run ``make setup``."""
    chromium = config.chromium or os.environ.get("RENDER_CHROMIUM") or DEFAULT_CHROMIUM
    resolved = shutil.which(chromium)
    if resolved is None:
        raise RenderError(
            f"Chromium not found at {chromium} ([lighthouse] chromium, $RENDER_CHROMIUM)",
            stage="check",
            hint="run `make setup` (installs Debian's chromium), or set [lighthouse] chromium",
        )
    node = shutil.which("node")
    lighthouse = find_lighthouse()
    if node is None or lighthouse is None:
        missing = "node" if node is None else "node_modules/lighthouse"
        raise RenderError(
            f"{missing} not found: Lighthouse 12.8.2 runs on Node from the project's node_modules",
            stage="check",
            hint="run `make setup` (npm install from package-lock.json)",
        )
    return Tools(chromium=resolved, node=node, lighthouse=lighthouse)


def find_lighthouse() -> Path | None:
    """$RENDER_LIGHTHOUSE, else node_modules/lighthouse of the checkout, else of the cwd."""
    candidates = [os.environ.get("RENDER_LIGHTHOUSE", "")]
    candidates += [
        str(Path(__file__).resolve().parent.parent.parent / "node_modules" / "lighthouse")
    ]
    candidates += [str(Path.cwd() / "node_modules" / "lighthouse")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "core" / "index.js").is_file():
            return Path(candidate)
    return None


@functools.cache
def namespace_prefix() -> tuple[str, ...] | None:
    """The ``unshare`` command that gives a child its own network and PID namespaces, if any.

    Root makes them directly; another user through a user namespace where the
    kernel allows those. None when neither works (a container without the
    capability): then the browser settings block the network instead.
    """
    if shutil.which("unshare") is None:
        return None
    candidates: list[tuple[str, ...]] = [_NAMESPACE] if os.geteuid() == 0 else []
    candidates.append(("unshare", "--user", "--map-root-user", *_NAMESPACE[1:]))
    for prefix in candidates:
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    return None


def namespace_available() -> bool:
    """Whether audits here run in a network namespace with only loopback."""
    return namespace_prefix() is not None


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a worker, its process group and every descendant (Chromium detaches its own)."""
    pids = process_tree(proc.pid) if proc.poll() is None else []
    for target in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10  # SIGKILL is delivered at once but exits take a moment
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class _AuditWorker:
    """One audit worker process and the thread reading its replies."""

    def __init__(self, argv: list[str], stderr: Path) -> None:
        self.stderr = stderr
        self.ready = False  # its first line (browser up, tree served) has arrived
        self._err: IO[bytes] = open(stderr, "wb")  # noqa: SIM115 - closed in close()/kill()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self._lines.put(line)
        self._lines.put(None)

    def reply(self, seconds: float) -> dict[str, Any] | None:
        """The next reply; None when the worker exited; TimeoutError past ``seconds``."""
        try:
            line = self._lines.get(timeout=seconds)
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            return None
        data: dict[str, Any] = json.loads(line)
        return data

    def send(self, job: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()

    def tail(self) -> str:
        self._err.flush()
        try:
            return self.stderr.read_text(errors="replace")[-_TAIL:].strip()
        except OSError:
            return ""

    def kill(self) -> None:
        kill_tree(self.proc)
        self._err.close()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


@dataclass(kw_only=True)
class ChromiumRunner:
    """The real runner: Lighthouse and Playwright in Debian's Chromium."""

    tools: Tools
    method: Method = Method.node
    network: NetworkBlock | None = None  # None: a namespace where possible, else browser settings
    marker: str = field(
        default_factory=lambda: f"--render-audit={os.getpid()}-{time.monotonic_ns()}"
    )

    @classmethod
    def from_config(cls, config: LighthouseConfig, **kwargs: Any) -> ChromiumRunner:
        return cls(tools=find_tools(config), **kwargs)

    def run(
        self,
        files: Mapping[str, FileEntry],
        objects: Path,
        jobs: Sequence[AuditJob],
        *,
        config: LighthouseConfig,
        progress: Callable[[str], None] | None = None,
    ) -> RunOutcome:
        started = time.monotonic()
        network = self.network
        if network is None:
            network = NetworkBlock.namespace if namespace_available() else NetworkBlock.browser
        results: dict[str, JobResult] = {}
        todo = deque(jobs)
        lock = threading.Lock()
        started_workers = [0]
        with tempfile.TemporaryDirectory(prefix="render-lighthouse-") as tmp:
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(json.dumps(self._spec(files, objects, config, network, Path(tmp))))
            argv = [sys.executable, "-m", "render.check.auditworker", str(spec_path)]
            if network is NetworkBlock.namespace:
                prefix = namespace_prefix()
                if prefix is None:
                    raise RenderError(
                        "cannot make a network namespace here",
                        stage="check",
                        hint="leave the network method to render (browser settings are used)",
                    )
                argv = [*prefix, *argv]

            live: set[_AuditWorker] = set()
            crashed: list[BaseException] = []
            stop = threading.Event()

            def slot(number: int) -> None:
                worker: _AuditWorker | None = None
                try:
                    while not stop.is_set():
                        with lock:
                            if not todo:
                                return
                            job = todo.popleft()
                            started_workers[0] += worker is None
                            incarnation = started_workers[0]
                        if worker is None:
                            err = Path(tmp) / f"worker-{number}-{incarnation}.err"
                            worker = _AuditWorker(argv, err)
                            with lock:
                                live.add(worker)
                        result, healthy = self._one(worker, job, config=config)
                        if not healthy:
                            with lock:
                                live.discard(worker)
                            worker.kill()
                            worker = None
                        with lock:
                            results[job.path] = result
                            done = len(results)
                        if progress is not None:
                            state = result.failure.kind.value if result.failure else "ok"
                            progress(f"lighthouse {job.url} {state} ({done}/{len(jobs)})")
                except BaseException as exc:  # a bug here: re-raised by run() after cleanup
                    crashed.append(exc)
                finally:
                    if worker is not None:
                        with lock:
                            live.discard(worker)
                        worker.close()

            threads = [
                threading.Thread(target=slot, args=(n,), name=f"render-audit-{n}")
                for n in range(max(1, min(config.parallel, len(jobs))))
            ]
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    thread.join()
            except BaseException:  # Ctrl-C: no browser may outlive us
                stop.set()
                with lock:
                    doomed = list(live)
                for worker in doomed:
                    kill_tree(worker.proc)
                for thread in threads:
                    thread.join()
                raise
            if crashed:
                raise crashed[0]
        ordered = {job.path: results[job.path] for job in jobs}
        return RunOutcome(
            results=ordered,
            network=network,
            method=self.method,
            seconds=time.monotonic() - started,
            workers=started_workers[0],
        )

    def _spec(
        self,
        files: Mapping[str, FileEntry],
        objects: Path,
        config: LighthouseConfig,
        network: NetworkBlock,
        out: Path,
    ) -> dict[str, Any]:
        return {
            "files": {p: [e.hash, e.type] for p, e in files.items()},
            "objects": str(objects.resolve()),
            "out": str(out),
            "chromium": self.tools.chromium,
            "node": self.tools.node,
            "driver": str(_DRIVER),
            "lighthouse": str(self.tools.lighthouse),
            "form_factor": config.form_factor,
            "settle_ms": config.settle_ms,
            "method": self.method.value,
            "network": network.value,
            "marker": self.marker,
            "nav_timeout": min(float(config.timeout), _PARITY_SECONDS),
        }

    def _one(
        self, worker: _AuditWorker, job: AuditJob, *, config: LighthouseConfig
    ) -> tuple[JobResult, bool]:
        """Run one job; the bool says whether the worker may take another."""
        started = time.monotonic()
        limit = float(config.timeout) * max(1, job.runs)
        limit += min(float(config.timeout), _PARITY_SECONDS) if job.parity else 0.0

        def failed(kind: FailureKind, message: str) -> tuple[JobResult, bool]:
            failure = JobFailure(kind=kind, message=message, stderr_tail=worker.tail())
            return JobResult(
                path=job.path, failure=failure, seconds=time.monotonic() - started
            ), False

        timings: dict[str, float] = {}
        try:
            if not worker.ready:
                startup = max(float(config.timeout), _START_SECONDS)
                try:
                    ready = worker.reply(startup)
                except TimeoutError:
                    return failed(
                        FailureKind.timeout, f"the browser did not start in {startup:.0f} s"
                    )
                if ready is None:
                    return failed(FailureKind.crash, "the audit browser exited while starting")
                worker.ready = True
                timings["startup"] = float(ready.get("seconds", 0.0))
            sent = time.monotonic()
            worker.send({"id": 1, "url": job.url, "runs": job.runs, "parity": job.parity})
            reply = worker.reply(limit)
        except TimeoutError:
            waited = time.monotonic() - sent
            return failed(
                FailureKind.timeout, f"the checks took longer than {waited:.0f} s; killed"
            )
        except (OSError, ValueError) as exc:
            return failed(FailureKind.crash, f"the audit worker failed: {exc}")
        if reply is None:
            return failed(
                FailureKind.crash, f"the audit worker exited with status {worker.proc.poll()}"
            )
        if reply.get("error"):
            return failed(FailureKind.crash, str(reply["error"]))
        runs = tuple(_run_result(r) for r in reply["runs"])
        parity = reply.get("parity") or {}
        result = JobResult(
            path=job.path,
            runs=runs,
            js_on=parity.get("js_on"),
            js_off=parity.get("js_off"),
            seconds=time.monotonic() - started,
            timings={**timings, **reply.get("timings", {})},
        )
        return result, True


def _run_result(data: Mapping[str, Any]) -> RunResult:
    html = None
    if data.get("html"):
        report = Path(data["html"])
        html = report.read_bytes()
        report.unlink()
    return RunResult(
        scores=dict(data.get("scores") or {}),
        metrics=dict(data.get("metrics") or {}),
        html=html,
        error=data.get("error"),
    )
