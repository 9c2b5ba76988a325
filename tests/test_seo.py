"""The SEO stage: sitemaps and robots.txt read by independent parsers, and every lint rule."""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from lxml import etree
from protego import Protego
from seokit import BASE, CHANGED, STATIC, make_build, page_html
from usp.tree import sitemap_tree_for_homepage

from render import seo
from render.build.tree import Build, FileEntry, PageRecord
from render.check import sitemap
from render.check.loopback import Response, resolve_in_tree, serve
from render.config import RobotsRule, Route, SeoConfig
from render.errors import CheckFailed, ConfigError

DATA = Path(__file__).parent / "data"
NS = {"sm": sitemap.NAMESPACE}


def good_site() -> dict[str, str]:
    """Four clean pages that link to each other, a noindex page and a 404 page."""
    return {
        "/": page_html(
            "Home", description="The home page.", body='<h1>Home</h1><a href="/posts/">Posts</a>'
        ),
        "/posts/": page_html(
            "All posts",
            description="Every post.",
            body='<h1>Posts</h1><a href="/posts/first/">First</a> <a href="second/">Second</a>',
        ),
        "/posts/first/": page_html(
            "First post", description="The first one.", body="<h1>First</h1>"
        ),
        "/posts/second/": page_html(
            "Second post",
            description="The second one.",
            body='<h1>Second</h1><img src="/static/site.css" alt="">',
        ),
        "/drafts/": page_html(
            "Drafts",
            description="Not for search.",
            head='<meta name="robots" content="noindex">\n',
            body="<h1>Drafts</h1>",
        ),
        "/404.html": page_html("Not found", description="Nothing here.", body="<h1>Not found</h1>"),
        "/feed.xml": "<?xml version='1.0'?><rss></rss>",
    }


INDEXABLE = ["/", "/posts/", "/posts/first/", "/posts/second/"]


@pytest.fixture
def served() -> Iterator[tuple[str, dict[str, Build]]]:
    """A loopback server over whichever build the test puts in the holder."""
    holder: dict[str, Build] = {}

    def resolve(_host: str, path: str) -> Response:
        build = holder["build"]
        return resolve_in_tree(build.files, build.blobs, path)

    with serve(resolve) as running:
        yield running.url, holder


def lint_of(tmp_path: Path, pages: Mapping[str, str], **kwargs: Any) -> seo.SeoReport:
    kwargs.setdefault("static", STATIC)
    return seo.lint(seo.generate(make_build(tmp_path, pages, **kwargs)))


def locs(data: bytes) -> list[str]:
    return [el.text or "" for el in etree.fromstring(data).iterfind(".//sm:loc", NS)]


def validate(data: bytes) -> None:
    root = etree.fromstring(data)
    name = "siteindex.xsd" if etree.QName(root).localname == "sitemapindex" else "sitemap.xsd"
    xmlschema.XMLSchema(str(DATA / name)).validate(data.decode())


# --- sitemaps -------------------------------------------------------------------


def test_sitemap_lists_every_indexable_page_read_by_usp(tmp_path: Path, served: Any) -> None:
    url, holder = served
    build = seo.generate(make_build(tmp_path, good_site(), static=STATIC, base_url=url))
    holder["build"] = build
    tree = sitemap_tree_for_homepage(url + "/")
    found = sorted({page.url for page in tree.all_pages()})
    assert found == sorted(url + p for p in INDEXABLE)
    validate(build.read("sitemap.xml"))


