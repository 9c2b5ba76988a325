"""The demo site in real Lighthouse: the scores we promise tenants, and no churn on reruns."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import require

from render.check.lhrunner import find_lighthouse
from render.config import load_host, load_site, site_dirs
from render.demo import init_host
from render.pipeline import Options, Outcome, run_site
from render.publish.reports import html_key, report_key
from render.publish.store import open_store
from render.report.dashboard import write_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.lighthouse, pytest.mark.slow]


def test_demo_scores_and_a_rerun_carries_scores_without_a_new_version(tmp_path: Path) -> None:
    chromium = os.environ.get("RENDER_CHROMIUM", "/usr/bin/chromium")
    require(shutil.which(chromium) is not None, f"Chromium not found at {chromium} (make setup)")
    require(find_lighthouse() is not None, "node_modules/lighthouse not found (make setup)")
    init_host(tmp_path, demo=True)
    host = load_host(tmp_path / "render.toml")
    site = load_site(site_dirs(host)[0], host=host)

    first = run_site(site, host=host)
    assert first.outcome is Outcome.published
    assert first.checks is not None
    audits = first.checks.lighthouse.audits
    assert {a.path for a in audits} >= {"index.html", "posts/index.html", "tags/index.html"}
    for audit in audits:
        for category in ("accessibility", "best-practices", "seo"):
            score = audit.scores[category]
            assert score is not None and score >= 0.95, (audit.path, category, score)
        assert (
            audit.scores["performance"] is not None
        )  # recorded, not asserted: it is the machine's
        assert audit.metrics.get("lcp") is not None, audit.metrics  # largest-contentful-paint
    assert first.build is not None and first.version is not None
    # the live version holds no Lighthouse report and no findings file: they are stored beside it
    assert [p for p in first.build.files if p.startswith("_render/")] == [
        "_render/islands.js",
        "_render/register.js",
    ]
    store = open_store(host)
    try:
        for audit in audits:
            assert audit.report_hash is not None
            stored = store.get(html_key("demo", "blog", audit.report_hash))
            assert stored is not None and b'"lighthouseVersion":"12.8.2"' in stored
        for file in ("seo.json", "lighthouse.json", "index.json"):
            assert store.exists(report_key("demo", "blog", first.version, file)), file
    finally:
        store.close()

    # nothing changed: every score is carried forward, the reports stay, no new version
    again = run_site(site, host=host, options=Options(force=True))
    assert again.outcome is Outcome.unchanged
    assert again.checks is not None
    assert all(a.reused for a in again.checks.lighthouse.audits)
    assert [a.report_hash for a in again.checks.lighthouse.audits] == [
        a.report_hash for a in audits
    ]

    # a one-row edit re-audits the page that shows it and uploads no report into the site's tree
    post = next(a for a in audits if a.path.startswith("posts/") and a.path != "posts/index.html")
    slug = post.path.split("/")[1]
    db = sqlite3.connect(site.database)
    try:
        with db:
            db.execute("update posts set title = title || ' (edited)' where slug = ?", (slug,))
    finally:
        db.close()
    edited = run_site(site, host=host)
    assert edited.outcome is Outcome.published and edited.publication is not None
    assert edited.checks is not None
    fresh = [a.path for a in edited.checks.lighthouse.audits if not a.reused]
    assert post.path in fresh
    assert not [p for p in edited.publication.diff.paths if p.startswith("_render/")]

    # the dashboard links every latest audit's report, copied from the store
    out = tmp_path / "dashboard"
    written = write_dashboard(host, out)
    assert written.sites == 1
    page = (out / "sites" / "demo" / "blog" / "index.html").read_text()
    for audit in edited.checks.lighthouse.audits:
        link = f"reports/demo/blog/{audit.report_hash}.html"
        assert link in page and (out / link).is_file(), audit.path
