"""Helpers for the scheduler and lock tests: hosts on disk and runners passed through the seam.

The runners have ``render.pipeline.run_site``'s signature. ``record_runner``
takes the real site lock and appends one JSON line per build (site, reason,
pid, enter and exit times) to ``<state>/runs.jsonl`` while still holding it.
``publish_runner`` publishes a new version of a small tree with the real
``render.publish.versions.publish_tree`` into a real ``LocalStore``, slowly, and gives
up before the root switch when ``should_stop()`` says so: what the pipeline
does with SIGTERM.

Run as a script, it is "another process" for the tests:

    python schedkit.py force CONFIG SITE COUNT   # COUNT forced builds, waiting for the lock
    python schedkit.py hold STATE SITE READY     # hold a site lock until killed
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from render.build.tree import FileEntry, content_type, write_object
from render.config import HostConfig, SiteConfig, find_site, load_host, load_site
from render.publish.store import LocalStore
from render.run.locks import site_lock

RUNS = "runs.jsonl"


def write_host(
    root: Path,
    *,
    sites: Mapping[str, Mapping[str, object]],
    schedule: Mapping[str, object] | None = None,
) -> Path:
    """Write ``render.toml`` and one ``site.toml`` per ``owner/name``; return the host file."""
    sched = {"jitter": 0, "workers": 2, "poll": 1, "debounce": 2, **(schedule or {})}
    lines = ["[host]", 'state = "state"', "", "[schedule]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in sched.items()]
    (root / "render.toml").write_text("\n".join(lines) + "\n")
    for key, site in sites.items():
        write_site(root, key, site)
    return root / "render.toml"


def write_site(root: Path, key: str, site: Mapping[str, object]) -> Path:
    folder = root / "sites" / key
    folder.mkdir(parents=True, exist_ok=True)
    values = {"base_url": f"https://{key.replace('/', '-')}.example", **site}
    text = "[site]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    tmp = folder / "site.toml.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / "site.toml")  # a running daemon never reads half a file
    return folder


def runs(state: Path) -> list[dict[str, Any]]:
    path = state / RUNS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Outcome(Enum):
    published = "published"
    abandoned = "abandoned"


@dataclass(frozen=True, kw_only=True)
class Report:
    """What the daemon reads of a build (``render.scheduler.RunSummary``)."""

    outcome: Outcome
    seconds: float
    version: str | None = None
    pages: int = 0
    rendered: int = 0
    reused: int = 0


def record_runner(
    site: SiteConfig,
    *,
    host: HostConfig,
    reason: str,
    force: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Report:
    """Hold the real site lock for ``$SCHEDKIT_HOLD`` seconds and record the build."""
    hold = float(os.environ.get("SCHEDKIT_HOLD", "0.05"))
    with site_lock(host.state_dir, site.id, wait=True, reason=reason):
        enter = time.time()
        time.sleep(hold)  # the build's work
        line = {
            "site": str(site.id),
            "reason": reason,
            "pid": os.getpid(),
            "enter": enter,
            "exit": time.time(),
        }
        fd = os.open(host.state_dir / RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
    return Report(outcome=Outcome.published, seconds=time.time() - enter)


# --- a slow publish that honours should_stop before the root switch ------------


class Abandoned(Exception):
    pass


class SlowStore:
    """A ``LocalStore`` whose writes take time, and whose root switch asks ``should_stop`` first."""

    def __init__(
        self, inner: LocalStore, *, delay: float, should_stop: Callable[[], bool], marker: Path
    ) -> None:
        self._inner = inner
        self._delay = delay
        self._should_stop = should_stop
        self._marker = marker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def put(self, key: str, data: bytes, **kw: Any) -> None:
        self._marker.touch()
        time.sleep(self._delay)
        self._inner.put(key, data, **kw)

    def put_file(self, key: str, path: Path, **kw: Any) -> None:
        self._marker.touch()
        time.sleep(self._delay)
        self._inner.put_file(key, path, **kw)

    def put_if(self, key: str, data: bytes, **kw: Any) -> bool:
        if key.endswith("root.json") and self._should_stop():
            raise Abandoned(key)
        return self._inner.put_if(key, data, **kw)


def version_files(objects: Path, label: str, count: int) -> dict[str, FileEntry]:
    """``count`` pages whose bytes all name ``label``."""
    objects.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(count):
        data = f"<p>{label} page {i}</p>\n".encode()
        digest = write_object(objects, data)
        path = f"p{i}/index.html"
        files[path] = FileEntry(hash=digest, size=len(data), type=content_type(path))
    return files


def publish_runner(
    site: SiteConfig,
    *,
    host: HostConfig,
    reason: str,
    force: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Report:
    """Publish a new version (labelled by the run's start time) slowly through the real publish."""
    from render.publish.versions import publish_tree

    started = time.monotonic()
    label = f"{reason}-{time.time_ns()}"
    objects = host.state_dir / "objects"
    files = version_files(objects, label, int(os.environ.get("SCHEDKIT_FILES", "40")))
    store = SlowStore(
        LocalStore(host.store_path),
        delay=float(os.environ.get("SCHEDKIT_DELAY", "0.05")),
        should_stop=should_stop or (lambda: False),
        marker=host.state_dir / "publishing",
    )
    with site_lock(host.state_dir, site.id, wait=True, reason=reason):
        try:
            pub = publish_tree(
                files,
                objects,
                owner=site.id.owner,
                name=site.id.name,
                base_url=site.base_url,
                store=store,
                ledger=None,
            )  # type: ignore[arg-type]
        except Abandoned:
            return Report(outcome=Outcome.abandoned, seconds=time.monotonic() - started)
    return Report(
        outcome=Outcome.published, seconds=time.monotonic() - started, version=pub.version
    )


def main(argv: list[str]) -> int:
    command = argv[0]
    if command == "force":
        config, name, count = argv[1], argv[2], int(argv[3])
        host = load_host(config)
        site = load_site(find_site(host, name), host=host)
        for _ in range(count):
            record_runner(site, host=host, reason="force")
        return 0
    if command == "hold":
        state, name, ready = Path(argv[1]), argv[2], Path(argv[3])
        with site_lock(state, name, wait=False, reason="force"):
            ready.touch()
            time.sleep(600)
        return 0
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
