"""The demo site in real Lighthouse: the scores we promise tenants, and no churn on reruns."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import require

from render.check.lhrunner import find_lighthouse
from render.config import load_host, load_site, site_dirs
from render.demo import init_host
from render.pipeline import Options, Outcome, run_site
from render.publish.store import open_store

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
        assert audit.scores["performance"] is not None  # recorded, not asserted: it is the machine's
        assert audit.metrics.get("largest-contentful-paint") is not None or audit.metrics
    assert first.build is not None
    for audit in audits:
        assert audit.report is not None and audit.report in first.build.files

    # nothing changed: every score is carried forward, the reports stay, no new version
    again = run_site(site, host=host, options=Options(force=True))
    assert again.outcome is Outcome.unchanged
    assert again.checks is not None
    assert all(a.reused for a in again.checks.lighthouse.audits)
    assert again.build is not None
    for audit in again.checks.lighthouse.audits:
        assert audit.report in again.build.files
    store = open_store(host)
    try:
        assert store.get("sites/demo/blog/root.json") is not None
    finally:
        store.close()
