"""The audit worker: one process that serves a tree, runs a browser and audits pages.

``python -m render.check.auditworker SPEC`` is started by :mod:`render.check.lhrunner`,
inside a private network namespace when the host allows one (then only this
process tree exists on its loopback: the tree server, Chromium, Lighthouse).
It reads one job per line on stdin and answers one JSON line per job on
stdout; its first line says it is ready. The parent enforces every time
limit from outside and kills the whole process tree on a hang, so nothing
here needs a timeout of its own beyond Playwright's navigation limits.

Driving methods (measured by ``bench/lighthouse.py``):

- ``node``: one long-lived Node process (``assets/lighthouse-driver.mjs``)
  calls Lighthouse's Node API against the shared Chromium.
- ``cli``: Lighthouse's CLI per page, against the shared Chromium (``--port``).
- ``cli-fresh``: Lighthouse's CLI per page, launching its own Chromium.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from render.build.objects import Objects
from render.build.tree import FileEntry
from render.check.loopback import LOOPBACK, serve, tree_resolver

BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
_METRICS = {
    "lcp": "largest-contentful-paint",
    "cls": "cumulative-layout-shift",
    "tbt": "total-blocking-time",
    "fcp": "first-contentful-paint",
    "speed_index": "speed-index",
}
_MAIN_TEXT = (
    "() => (document.querySelector('main') || document.body || document.documentElement).innerText"
)
_BODY_TEXT = "() => (document.body || document.documentElement).innerText"
_SEMI_SPACE = "--max-semi-space-size=64"
_SETTLE_LIMIT = 2.0  # seconds the JavaScript read waits for the network to go quiet


def loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (it starts down)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH", fcntl.ioctl(sock, siocgifflags, request)[:18])[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


def blocking_flags(serving_port: int, dead_port: int) -> list[str]:
    """Chromium settings that keep every request but the tree server's off the network."""
    return [
        f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {LOOPBACK}",
        f"--proxy-server=http://{LOOPBACK}:{dead_port}",
        f"--proxy-bypass-list=<-loopback>;{LOOPBACK}:{serving_port}",  # this order only
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _reply(out: IO[str], data: Mapping[str, Any]) -> None:
    out.write(json.dumps(data) + "\n")
    out.flush()


class _NodeDriver:
    """The long-lived Node process that runs Lighthouse's Node API.

    ``start`` hands it a page and returns at once; ``traced`` waits until
    Lighthouse has recorded the page load (the trace the scores come from), so
    that the worker can read the page itself while Lighthouse gathers the rest
    and scores; ``result`` waits for the scores.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._proc = subprocess.Popen(
            # A larger young generation than Node's 16 MB: Lighthouse's trace processing
            # allocates fast, and fewer scavenges made runs here up to a seventh faster.
            [spec["node"], _SEMI_SPACE, spec["driver"], spec["lighthouse"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        self._next = 0
        self._result: dict[str, Any] | None = None  # read while waiting for "traced"

    def start(self, url: str, *, port: int, form_factor: str, settle_ms: int, html: Path) -> None:
        assert self._proc.stdin is not None
        self._next += 1
        job = {
            "id": self._next,
            "url": url,
            "port": port,
            "form_factor": form_factor,
            "settle_ms": settle_ms,
            "html": str(html),
        }
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()

    def traced(self) -> None:
        """Wait until the page load is recorded, or the run ended without it."""
        while self._result is None:
            line = self._line()
            if line.get("event") != "traced":
                self._result = line
            elif line.get("id") == self._next:
                return

    def result(self) -> dict[str, Any]:
        while self._result is None:
            line = self._line()
            if line.get("event") is None:
                self._result = line
        result, self._result = self._result, None
        return result

    def _line(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Lighthouse driver exited with status {self._proc.wait()}")
        data: dict[str, Any] = json.loads(line)
        return data

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _cli_audit(
    spec: Mapping[str, Any], url: str, *, port: int | None, chrome_flags: list[str], html: Path
) -> dict[str, Any]:
    """One Lighthouse CLI run; ``port=None`` lets it launch its own Chromium."""
    base = html.with_suffix("")
    argv = [
        spec["node"],
        str(Path(spec["lighthouse"]) / "cli" / "index.js"),
        url,
        "--output=json",
        "--output=html",
        f"--output-path={base}",
        "--quiet",
        f"--only-categories={','.join(CATEGORIES)}",
        "--disable-full-page-screenshot",
        "--skip-audits=bf-cache",  # as the Node driver does
    ]
    if spec["form_factor"] == "desktop":
        argv.append("--preset=desktop")
    env = dict(os.environ)
    if port is None:
        env["CHROME_PATH"] = spec["chromium"]
        argv.append("--chrome-flags=" + " ".join(_quoted(f) for f in chrome_flags))
    else:
        argv += [f"--port={port}", f"--hostname={LOOPBACK}"]
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr, check=False)
    report = Path(f"{base}.report.json")
    if done.returncode != 0 or not report.exists():
        return {
            "scores": None,
            "metrics": None,
            "error": f"lighthouse exited with status {done.returncode}",
        }
    lhr = json.loads(report.read_text())
    report.unlink()
    Path(f"{base}.report.html").replace(html)
    scores = {c: (lhr["categories"].get(c) or {}).get("score") for c in CATEGORIES}
    metrics = {k: (lhr["audits"].get(a) or {}).get("numericValue") for k, a in _METRICS.items()}
    error = lhr.get("runtimeError")
    return {
        "scores": scores,
        "metrics": metrics,
        "error": f"{error['code']}: {error['message']}" if error else None,
    }


def _quoted(flag: str) -> str:
    """``--name=value with spaces`` as Lighthouse's ``--chrome-flags`` parser wants it."""
    name, eq, value = flag.partition("=")
    return f'{name}="{value}"' if eq and " " in value else flag


@contextlib.contextmanager
def _browser(spec: Mapping[str, Any], flags: list[str], debug_port: int) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=spec["chromium"],
            headless=True,
            args=[*BROWSER_FLAGS, *flags, f"--remote-debugging-port={debug_port}", spec["marker"]],
        )
        try:
            yield browser
        finally:
            browser.close()


