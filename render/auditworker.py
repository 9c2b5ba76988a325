"""The audit worker: one process that serves a tree, runs a browser and audits pages.

``python -m render.auditworker SPEC`` is started by :mod:`render.lhrunner`,
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
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from render.serving import LOOPBACK, serve, tree_resolver
from render.tree import FileEntry

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
    """The long-lived Node process that runs Lighthouse's Node API."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._proc = subprocess.Popen(
            [spec["node"], spec["driver"], spec["lighthouse"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        self._lock = threading.Lock()
        self._next = 0

    def audit(self, url: str, *, port: int, form_factor: str, html: Path) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            self._next += 1
            job = {
                "id": self._next,
                "url": url,
                "port": port,
                "form_factor": form_factor,
                "html": str(html),
            }
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Lighthouse driver exited with status {self._proc.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

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
        spec["node"], str(Path(spec["lighthouse"]) / "cli" / "index.js"), url,
        "--output=json", "--output=html", f"--output-path={base}", "--quiet",
        f"--only-categories={','.join(CATEGORIES)}",
        "--disable-full-page-screenshot", "--skip-audits=bf-cache",  # as the Node driver does
    ]  # fmt: skip
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


def _read_text(browser: Any, url: str, *, javascript: bool, timeout_ms: int) -> str:
    context = browser.new_context(java_script_enabled=javascript)
    try:
        page = context.new_page()
        page.goto(url, wait_until="load", timeout=timeout_ms)
        if javascript:
            with contextlib.suppress(Exception):  # pages that keep polling never go idle
                page.wait_for_load_state("networkidle", timeout=2000)
            return str(page.evaluate(_MAIN_TEXT))
        return str(page.evaluate(_BODY_TEXT))
    finally:
        context.close()


def _job(
    spec: Mapping[str, Any],
    job: Mapping[str, Any],
    url: str,
    browser: Any,
    driver: _NodeDriver | None,
    flags: list[str],
    debug_port: int,
) -> dict[str, Any]:
    runs = []
    started = time.monotonic()
    for n in range(job["runs"]):
        html = Path(spec["out"]) / f"report-{uuid.uuid4().hex}-{n}.html"
        if driver is not None:
            run = driver.audit(url, port=debug_port, form_factor=spec["form_factor"], html=html)
        else:
            port = None if spec["method"] == "cli-fresh" else debug_port
            chrome_flags = [*BROWSER_FLAGS, *flags, spec["marker"]]
            run = _cli_audit(spec, url, port=port, chrome_flags=chrome_flags, html=html)
        run["html"] = str(html) if html.exists() else None
        runs.append(run)
    timings = {"lighthouse": time.monotonic() - started}
    started = time.monotonic()
    parity = None
    if job["parity"]:
        timeout_ms = int(spec["nav_timeout"] * 1000)
        parity = {
            "js_on": _read_text(browser, url, javascript=True, timeout_ms=timeout_ms),
            "js_off": _read_text(browser, url, javascript=False, timeout_ms=timeout_ms),
        }
    timings["parity"] = time.monotonic() - started
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
        serve(tree_resolver(files, Path(spec["objects"]))) as server,
        contextlib.ExitStack() as stack,
    ):
        flags: list[str] = []
        if spec["network"] == "browser":
            dead = stack.enter_context(socket.socket())
            dead.bind((LOOPBACK, 0))  # bound, never listening: the proxy that refuses
            flags = blocking_flags(server.port, dead.getsockname()[1])
        debug_port = _free_port()
        browser = stack.enter_context(_browser(spec, flags, debug_port))
        driver = _NodeDriver(spec) if spec["method"] == "node" else None
        if driver is not None:
            stack.callback(driver.close)
        _reply(out, {"ready": True, "url": server.url, "seconds": time.monotonic() - started})
        for line in sys.stdin:
            if not line.strip():
                continue
            job = json.loads(line)
            try:
                reply = _job(spec, job, server.url + job["url"], browser, driver, flags, debug_port)
            except Exception as exc:  # reported to the parent, which replaces this worker
                reply = {"id": job["id"], "error": f"{type(exc).__name__}: {exc}"}
            _reply(out, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
