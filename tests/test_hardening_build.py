"""A hostile or unlucky tenant's build fails with a clear error, and the live version stays live.

Query results are bounded in bytes as rows are fetched (issue 19, item 5); a
path that is both a file and a folder is refused at build time (item 8); a
full disk is an error naming what was being written (item 11). Everything is
real: SQLite files, the CLI, the local store and mirror.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sitekit import Host, SiteSpec, html, make_database, make_host

from render.ledger import open_ledger
from render.paths import file_and_folder, file_and_folder_of
from render.publish import read_root
from render.store import open_store

BLOG = "acme/blog"


def live(host: Host) -> tuple[str | None, str | None]:
    """The live version as the ledger and the store's root.json say."""
    config = host.config
    with open_ledger(config.state_dir) as ledger:
        recorded = ledger.live_version("acme", "blog")
    store = open_store(config)
    try:
        root, _tag = read_root(store, owner="acme", name="blog")
    finally:
        store.close()
    return recorded, None if root is None else root.version


def publish_first(host: Host) -> str:
    """Build and publish the site as it is; the version now live."""
    result = host.cli("build", BLOG)
    assert result.exit_code == 0, result.output
    version, in_store = live(host)
    assert version is not None and version == in_store
    return version


# --- item 5: query results are bounded --------------------------------------

LIMITS = {"query_max_bytes": 100_000, "row_max_bytes": 50_000}
# five rows of 30,000 characters: each row counts 30,000 + 64 (the row) + 16 per column
TEXT_ROWS = [
    "create table t (id integer primary key, a text)",
    "with recursive n(i) as (select 1 union all select i + 1 from n where i < 5)"
    " insert into t select i, printf('%.*c', 30000, 'x') from n",
]
RESULT_HINT = (
    "Hint: select only the rows and columns the pages use (paginate long lists),"
    " or raise [limits] query_max_bytes\n"
)
ROW_HINT = "Hint: select only the columns the pages use, or raise [limits] row_max_bytes\n"


def _route(path: str, query: str) -> dict[str, str]:
    return {"path": path, "query": query, "template": "row.html"}


TOO_BIG = [
    pytest.param(
        [_route("/p/{id}/", "select id, a from t")],
        "routes[1] (/p/{id}/): the query's result is over the limit of 100000 bytes (at row 4)\n"
        + RESULT_HINT,
        id="a-route-query-result",
    ),
    pytest.param(
        [_route("/p/{id}/", "select id, a, a as b from t")],
        "routes[1] (/p/{id}/): row 1 of the query's result is 60112 bytes; the limit is 50000\n"
        + ROW_HINT,
        id="one-row",
    ),
    pytest.param(
        [_route("/p/{id}/", "select 1 as id, zeroblob(1000000000) as z")],
        "routes[1] (/p/{id}/): a string or blob is over the limit of 50000 bytes\n" + ROW_HINT,
        id="one-value-sqlite-never-makes",
    ),
    pytest.param(
        [
            _route("/p/{id}/", "select id, a from t where id <= 2"),
            _route("/q/{id}/", "select id, a from t where id <= 2"),
        ],
        "routes[2] (/q/{id}/): the route queries' results together are over the limit of"
        " 100000 bytes (at row 2)\n" + RESULT_HINT,
        id="route-queries-together",
    ),
]


@pytest.mark.parametrize(("routes", "error"), TOO_BIG)
def test_a_query_result_over_its_limit_fails_naming_the_route_and_the_limit(
    tmp_path: Path, routes: list[dict[str, Any]], error: str
) -> None:
    spec = SiteSpec(
        sql=TEXT_ROWS,
        routes=[{"path": "/", "template": "index.html"}, *routes],
        templates={"index.html": html("<p>home</p>"), "row.html": html("<p>{{ row.id }}</p>")},
    )
    host = make_host(tmp_path, limits=LIMITS, sites={BLOG: spec})
    result = host.cli("build", BLOG)
    assert result.stderr == f"Error: {BLOG}: build: {error}"
    assert result.exit_code == 1
    assert live(host) == (None, None)


def test_a_named_query_over_its_limit_fails_naming_the_template_line_and_the_limit(
    tmp_path: Path,
) -> None:
    spec = SiteSpec(
        sql=TEXT_ROWS,
        queries={"big": "select id, a from t"},
        templates={"index.html": "<main>\n{{ query('big')|length }}\n</main>\n"},
    )
    host = make_host(tmp_path, limits=LIMITS, sites={BLOG: spec})
    result = host.cli("build", BLOG)
    assert result.stderr == (
        f"Error: {BLOG}: build: templates/index.html, line 2: [queries] big: the query's result"
        " is over the limit of 100000 bytes (at row 4)\n"
        "    {{ query('big')|length }}\n" + RESULT_HINT
    )
    assert result.exit_code == 1