class _Reader:
    """The no-JavaScript read: each page's main text with JavaScript, its visible text without.

    Two browser contexts (JavaScript on, off) with one tab each serve all of a
    worker's pages; a new tab costs a renderer process, about a third of a
    second. After each page the tabs go back to about:blank, and before the
    next the site's cookies and storage are cleared, so that every page is
    read as on a first visit, as a crawler reads it. The tabs open at the first
    read, which comes once Lighthouse has recorded the first page: not while
    the worker starts.
    """

    def __init__(self, browser: Any, *, origin: str, timeout_ms: int, settle_ms: int) -> None:
        self._browser = browser
        self._origin = origin
        self._timeout_ms = timeout_ms
        self._settle = settle_ms / 1000
        self._contexts: list[Any] = []
        self._inflight: set[Any] = set()
        self._activity = time.monotonic()

    def _open(self) -> None:
        self._contexts = [self._browser.new_context(java_script_enabled=js) for js in (True, False)]
        self._on, self._off = (context.new_page() for context in self._contexts)
        self._cdp = self._contexts[0].new_cdp_session(self._on)
        self._on.on("request", self._started)
        self._on.on("requestfinished", self._ended)
        self._on.on("requestfailed", self._ended)

    def _started(self, request: Any) -> None:
        self._inflight.add(request)
        self._activity = time.monotonic()

    def _ended(self, request: Any) -> None:
        self._inflight.discard(request)
        self._activity = time.monotonic()

    def read(self, url: str) -> dict[str, str]:
        if not self._contexts:
            self._open()
        try:
            return self._read(url)
        finally:  # nothing of the page may run on while Lighthouse records the next one
            for page in (self._on, self._off):
                page.goto("about:blank")

    def _read(self, url: str) -> dict[str, str]:
        for context in self._contexts:
            context.clear_cookies()
        self._cdp.send(
            "Storage.clearDataForOrigin", {"origin": self._origin, "storageTypes": "all"}
        )
        self._inflight.clear()
        self._on.goto(url, wait_until="commit", timeout=self._timeout_ms)
        self._off.goto(url, wait_until="commit", timeout=self._timeout_ms)  # both load at once
        self._off.wait_for_load_state("load", timeout=self._timeout_ms)
        js_off = str(self._off.evaluate(_BODY_TEXT))
        self._on.wait_for_load_state("load", timeout=self._timeout_ms)
        self._settled()
        return {"js_on": str(self._on.evaluate(_MAIN_TEXT)), "js_off": js_off}

    def _settled(self) -> None:
        """Wait until no request has been open for ``settle_ms``, or 2 s at most.

        Pages that keep polling never go quiet; what their scripts wrote by
        then is what is read.
        """
        deadline = time.monotonic() + _SETTLE_LIMIT
        while time.monotonic() < deadline:
            quiet = time.monotonic() - self._activity
            if not self._inflight and quiet >= self._settle:
                return
            self._on.wait_for_timeout(50)  # lets Playwright deliver the request events


