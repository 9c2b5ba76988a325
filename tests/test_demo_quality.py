"""The demo site is what we tell tenants to copy: it must be clean by tools we did not write."""

from __future__ import annotations

from pathlib import Path

from vnu import errors, require_vnu, run_vnu

from render.config import load_host, load_site, site_dirs
from render.demo import init_host
from render.pipeline import Options, run_site


def test_demo_pages_pass_the_nu_html_checker(tmp_path: Path) -> None:
    require_vnu()
    init_host(tmp_path / "host", demo=True)
    host = load_host(tmp_path / "host" / "render.toml")
    site = load_site(site_dirs(host)[0], host=host)
    out = tmp_path / "out"
    report = run_site(site, host=host, options=Options(out=out, skip_lighthouse=True))
    assert report.checks is not None and report.checks.seo.errors == 0
    assert report.checks.seo.warnings == 0
    build = report.build
    assert build is not None
    # one page of every template, the generated 404 and the paginated list's second page
    chosen: dict[str, str] = {}
    for page in build.pages:
        if page.path.endswith(".html"):
            chosen.setdefault(page.template, page.path)
    chosen["page 2"] = "posts/page/2/index.html"
    paths = [out / p for p in sorted(set(chosen.values()))]
    assert len(paths) >= 7
    assert errors(run_vnu(paths)) == []