def test_sitemap_index_past_the_url_limit_read_by_usp(tmp_path: Path, served: Any) -> None:
    url, holder = served
    pages = {f"/p/{i}/": page_html(f"Page {i}", description=f"Page {i}.") for i in range(7)}
    build = seo.generate(make_build(tmp_path, pages, static=STATIC, base_url=url), max_urls=3)
    holder["build"] = build
    assert sorted(p for p in build.files if p.startswith("sitemap")) == [
        "sitemap-1.xml",
        "sitemap-2.xml",
        "sitemap-3.xml",
        "sitemap.xml",
    ]
    for name in ("sitemap.xml", "sitemap-1.xml", "sitemap-2.xml", "sitemap-3.xml"):
        validate(build.read(name))
    assert [len(locs(build.read(f"sitemap-{n}.xml"))) for n in (1, 2, 3)] == [3, 3, 1]
    tree = sitemap_tree_for_homepage(url + "/")
    assert sorted({p.url for p in tree.all_pages()}) == sorted(url + p for p in pages)


def test_sitemap_splits_by_size(tmp_path: Path) -> None:
    pages = {f"/p/{i}/": page_html(f"Page {i}", description=f"Page {i}.") for i in range(10)}
    build = seo.generate(make_build(tmp_path, pages, static=STATIC), max_bytes=400)
    names = [p for p in build.files if p.startswith("sitemap-")]
    assert len(names) > 1
    seen: list[str] = []
    for name in names:
        data = build.read(name)
        assert len(data) <= 400
        validate(data)
        seen += locs(data)
    assert sorted(seen) == sorted(BASE + p for p in pages)


def _bare_build(tmp_path: Path, count: int) -> Build:
    """``count`` pages with facts already known (nothing to read back)."""
    base = make_build(tmp_path, {})
    facts = {"v": seo.FACTS_VERSION, "noindex": False}
    entry = FileEntry(hash="0" * 64, size=1, type="text/html; charset=utf-8")
    records = tuple(
        PageRecord(
            path=f"p/{i}/index.html",
            url=f"/p/{i}/",
            route=0,
            template="t",
            fingerprint="",
            hash="0" * 64,
            size=1,
            reads=(),
            islands=(),
            lastmod=None,
            changed=CHANGED,
            facts=facts,
        )
        for i in range(count)
    )
    files = types.MappingProxyType({r.path: entry for r in records})
    return Build(**{**base.__dict__, "pages": records, "files": files})


@pytest.mark.parametrize(("count", "files"), [(50_000, 1), (50_001, 3)])
def test_the_real_50000_url_boundary(tmp_path: Path, count: int, files: int) -> None:
    build = seo.generate(_bare_build(tmp_path, count))
    names = [p for p in build.files if p.startswith("sitemap")]
    assert len(names) == files
    total = sum(len(locs(build.read(n))) for n in names if n != "sitemap.xml" or files == 1)
    assert total == count


def test_lastmod_is_the_column_else_the_change_time_never_the_build_time(tmp_path: Path) -> None:
    pages = {
        "/a/": page_html("A", description="a"),
        "/b/": page_html("B", description="b"),
        "/c/": page_html("C", description="c"),
        "/d/": page_html("D", description="d"),
    }
    lastmods = {"/a/": "2024-05-01", "/b/": "2024-05-01 10:30:00", "/d/": "1714557600"}
    changed = {"/c/": "2026-01-02T03:04:05Z"}
    build = seo.generate(
        make_build(tmp_path, pages, static=STATIC, lastmods=lastmods, changed=changed)
    )
    root = etree.fromstring(build.read("sitemap.xml"))
    got = {
        u.findtext("sm:loc", namespaces=NS): u.findtext("sm:lastmod", namespaces=NS)
        for u in root.iterfind("sm:url", NS)
    }
    assert got == {
        BASE + "/a/": "2024-05-01",
        BASE + "/b/": "2024-05-01T10:30:00Z",
        BASE + "/c/": "2026-01-02T03:04:05Z",
        BASE + "/d/": "2024-05-01T10:00:00Z",
    }


def test_unchanged_site_gives_byte_identical_outputs(tmp_path: Path) -> None:
    first = seo.generate(make_build(tmp_path / "1", good_site(), static=STATIC))
    second = seo.generate(make_build(tmp_path / "2", good_site(), static=STATIC))
    for name in ("sitemap.xml", "robots.txt", "404.html"):
        assert first.read(name) == second.read(name)
    assert seo.report_json(seo.lint(first)) == seo.report_json(seo.lint(second))