def _job(
    spec: Mapping[str, Any],
    job: Mapping[str, Any],
    url: str,
    reader: _Reader,
    driver: _NodeDriver | None,
    flags: list[str],
    debug_port: int,
) -> dict[str, Any]:
    runs = []
    timings = {}
    parity = None

    def read() -> dict[str, str]:
        began = time.monotonic()
        texts = reader.read(url)
        timings["parity"] = time.monotonic() - began
        return texts

    started = time.monotonic()
    for n in range(job["runs"]):
        html = Path(spec["out"]) / f"report-{uuid.uuid4().hex}-{n}.html"
        if driver is not None:
            driver.start(
                url,
                port=debug_port,
                form_factor=spec["form_factor"],
                settle_ms=spec["settle_ms"],
                html=html,
            )
            if job["parity"] and parity is None:  # in tabs of its own while Lighthouse scores
                driver.traced()
                timings["traced"] = time.monotonic() - started
                parity = read()
            run = driver.result()
        else:
            port = None if spec["method"] == "cli-fresh" else debug_port
            chrome_flags = [*BROWSER_FLAGS, *flags, spec["marker"]]
            run = _cli_audit(spec, url, port=port, chrome_flags=chrome_flags, html=html)
        run["html"] = str(html) if html.exists() else None
        runs.append(run)
    timings["lighthouse"] = time.monotonic() - started
    if job["parity"] and parity is None:
        parity = read()
    return {"id": job["id"], "runs": runs, "parity": parity, "timings": timings}


def main(spec_path: str) -> int:
    started = time.monotonic()
    spec = json.loads(Path(spec_path).read_text())
    if spec["network"] == "namespace":
        loopback_up()
    files = MappingProxyType(
        {p: FileEntry(hash=h, size=0, type=t) for p, (h, t) in spec["files"].items()}
    )
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but replies may reach the protocol stream
    with (
        serve(tree_resolver(files, Objects(Path(spec["objects"])))) as server,
        contextlib.ExitStack() as stack,
    ):
        flags: list[str] = []
        if spec["network"] == "browser":
            dead = stack.enter_context(socket.socket())
            dead.bind((LOOPBACK, 0))  # bound, never listening: the proxy that refuses
            flags = blocking_flags(server.port, dead.getsockname()[1])
        debug_port = _free_port()
        driver = _NodeDriver(spec) if spec["method"] == "node" else None
        if driver is not None:  # loads Lighthouse while the browser starts
            stack.callback(driver.close)
        browser = stack.enter_context(_browser(spec, flags, debug_port))
        reader = _Reader(
            browser,
            origin=server.url,
            timeout_ms=int(spec["nav_timeout"] * 1000),
            settle_ms=spec["settle_ms"],
        )
        _reply(out, {"ready": True, "url": server.url, "seconds": time.monotonic() - started})
        for line in sys.stdin:
            if not line.strip():
                continue
            job = json.loads(line)
            try:
                reply = _job(spec, job, server.url + job["url"], reader, driver, flags, debug_port)
            except Exception as exc:  # reported to the parent, which replaces this worker
                reply = {"id": job["id"], "error": f"{type(exc).__name__}: {exc}"}
            _reply(out, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
