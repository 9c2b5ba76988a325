"""The service worker in real Chromium: a visit stays on one version; a new one starts on the newest.

The demo site is built and published into a local store and served by
``render serve``'s resolver on 127.0.0.1 (a secure context, so service workers
run). Version 2 changes the stylesheet and one post. Every wait returns as
soon as its condition holds; the deadlines are bounds, not measurements.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require

from render import builder
from render.build import snapshot
from render.check.auditworker import BROWSER_FLAGS
from render.check.loopback import Response, serve
from render.config import load_host, load_site, site_dirs
from render.demo import init_host
from render.publish.gc import gc
from render.publish.store import LocalStore
from render.publish.versions import publish
from render.serve.live import LiveSites

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("RENDER_CHROMIUM", "/usr/bin/chromium")
DEADLINE = 30.0  # seconds; reached only when something is wrong
EDITION = "() => getComputedStyle(document.documentElement).getPropertyValue('--edition').trim()"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=list(BROWSER_FLAGS))
        try:
            yield chromium
        finally:
            chromium.close()


class Demo:
    """The demo host, its store, and a publish of what its folder holds now."""

    def __init__(self, root: Path) -> None:
        init_host(root, demo=True)
        self.host = load_host(root / "render.toml")
        self.site = load_site(site_dirs(self.host)[0], host=self.host)
        self.store = LocalStore(root / "store")
        db = sqlite3.connect(self.site.database)
        try:
            self.slug = db.execute("select slug from posts where draft = 0 order by id").fetchone()[
                0
            ]
        finally:
            db.close()

    def publish(self) -> str:
        site = load_site(site_dirs(self.host)[0], host=self.host)
        into = self.host.state_dir / "snapshots" / "demo" / "blog"
        with snapshot.take(site, into=into) as snap:
            build = builder.build(site, snap, host=self.host)
        return publish(build, store=self.store, ledger=None).version

    def change(self) -> None:
        """Version 2: a changed stylesheet and a changed post."""
        css = self.site.static / "css" / "site.css"
        css.write_text(css.read_text() + "\n:root{--edition:v2}\n")
        db = sqlite3.connect(self.site.database)
        try:
            with db:
                db.execute("update posts set title = 'Edition two' where slug = ?", (self.slug,))
        finally:
            db.close()


class Logged:
    """The live sites' resolver, remembering each (path, status, version) it answered."""

    def __init__(self, live: LiveSites) -> None:
        self.live = live
        self.seen: list[tuple[str, int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, host: str, path: str) -> Response:
        answer = self.live(host, path)
        with self.lock:
            self.seen.append((path, answer.status, answer.headers.get("X-Render-Version", "")))
        return answer

    def mark(self) -> int:
        with self.lock:
            return len(self.seen)


def _controlled(page: Any, url: str) -> None:
    """Open ``url``; once the worker is active, navigate again so it controls the page."""
    page.goto(url)
    page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
    page.goto(url)
    assert page.evaluate("() => !!navigator.serviceWorker.controller")


def _title(page: Any) -> str:
    return str(page.locator("h1").first.inner_text())


def _until_worker_knows(page: Any, url: str, version: str) -> None:
    """Navigate in the session until its worker has read ``version`` from live.json."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        page.goto(url)
        page.wait_for_function("() => window.renderVersion !== undefined", timeout=DEADLINE * 1000)
        if page.evaluate("() => window.renderVersion.live") == version:
            return
    raise AssertionError(f"the worker never read {version} from live.json")


def test_a_session_stays_on_its_version_and_a_new_one_starts_on_the_newest(
    tmp_path: Path, browser: Any
) -> None:
    demo = Demo(tmp_path)
    v1 = demo.publish()
    logged = Logged(LiveSites(demo.store, cache=tmp_path / "cache", refresh_seconds=0))
    with serve(logged) as running:
        post = f"{running.url}/posts/{demo.slug}/"
        one = browser.new_context()
        events: list[str] = []
        one.expose_function("renderVersionSeen", lambda version: events.append(version))
        one.add_init_script(
            "addEventListener('render:version', e => window.renderVersionSeen(e.detail.version))"
        )
        tab = one.new_page()
        _controlled(tab, f"{running.url}/")
        tab.goto(post)
        v1_title = _title(tab)
        assert tab.evaluate(EDITION) == ""
        pinned = browser.new_context()  # a second visit on version 1, for the gc at the end
        old_tab = pinned.new_page()
        _controlled(old_tab, post)

        demo.change()
        v2 = demo.publish()
        assert v2 != v1

        # the same tab, and a second tab of the session, stay on version 1
        tab.goto(post)
        assert (_title(tab), tab.evaluate(EDITION)) == (v1_title, "")
        second = one.new_page()
        second.goto(post)
        assert (_title(second), second.evaluate(EDITION)) == (v1_title, "")
        _until_worker_knows(tab, f"{running.url}/posts/", v2)
        tab.goto(post)
        assert (_title(tab), tab.evaluate(EDITION)) == (v1_title, "")
        tab.wait_for_function("() => window.renderVersion.pinned !== undefined")
        assert events and set(events) == {v2}  # told, never reloaded

        # a new context starts on version 2
        fresh = browser.new_context().new_page()
        fresh.goto(post)
        assert (_title(fresh), fresh.evaluate(EDITION)) == ("Edition two", "v2")
        fresh.context.close()

        # the first context, once all its tabs are closed, starts a new session on version 2
        tab.close()
        second.close()
        third = one.new_page()
        third.goto(post)
        assert third.evaluate("() => !!navigator.serviceWorker.controller")
        assert (_title(third), third.evaluate(EDITION)) == ("Edition two", "v2")
        # version 1's cached files went with the session that used them
        cached = third.evaluate(
            "() => caches.open('render-files').then(c => c.keys()).then(k => k.map(r => r.url))"
        )
        assert cached and all(f"/_v/{v2}/" in url for url in cached)
        one.close()

        # version 1 collected: the pinned visit's next navigation lands whole on version 2
        assert _title(old_tab) == v1_title
        report = gc(demo.store, owner="demo", name="blog", keep=1, grace_hours=0)
        assert report.removed_versions == (v1,)
        loads: list[str] = []
        old_tab.on("framenavigated", lambda frame: loads.append(frame.url))
        mark = logged.mark()
        old_tab.goto(post)
        old_tab.wait_for_load_state("load")
        assert (_title(old_tab), old_tab.evaluate(EDITION)) == ("Edition two", "v2")
        assert loads == [post]  # one load, no second reload
        served = logged.seen[mark:]
        assert {v for _p, status, v in served if status == 200 and v} == {v2}
        assert not [p for p, status, _v in served if p.startswith(f"/_v/{v1}/") and status == 200]
        pinned.close()


def test_a_first_visit_costs_the_worker_and_live_json_and_nothing_else(
    tmp_path: Path, browser: Any
) -> None:
    demo = Demo(tmp_path)
    demo.publish()
    logged = Logged(LiveSites(demo.store, cache=tmp_path / "cache", refresh_seconds=0))
    with serve(logged) as running:
        asked: dict[str, list[str]] = {}
        for workers in ("block", "allow"):
            context = browser.new_context(service_workers=workers)
            page = context.new_page()
            mark = logged.mark()
            page.goto(f"{running.url}/posts/{demo.slug}/")
            page.wait_for_load_state("networkidle")
            if workers == "allow":
                page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
                page.wait_for_load_state("networkidle")
            asked[workers] = sorted(p for p, _s, _v in logged.seen[mark:])
            context.close()
    extra = list(asked["allow"])
    for path in asked["block"]:
        extra.remove(path)
    assert sorted(extra) == ["/_render/live.json", "/sw.js"]


def test_pages_work_with_service_workers_blocked_and_the_worker_files_carry_their_caching(
    tmp_path: Path, browser: Any
) -> None:
    demo = Demo(tmp_path)
    version = demo.publish()
    live = LiveSites(demo.store, cache=tmp_path / "cache", refresh_seconds=0)
    with serve(live) as running:
        context = browser.new_context(service_workers="block")
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        for path in ("/", "/posts/", f"/posts/{demo.slug}/", "/tags/"):
            reply = page.goto(f"{running.url}{path}")
            assert reply is not None and reply.status == 200, path
            assert page.locator("h1").count() >= 1, path
            assert not page.evaluate(
                "() => !!(navigator.serviceWorker && navigator.serviceWorker.controller)"
            )
        assert errors == []
        headers = {
            path: page.request.get(f"{running.url}{path}").headers["cache-control"]
            for path in ("/sw.js", "/_render/live.json", f"/_v/{version}/css/site.css")
        }
        assert headers == {
            "/sw.js": "no-cache",
            "/_render/live.json": "no-cache",
            f"/_v/{version}/css/site.css": "public, max-age=31536000, immutable",
        }
        context.close()


def test_a_file_of_a_collected_version_makes_the_page_reload_once_onto_the_newest(
    tmp_path: Path, browser: Any
) -> None:
    demo = Demo(tmp_path)
    v1 = demo.publish()
    live = LiveSites(demo.store, cache=tmp_path / "cache", refresh_seconds=0)
    with serve(live) as running:
        post = f"{running.url}/posts/{demo.slug}/"
        context = browser.new_context()
        page = context.new_page()
        _controlled(page, post)
        v1_title = _title(page)
        demo.change()
        v2 = demo.publish()
        gc(demo.store, owner="demo", name="blog", keep=1, grace_hours=0)
        assert _title(page) == v1_title  # the page on screen stays as it is
        loads: list[str] = []
        page.on("framenavigated", lambda frame: loads.append(frame.url))
        with page.expect_navigation():
            # a file the page asks for now (not in the worker's cache) is gone with version 1
            page.evaluate("() => { fetch('/css/site.css?late=1').catch(() => null); }")
        page.wait_for_load_state("load")
        assert loads == [post]
        assert (_title(page), page.evaluate(EDITION)) == ("Edition two", "v2")
        assert v1 != v2
        context.close()