def test_results_under_the_limits_build_as_before(tmp_path: Path) -> None:
    spec = SiteSpec(
        sql=TEXT_ROWS,
        routes=[{"path": "/", "template": "index.html"}, _route("/p/{id}/", "select id, a from t where id <= 3")],
        templates={"index.html": html("<p>home</p>"), "row.html": html("<p>{{ row.a|length }}</p>")},
    )  # fmt: skip
    host = make_host(tmp_path, limits=LIMITS, sites={BLOG: spec})
    publish_first(host)
    out = tmp_path / "out"
    assert host.cli("build", BLOG, "--out", str(out)).exit_code == 0
    assert "<p>30000</p>" in (out / "p" / "3" / "index.html").read_text()


# --- item 8: a path is a file or a folder, never both -----------------------

POSTS = [
    {"path": "/", "template": "index.html"},
    {"path": "/posts/", "query": "select slug from posts order by slug", "template": "list.html"},
    {"path": "/posts/{slug}/", "query": "select slug from posts order by slug", "template": "post.html"},
]  # fmt: skip
POST_TEMPLATES = {
    "index.html": html("<p>home</p>"),
    "list.html": html("<p>{{ rows|length }} posts</p>"),
    "post.html": html("<p>{{ row.slug }}</p>"),
}
FILE_AND_FOLDER_HINT = (
    "Hint: a path cannot be both a file and a folder: change a route's path or a row's value,"
    " or rename the static file\n"
)


def test_a_slug_index_html_is_refused_and_the_live_version_stays(tmp_path: Path) -> None:
    # /posts/ writes posts/index.html; the slug makes posts/index.html/index.html
    sql = ["create table posts (slug text)", "insert into posts values ('hello')"]
    host = make_host(
        tmp_path, sites={BLOG: SiteSpec(sql=sql, routes=POSTS, templates=POST_TEMPLATES)}
    )
    version = publish_first(host)
    make_database(
        host.site_dir(BLOG) / "site.db", [*sql, "insert into posts values ('index.html')"]
    )
    result = host.cli("build", BLOG)
    assert result.stderr == (
        f"Error: {BLOG}: build: routes[2] (/posts/{{slug}}/) page /posts/index.html/ writes"
        " posts/index.html/index.html, inside posts/index.html, which routes[1] (/posts/) page"
        " /posts/ writes as a file\n" + FILE_AND_FOLDER_HINT
    )
    assert result.exit_code == 1
    assert live(host) == (version, version)


CLASHES = [
    pytest.param(
        POSTS[::2],
        {"posts": "a file named posts"},
        "routes[1] (/posts/{slug}/) page /posts/hello/ writes posts/hello/index.html, inside"
        " posts, which static/posts writes as a file",
        id="a-static-file-where-pages-need-a-folder",
    ),
    pytest.param(
        POSTS[:2],
        {"posts/index.html/logo.svg": "<svg/>"},
        "static/posts/index.html/logo.svg writes posts/index.html/logo.svg, inside"
        " posts/index.html, which routes[1] (/posts/) page /posts/ writes as a file",
        id="a-static-folder-where-a-page-is-a-file",
    ),
    pytest.param(
        [*POSTS[:1], {"path": "/sitemap.xml/", "template": "index.html"}],
        {},
        "routes[1] (/sitemap.xml/) page /sitemap.xml/ writes sitemap.xml/index.html, inside"
        " sitemap.xml, which render writes as a file",
        id="a-page-inside-the-sitemap-render-adds",
    ),
]


@pytest.mark.parametrize(("routes", "static", "error"), CLASHES)
def test_a_file_that_is_also_a_folder_is_refused_naming_both_writers(
    tmp_path: Path, routes: list[dict[str, Any]], static: dict[str, str], error: str
) -> None:
    sql = ["create table posts (slug text)", "insert into posts values ('hello')"]
    spec = SiteSpec(sql=sql, routes=routes, templates=POST_TEMPLATES, static=static)
    host = make_host(tmp_path, sites={BLOG: spec})
    result = host.cli("build", BLOG)
    assert result.stderr == f"Error: {BLOG}: build: {error}\n" + FILE_AND_FOLDER_HINT
    assert result.exit_code == 1
    assert live(host) == (None, None)


@pytest.mark.parametrize(
    ("paths", "clash"),
    [
        (["a", "a-b/index.html", "a.c", "a/index.html", "b"], ("a", "a/index.html")),
        (["posts/index.html", "posts/index.html/index.html"], ("posts/index.html", "posts/index.html/index.html")),
        (["a/b/c/d.txt", "a/b/c.txt", "a/bc/index.html", "ab/index.html"], None),
        (["index.html", "x/index.html", "x/index.html.bak"], None),
    ],
)  # fmt: skip
def test_file_and_folder_finds_a_path_that_is_also_a_folder(
    paths: list[str], clash: tuple[str, str] | None
) -> None:
    assert file_and_folder(sorted(paths)) == clash
    # the same pair, found from either of its paths as the newcomer
    for new in clash or paths:
        assert file_and_folder_of(sorted(paths), [new]) == clash