def test_invalid_lastmod_is_a_finding_naming_the_row_not_a_crash(tmp_path: Path) -> None:
    routes = (
        Route(path="/{slug}/", template="post.html", query="select 1", lastmod="updated", index=0),
    )
    pages = {"/": page_html("Home", description="h"), "/a/": page_html("A", description="a")}
    build = seo.generate(
        make_build(tmp_path, pages, static=STATIC, lastmods={"/a/": "last tuesday"}, routes=routes)
    )
    assert b"<lastmod>2026-11-20T03:00:00Z</lastmod>" in build.read("sitemap.xml")
    report = seo.lint(build)
    assert [(f.rule, f.level, f.path) for f in report.findings] == [
        ("lastmod-invalid", seo.Level.warning, "/a/")
    ]
    assert report.findings[0].message.startswith(
        "routes[0] (/{slug}/), the row of /a/: lastmod column 'updated' value 'last tuesday' is not a date"
    )


def test_noindex_and_404_are_left_out(tmp_path: Path) -> None:
    build = seo.generate(make_build(tmp_path, good_site(), static=STATIC))
    assert locs(build.read("sitemap.xml")) == [BASE + p for p in INDEXABLE]


def test_default_404_only_when_the_site_has_none(tmp_path: Path) -> None:
    pages = {k: v for k, v in good_site().items() if k != "/404.html"}
    build = seo.generate(
        make_build(tmp_path / "a", pages, static=STATIC, base_url="https://ex.org/blog")
    )
    page = build.read("404.html").decode()
    assert '<meta name="robots" content="noindex">' in page and 'href="/blog/"' in page
    own = seo.generate(make_build(tmp_path / "b", good_site(), static=STATIC))
    assert b"<title>Not found</title>" in own.read("404.html")


def test_site_files_of_the_same_name_are_kept(tmp_path: Path) -> None:
    static = {**STATIC, "robots.txt": b"User-agent: *\nDisallow: /\n", "sitemap.xml": b"<urlset/>"}
    build = seo.generate(make_build(tmp_path, good_site(), static=static))
    assert build.read("robots.txt") == b"User-agent: *\nDisallow: /\n"
    assert build.read("sitemap.xml") == b"<urlset/>"


# --- robots.txt -------------------------------------------------------------------


def test_robots_default_allows_everything_with_sitemap_line(tmp_path: Path) -> None:
    build = seo.generate(make_build(tmp_path, good_site(), static=STATIC))
    robots = Protego.parse(build.read("robots.txt").decode())
    assert robots.can_fetch(BASE + "/posts/first/", "Googlebot")
    assert robots.can_fetch(BASE + "/", "*")
    assert list(robots.sitemaps) == [BASE + "/sitemap.xml"]


def test_robots_groups_mean_what_site_toml_says(tmp_path: Path) -> None:
    config = SeoConfig(
        robots=(
            RobotsRule(
                user_agent="*", disallow=("/drafts/", "/search"), allow=("/drafts/public/",)
            ),
            RobotsRule(user_agent="BadBot", disallow=("/",)),
            RobotsRule(user_agent="Googlebot"),
        )
    )
    build = seo.generate(make_build(tmp_path, good_site(), static=STATIC, seo=config))
    robots = Protego.parse(build.read("robots.txt").decode())
    assert not robots.can_fetch(BASE + "/drafts/x/", "SomeBot")
    assert robots.can_fetch(BASE + "/drafts/public/x/", "SomeBot")
    assert not robots.can_fetch(BASE + "/search?q=1", "SomeBot")
    assert robots.can_fetch(BASE + "/posts/", "SomeBot")
    assert not robots.can_fetch(BASE + "/posts/", "BadBot")
    assert robots.can_fetch(BASE + "/drafts/x/", "Googlebot")
    assert list(robots.sitemaps) == [BASE + "/sitemap.xml"]


