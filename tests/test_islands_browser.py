"""Islands in a real browser: Debian's Chromium driven by Playwright, the build served on loopback.

``load`` hydrates at once, ``visible`` only once scrolled into view,
``interaction`` on the first click, and ``none`` never (its module is not even
requested).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from sitekit import SiteSpec, html, make_host

from render.check.auditworker import BROWSER_FLAGS
from render.check.loopback import serve, tree_resolver

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("RENDER_CHROMIUM", "/usr/bin/chromium")
ARGS = list(BROWSER_FLAGS)  # the flags render's own checks launch Chromium with
WAIT_MS = 15_000  # a bound, not a measurement: each wait returns as soon as its condition holds

MODULE = """export default function hydrate(element, props) {
  element.dataset.hydrated = props.name;
  (window.hydrated = window.hydrated || []).push(props.name);
}
"""
PAGE = html(
    '{% island "Counter" hydrate="load" props={"name": "load"} %}<p>load</p>{% endisland %}\n'
    '{% island "Counter" hydrate="interaction" props={"name": "interaction"} %}'
    "<button>press</button>{% endisland %}\n"
    '{% island "Never" hydrate="none" props={"name": "none"} %}<p>static</p>{% endisland %}\n'
    '<div style="height: 6000px">far below this is the visible island</div>\n'
    '{% island "Counter" hydrate="visible" props={"name": "visible"} %}<p>visible</p>{% endisland %}'
)
FRAMES = """() => new Promise(done => {
  let left = 10;
  const tick = () => (--left <= 0 ? done(true) : requestAnimationFrame(tick));
  requestAnimationFrame(tick);
})"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dependency of render
        require(False, "playwright is not installed")
        raise
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _hydrated(page: Any, name: str) -> bool:
    return bool(page.evaluate(f"() => (window.hydrated || []).includes({name!r})"))


def test_islands_hydrate_when_their_condition_holds_and_none_never(
    tmp_path: Path, browser: Any
) -> None:
    host = make_host(
        tmp_path,
        sites={
            "acme/blog": SiteSpec(
                templates={"index.html": PAGE},
                static={"islands/Counter.js": MODULE, "islands/Never.js": MODULE},
            )
        },
    )
    build = host.build("acme/blog")
    with serve(tree_resolver(build.files, build.blobs)) as server:
        context = browser.new_context(viewport={"width": 800, "height": 600})
        page = context.new_page()
        requested: list[str] = []
        errors: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
        page.goto(server.url + "/")

        page.wait_for_function("() => (window.hydrated || []).includes('load')", timeout=WAIT_MS)
        page.evaluate(FRAMES)  # a few rendered frames after the load island ran
        assert not _hydrated(page, "visible")  # 6000 px below the fold
        assert not _hydrated(page, "interaction")
        assert (
            page.eval_on_selector("render-island[hydrate=visible]", "e => e.dataset.hydrated")
            is None
        )

        page.click("render-island[hydrate=interaction] button")
        page.wait_for_function("() => window.hydrated.includes('interaction')", timeout=WAIT_MS)
        assert not _hydrated(page, "visible")

        page.eval_on_selector("render-island[hydrate=visible]", "e => e.scrollIntoView()")
        page.wait_for_function("() => window.hydrated.includes('visible')", timeout=WAIT_MS)
        page.evaluate(FRAMES)

        assert page.evaluate("() => window.hydrated") == ["load", "interaction", "visible"]
        assert (
            page.eval_on_selector("render-island[hydrate=none]", "e => e.dataset.hydrated") is None
        )
        assert server.url + "/islands/Never.js" not in requested
        assert requested.count(server.url + "/_render/islands.js") == 1
        assert requested.count(server.url + "/islands/Counter.js") == 1  # one module, imported once
        assert errors in ([], [f"404 {server.url}/favicon.ico"])  # the test site has no icon
        context.close()
