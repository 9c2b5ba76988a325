"""The dashboard in headless Chromium, with JavaScript off, as ``render serve`` shows it."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from reportkit import add_history
from sitekit import Host, SiteSpec, html, make_host

from render.check.auditworker import BROWSER_FLAGS
from render.check.loopback import Response, serve
from render.publish.store import LocalStore
from render.report.serve import WithDashboard
from render.run.ledger import open_ledger

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("RENDER_CHROMIUM", "/usr/bin/chromium")
BUILDS = 90
SITES = ("acme/blog", "zed/shop")
# where the screenshot is kept for a person to look at (CI keeps the folder's files)
ARTIFACTS = Path(
    os.environ.get("RENDER_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "render-test-artifacts")
)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    def spec(site: str) -> SiteSpec:
        return SiteSpec(
            base_url=f"https://{site.split('/')[1]}.example.com",  # one site per host name
            templates={
                "index.html": html("<h1>Home</h1><p>hello</p>"),
                "404.html": html("<p>no</p>"),
            },
            routes=[{"path": "/", "template": "index.html"}],
        )

    made = make_host(tmp_path_factory.mktemp("dash"), sites={s: spec(s) for s in SITES})
    for site in SITES:
        made.run(site)
    store = LocalStore(made.state_dir / "store")
    with open_ledger(made.state_dir) as ledger:
        for n, site in enumerate(SITES):
            owner, name = site.split("/")
            add_history(ledger, owner, name, builds=BUILDS, seed=n, store=store)
    return made


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


def _not_a_site(_host: str, _path: str) -> Response:
    return Response(status=404, body=b"no site here")


def test_the_dashboard_lists_both_sites_and_charts_every_build(
    host: Host, browser: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "served"
    resolver = WithDashboard(_not_a_site, host=host.config, folder=folder)
    with serve(resolver) as running:
        context = browser.new_context(
            java_script_enabled=False, viewport={"width": 1400, "height": 900}
        )
        try:
            page = context.new_page()
            page.goto(f"{running.url}/_dashboard/")
            data = json.loads((folder / "data.json").read_text())
            rows = page.locator("table.overview tbody tr")
            assert rows.count() == 2
            for site in data["sites"]:
                row = page.locator(f'tr[data-site="{site["site"]}"]')
                cells = row.locator("td").all_inner_texts()
                latest = site["history"][-1]["scores"]
                expected = [
                    f"{latest[c] * 100:.0f}"
                    for c in ("performance", "accessibility", "best-practices", "seo")
                ]
                assert cells[2:6] == expected, (site["site"], cells)
                assert cells[0] == site["live_version"]
                assert row.locator(".trend svg").count() == 1
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

            page.locator("a", has_text="acme/blog").click()
            assert page.locator("h1").inner_text() == "acme/blog"
            charts = page.locator("figure.chart")
            assert charts.count() == 5
            for i in range(5):
                chart = charts.nth(i)
                title = chart.locator("figcaption").inner_text()
                paths = chart.locator("g.series path.line").evaluate_all(
                    "(ps) => ps.map((p) => p.getAttribute('d'))"
                )
                assert paths, title
                for d in paths:
                    xs = {round(float(x), 3) for x in re.findall(r"([\d.]+) [\d.]+", d)}
                    assert len(xs) == BUILDS, (title, len(xs))
            # the latest audits link to their stored Lighthouse HTML reports, which open
            links = page.locator("a", has_text="report")
            assert links.count() == 3
            page.screenshot(path=str(ARTIFACTS / "dashboard-site.png"), full_page=False)
            links.first.click()
            assert page.title().startswith("Lighthouse acme/blog")
        finally:
            context.close()