# --- the lint ---------------------------------------------------------------------


def test_a_clean_site_has_no_findings(tmp_path: Path) -> None:
    report = lint_of(tmp_path, good_site())
    assert report.findings == ()
    assert report.pages == 6
    assert not report.blocking


def _page(**kwargs: Any) -> str:
    return page_html(**kwargs)


BAD: dict[str, tuple[dict[str, str], str]] = {
    # rule: (pages added to the good site, page expected in the finding)
    "page-empty": ({"/empty/": ""}, "/empty/"),
    "title-missing": (
        {"/t/": "<html lang=en><head><meta name=viewport content=x></head><h1>x</h1></html>"},
        "/t/",
    ),
    "title-too-long": ({"/t/": _page(title="x" * 61, description="long")}, "/t/"),
    "title-duplicate": ({"/t/": _page(title="First post", description="dup")}, "/t/"),
    "description-missing": ({"/t/": _page(title="No desc", description=None)}, "/t/"),
    "description-duplicate": (
        {"/t/": _page(title="Dup desc", description="The first one.")},
        "/t/",
    ),
    "h1-missing": ({"/t/": _page(title="No h1", description="x", body="<p>x</p>")}, "/t/"),
    "h1-multiple": (
        {"/t/": _page(title="Two", description="x", body="<h1>a</h1><h1>b</h1>")},
        "/t/",
    ),
    "img-alt-missing": (
        {"/t/": _page(title="Img", description="x", body='<h1>x</h1><img src="/static/site.css">')},
        "/t/",
    ),
    "broken-link": (
        {"/t/": _page(title="Link", description="x", body='<h1>x</h1><a href="/nope/">n</a>')},
        "/t/",
    ),
    "broken-asset": (
        {
            "/t/": _page(
                title="Asset", description="x", head='<script src="/static/gone.js"></script>'
            )
        },
        "/t/",
    ),
    "canonical-other-host": (
        {
            "/t/": _page(
                title="Canon",
                description="x",
                head='<link rel="canonical" href="https://other.example.org/t/">',
            )
        },
        "/t/",
    ),
    "jsonld-invalid": (
        {
            "/t/": _page(
                title="LD",
                description="x",
                head='<script type="application/ld+json">{nope}</script>',
            )
        },
        "/t/",
    ),
    "viewport-missing": (
        {
            "/t/": "<html lang=en><head><title>V</title><meta name=description content=v></head><h1>v</h1></html>"
        },
        "/t/",
    ),
    "lang-missing": ({"/t/": _page(title="Lang", description="x", lang="")}, "/t/"),
}


@pytest.mark.parametrize("rule_id", sorted(BAD))
def test_each_rule_fires_on_a_bad_page_only(tmp_path: Path, rule_id: str) -> None:
    added, where = BAD[rule_id]
    report = lint_of(tmp_path, {**good_site(), **added})
    hits = [f for f in report.findings if f.rule == rule_id]
    assert hits and where in {f.path for f in hits}
    assert all(f.level.value == seo.RULES[rule_id].level.value for f in hits)
    for finding in hits:
        # only the bad page, or (site-wide rules) the page it collides with
        assert finding.path == where or rule_id.endswith("-duplicate")
    assert all(f.message for f in hits)


def test_broken_link_names_its_target_and_pretty_urls_resolve(tmp_path: Path) -> None:
    body = (
        '<h1>x</h1><a href="/posts/first/">ok</a> <a href="/posts/first">ok 301</a> '
        '<a href="/posts/first/index.html">ok</a> <a href="/posts/missing/">bad</a> <a href="/">ok</a> '
        '<a href="/sitemap.xml">ok</a> <a href="https://www.example.com/gone.html?x#y">bad</a>'
    )
    report = lint_of(tmp_path, {**good_site(), "/t/": _page(title="L", description="l", body=body)})
    assert [f.message for f in report.findings if f.rule == "broken-link"] == [
        "links to /gone.html, which is not in the build",
        "links to /posts/missing/, which is not in the build",
    ]


