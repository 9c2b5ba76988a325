"""A hostile or unlucky tenant's build fails with a clear error, and the live version stays live.

Query results are bounded in bytes as rows are fetched (issue 19, item 5); a
path that is both a file and a folder is refused at build time (item 8); a
full disk is an error naming what was being written (item 11). Everything is
real: SQLite files, the CLI, the local store and mirror.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sitekit import Host, SiteSpec, html, make_database, make_host

import render
from render.paths import file_and_folder, file_and_folder_of
from render.publish.store import open_store
from render.publish.versions import read_root
from render.run.ledger import open_ledger

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
        routes=[
            {"path": "/", "template": "index.html"},
            _route("/p/{id}/", "select id, a from t where id <= 3"),
        ],
        templates={
            "index.html": html("<p>home</p>"),
            "row.html": html("<p>{{ row.a|length }}</p>"),
        },
    )
    host = make_host(tmp_path, limits=LIMITS, sites={BLOG: spec})
    publish_first(host)
    out = tmp_path / "out"
    assert host.cli("build", BLOG, "--out", str(out)).exit_code == 0
    assert "<p>30000</p>" in (out / "p" / "3" / "index.html").read_text()


# --- item 8: a path is a file or a folder, never both -----------------------

POSTS = [
    {"path": "/", "template": "index.html"},
    {"path": "/posts/", "query": "select slug from posts order by slug", "template": "list.html"},
    {
        "path": "/posts/{slug}/",
        "query": "select slug from posts order by slug",
        "template": "post.html",
    },
]
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
        (
            ["posts/index.html", "posts/index.html/index.html"],
            ("posts/index.html", "posts/index.html/index.html"),
        ),
        (["a/b/c/d.txt", "a/b/c.txt", "a/bc/index.html", "ab/index.html"], None),
        (["index.html", "x/index.html", "x/index.html.bak"], None),
    ],
)
def test_file_and_folder_finds_a_path_that_is_also_a_folder(
    paths: list[str], clash: tuple[str, str] | None
) -> None:
    assert file_and_folder(sorted(paths)) == clash
    # the same pair, found from either of its paths as the newcomer
    for new in clash or paths:
        assert file_and_folder_of(sorted(paths), [new]) == clash


# --- item 11: a full disk is an error naming what was being written ----------
#
# A lowered RLIMIT_FSIZE makes the kernel refuse writes past the limit (EFBIG;
# Python ignores SIGXFSZ) in a `render` process of its own: the real write
# paths fail as on a full disk, without filling one.

ROOT = Path(render.__file__).resolve().parent.parent
BIG_PAGE = html("{% for i in range(30000) %}" + "x" * 100 + "{% endfor %}")  # 3 MB
EFBIG_HINT = (
    "a file grew past the largest size allowed here: raise the file-size limit (ulimit -f),"
    " or use another file system"
)


def run_python(
    args: list[str], *, max_file_bytes: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``python args`` (this render), with no file allowed past ``max_file_bytes`` if given."""

    def limit() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, resource.RLIM_INFINITY))

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, *args],
        preexec_fn=limit,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def published(tmp_path: Path) -> tuple[Host, str]:
    """A site with a live version, whose next build makes a 3 MB page."""
    host = make_host(tmp_path, sites={BLOG: SiteSpec()})
    version = publish_first(host)
    (host.site_dir(BLOG) / "templates" / "index.html").write_text(BIG_PAGE)
    return host, version


def test_a_page_that_finds_no_room_fails_naming_it_and_the_live_version_stays(
    published: tuple[Host, str],
) -> None:
    host, version = published
    build = ["-m", "render", "build", BLOG, "--config", str(host.config_path)]
    result = run_python(build, max_file_bytes=2_000_000)
    objects = host.state_dir / "builds" / "acme" / "blog" / "objects"
    assert result.stderr == (
        f"Error: {BLOG}: build: writing the page / into {objects}: File too large\n"
        f"Hint: {EFBIG_HINT}; the live version {version} is unchanged.\n"
    )
    assert result.returncode == 1
    assert live(host) == (version, version)
    # nothing half-written is taken for whole: with room, the next build publishes
    again = host.cli("build", BLOG)
    assert again.exit_code == 0, again.output
    assert live(host)[0] not in (None, version)


