"""A golden build of the demo site: same input, same bytes, on any machine, any day."""

from __future__ import annotations

import json
from pathlib import Path

from render.config import load_host, load_site, site_dirs
from render.demo import init_host
from render.pipeline import Options, run_site

GOLDEN = Path(__file__).parent / "golden" / "demo.json"
# The sitemap dates pages without a lastmod column by when their content first
# appeared on this host, so a fresh host dates them today: it is checked for
# stability across rebuilds in test_seo, not against a file made on another day.
VARIES_BY_HOST_HISTORY = {"sitemap.xml"}


def golden_tree(folder: Path) -> dict[str, str]:
    init_host(folder, demo=True)
    host = load_host(folder / "render.toml")
    site = load_site(site_dirs(host)[0], host=host)
    report = run_site(site, host=host, options=Options(skip_lighthouse=True))
    assert report.build is not None
    return {
        path: entry.hash
        for path, entry in report.build.files.items()
        if path not in VARIES_BY_HOST_HISTORY
    }


def test_demo_build_matches_the_golden_tree(tmp_path: Path) -> None:
    expected = json.loads(GOLDEN.read_text())
    actual = golden_tree(tmp_path)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(p for p in set(actual) & set(expected) if actual[p] != expected[p])
    assert (missing, extra, changed[:10]) == ([], [], []), (
        "the demo's bytes changed; if that is intended, run tests/golden/make.py"
    )