def test_links_under_a_base_url_path(tmp_path: Path) -> None:
    pages = {
        "/": page_html(
            "Home",
            description="h",
            body='<h1>h</h1><a href="/blog/a/">a</a><a href="/other-app/">x</a><a href="/blog/b/">b</a>',
        ),
        "/a/": page_html("A", description="a", body="<h1>a</h1>"),
    }
    report = lint_of(tmp_path, pages, base_url="https://ex.org/blog")
    # /blog/a/ is the page a/index.html; /other-app/ and /static/site.css are outside the site
    assert [(f.rule, f.message) for f in report.findings if f.rule.startswith("broken")] == [
        ("broken-link", "links to /blog/b/, which is not in the build"),
    ]


def test_a_link_outside_the_base_path_does_not_hide_the_same_path_inside_it(
    tmp_path: Path,
) -> None:
    """/b/ is outside a site at /blog (fine); /blog/b/ is the site's own /b/, which is missing."""
    pages = {
        "/": page_html("Home", description="h", body='<h1>h</h1><a href="/b/">b</a>'),
        "/a/": page_html("A", description="a", body='<h1>a</h1><a href="/blog/b/">b</a>'),
    }
    report = lint_of(tmp_path, pages, base_url="https://ex.org/blog")
    assert [(f.path, f.message) for f in report.findings if f.rule == "broken-link"] == [
        ("/a/", "links to /blog/b/, which is not in the build"),
    ]


def test_noindex_page_in_a_sites_own_sitemap(tmp_path: Path) -> None:
    own = (
        f'<urlset xmlns="{sitemap.NAMESPACE}"><url><loc>{BASE}/drafts/</loc></url>'
        f"<url><loc>{BASE}/</loc></url></urlset>"
    ).encode()
    report = lint_of(tmp_path, good_site(), static={**STATIC, "sitemap.xml": own})
    assert [(f.rule, f.path) for f in report.findings] == [("noindex-in-sitemap", "/drafts/")]


def test_a_broken_sitemap_is_a_finding(tmp_path: Path) -> None:
    report = lint_of(tmp_path, good_site(), static={**STATIC, "sitemap.xml": b"<urlset"})
    assert [(f.rule, f.path) for f in report.findings] == [("sitemap-invalid", "")]


BROKEN_PAGES = {
    "/b1/": "<html><head><title>Unclosed<body><h1>x",
    "/b2/": "<p>a\x00b</p>\x80\x81<h1>nul</h1><a href='http://[::1'>x</a>",
    "/b3/": "<div>" * 3000,
    "/b4/": "<!-- never closed",
    "/b5/": "\udcff\udc80<html>",  # stray bytes, as the builder carries them
}


def test_broken_html_is_reported_never_crashes(tmp_path: Path) -> None:
    report = lint_of(tmp_path, {**good_site(), **BROKEN_PAGES})
    broken = {f.path for f in report.findings}
    assert set(BROKEN_PAGES) <= broken
    assert report.blocking


def test_pages_without_facts_are_read_back(tmp_path: Path) -> None:
    pages = {**good_site(), "/t/": _page(title="x" * 70, description="x")}
    report = seo.lint(seo.generate(make_build(tmp_path, pages, static=STATIC, finish=False)))
    rules = {f.rule for f in report.findings}
    # without finish_page there is no lang or canonical to fall back on
    assert "title-too-long" in rules and "lang-missing" in rules
    assert "broken-link" not in rules


def test_severity_overrides(tmp_path: Path) -> None:
    pages = {**good_site(), "/t/": _page(title="T", description=None, body="<p>no h1</p>")}
    config = SeoConfig(
        rules=types.MappingProxyType({"description-missing": "warning", "h1-missing": "off"})
    )
    report = lint_of(tmp_path, pages, seo=config)
    assert [(f.rule, f.level) for f in report.findings] == [
        ("description-missing", seo.Level.warning)
    ]
    assert not report.blocking
    assert report.levels["h1-missing"] == "off"


