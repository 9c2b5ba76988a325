"""Pages that finish_page and the SEO stage produce are valid HTML for the Nu HTML Checker."""

from __future__ import annotations

from pathlib import Path

from seokit import BASE, STATIC, make_build, page_html
from vnu import errors, require_vnu, run_vnu

from render import seo
from render.build.pagefacts import finish_page
from render.paths import quote_url


def test_finished_pages_and_the_default_404_are_valid_html(tmp_path: Path) -> None:
    require_vnu()
    sources = {
        "/": page_html("Home", description="The home page.", body="<h1>Home</h1>"),
        "/posts/café/": page_html(
            "Café & co",
            description="Quotes &quot; and &lt;angles&gt;",
            body='<h1>Café</h1><img src="/static/a.png" alt="A cup">',
            head='<script type="application/ld+json">{"@type": "Article"}</script>\n',
        ),
        "/bare/": "<!doctype html><title>Bare page</title><h1>Bare</h1><p>No html, head or body tags.</p>",
        "/lang/": page_html("Own lang", description="French.", lang="fr", body="<h1>Bonjour</h1>"),
    }
    out = tmp_path / "html"
    out.mkdir()
    paths = []
    for number, (url, source) in enumerate(sources.items()):
        html, _ = finish_page(source, url=url, canonical=BASE + quote_url(url), lang="en")
        path = out / f"page{number}.html"
        path.write_text(html, encoding="utf-8")
        paths.append(path)
    build = seo.generate(make_build(tmp_path / "build", {}, static=STATIC))
    (out / "404.html").write_bytes(build.read("404.html"))
    paths.append(out / "404.html")
    messages = run_vnu(paths)
    assert errors(messages) == []


def test_vnu_reports_errors_it_finds(tmp_path: Path) -> None:
    require_vnu()
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!doctype html><html lang="en"><title>x</title><img src="a.png"><p id=a id=a>x',
        encoding="utf-8",
    )
    found = errors(run_vnu([bad]))
    assert any("alt" in line for line in found)
    assert all(line.startswith("bad.html:") for line in found)