def test_a_lock_file_that_finds_no_room_is_an_error_not_a_traceback(
    published: tuple[Host, str],
) -> None:
    host, version = published
    build = ["-m", "render", "build", BLOG, "--config", str(host.config_path)]
    result = run_python(build, max_file_bytes=0)
    lock = host.state_dir / "locks" / "acme" / "blog.lock"
    assert result.stderr == (
        f"Error: {BLOG}: lock: writing the lock file {lock}: File too large\nHint: {EFBIG_HINT}\n"
    )
    assert result.returncode == 1
    assert live(host) == (version, version)


# The whole run in a process of its own, with the CLI's way of showing an error;
# once the build is under way (its first progress call), no file may grow: the
# render processes (forked before) still write pages, the build's own record and
# then the ledger cannot.
FILLS_UP_MID_BUILD = """
import resource, sys
from render.cli._common import host_from, show_error, site_from
from render.errors import RenderError
from render.pipeline import Options, run_site

def full(stage, done, total):
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

host = host_from(sys.argv[1])
try:
    run_site(site_from(host, "acme/blog"), host=host, options=Options(force=True), progress=full)
except RenderError as exc:
    show_error(exc)
    sys.exit(exc.exit_code)
"""


def test_a_ledger_that_cannot_record_the_failure_does_not_hide_it(
    published: tuple[Host, str],
) -> None:
    host, version = published
    result = run_python(["-c", FILLS_UP_MID_BUILD, str(host.config_path)])
    state = host.state_dir
    assert result.stderr == (
        f"Error: {BLOG}: build: writing the build folder {state}/builds/acme/blog: File too large\n"
        f"Hint: {EFBIG_HINT}; the live version {version} is unchanged.\n"
        f"Note: the ledger did not record this failure: ledger: writing the ledger"
        f" {state}/ledger.sqlite: disk I/O error\n"
    )
    assert result.returncode == 1
    assert live(host) == (version, version)
    again = host.cli("build", BLOG)
    assert again.exit_code == 0, again.output


def test_a_render_process_whose_pack_finds_no_room_fails_the_build_naming_the_pack(
    tmp_path: Path,
) -> None:
    # One render process (a small site) writes its first 32 pages as loose files of
    # 20 KB, then buffers the rest for its pack, which it writes at the end of each
    # chunk of pages: 17 pages of 20 KB cannot all go into a file of 100 KB.
    spec = SiteSpec(
        sql=[
            "create table t (id integer primary key)",
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < 48)"
            " insert into t select i from n",
        ],
        routes=[{"path": "/", "template": "index.html"}, _route("/p/{id}/", "select id from t")],
        templates={"index.html": html("<p>home</p>"), "row.html": html("<p>{{ row.id }}</p>")},
    )
    host = make_host(tmp_path, sites={BLOG: spec})
    version = publish_first(host)
    (host.site_dir(BLOG) / "templates" / "row.html").write_text(
        html("{{ row.id }}{% for i in range(200) %}" + "x" * 100 + "{% endfor %}")
    )
    build = ["-m", "render", "build", BLOG, "--config", str(host.config_path)]
    result = run_python(build, max_file_bytes=100_000)
    packs = host.state_dir / "builds" / "acme" / "blog" / "objects" / "packs"
    assert re.fullmatch(
        re.escape(f"Error: {BLOG}: build: writing the pack {packs}/")
        + r"[0-9]+-[0-9a-f]+\.pack"
        + re.escape(
            f": File too large\nHint: {EFBIG_HINT}; the live version {version} is unchanged.\n"
        ),
        result.stderr,
    ), result.stderr
    assert result.returncode == 1
    assert live(host) == (version, version)