def test_unknown_rule_override_is_a_config_error(tmp_path: Path) -> None:
    config = SeoConfig(rules=types.MappingProxyType({"title-mising": "off"}))
    with pytest.raises(ConfigError) as info:
        lint_of(tmp_path, good_site(), seo=config)
    assert info.value.problems == [
        "site.toml: seo.rules.title-mising: unknown SEO rule (did you mean 'title-missing'?)"
    ]


def test_block_on_errors_false_never_blocks(tmp_path: Path) -> None:
    pages = {**good_site(), "/t/": _page(title="", description="x")}
    assert lint_of(tmp_path / "a", pages).blocking
    assert not lint_of(tmp_path / "b", pages, seo=SeoConfig(block_on_errors=False)).blocking


def test_report_json_summary_and_blocking_error(tmp_path: Path) -> None:
    bad = {
        f"/bad{i}/": _page(
            title=f"B{i}", description=f"b{i}", body='<h1>x</h1><img src="/static/site.css">'
        )
        for i in range(5)
    }
    report = lint_of(
        tmp_path, {**good_site(), **bad, "/long/": _page(title="y" * 70, description="long")}
    )
    data = json.loads(seo.report_json(report))
    assert data["errors"] == 5 and data["warnings"] == 1 and data["blocking"] is True
    assert data["counts"] == {"img-alt-missing": 5, "title-too-long": 1}
    assert data["findings"][0] == {
        "rule": "img-alt-missing",
        "level": "error",
        "path": "/bad0/",
        "message": "1 <img> without alt: /static/site.css",
    }
    assert seo.summary_lines(report) == [
        "SEO: 12 pages, 5 errors, 1 warning",
        "  error    img-alt-missing      5  /bad0/, /bad1/, /bad2/ (+2 more)",
        "  warning  title-too-long       1  /long/",
    ]
    error = seo.blocking_error(report)
    assert isinstance(error, CheckFailed)
    assert str(error) == "acme/blog: check: SEO lint found 5 errors on 12 pages"
    assert error.detail == (
        "  img-alt-missing (5): /bad0/, /bad1/, /bad2/ (+2 more)\n"
        "    /bad0/: 1 <img> without alt: /static/site.css\n"
        "  'render report SITE' lists every finding"
    )
    assert seo.ledger_rows(report)[0]["rule"] == "img-alt-missing"


def test_lint_is_safe_from_threads(tmp_path: Path) -> None:
    build = seo.generate(
        make_build(tmp_path, {**good_site(), **BROKEN_PAGES}, static=STATIC, finish=False)
    )
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(seo.report_json(seo.lint(build))))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 4 and len(set(results)) == 1


def test_bad_robots_settings_are_config_errors(tmp_path: Path) -> None:
    from render.config import load_host, load_site

    (tmp_path / "render.toml").write_text("")
    folder = tmp_path / "sites" / "acme" / "blog"
    folder.mkdir(parents=True)
    (folder / "site.toml").write_text(
        '[site]\nbase_url = "https://ex.org"\n'
        '[[seo.robots]]\nuser_agent = ""\ndisallow = ["private/", "/ok", "/a b"]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_site(folder, host=load_host(tmp_path / "render.toml"))
    assert info.value.problems == [
        "sites/acme/blog/site.toml: seo.robots[0].user_agent: must be one non-empty line, got ''",
        "sites/acme/blog/site.toml: seo.robots[0].disallow[0]: must be a URL path starting with '/' or '*', "
        "without spaces, got 'private/'",
        "sites/acme/blog/site.toml: seo.robots[0].disallow[2]: must be a URL path starting with '/' or '*', "
        "without spaces, got '/a b'",
    ]
