"""Slugs from the database never become a path outside the build, and never collide silently."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sitekit import Host, SiteSpec, changes, html, listing, make_host

from render.paths import output_path, parse_pattern

ROUTES = (
    {"path": "/", "template": "index.html"},
    {"path": "/posts/{slug}/", "query": "select * from posts order by id", "template": "post.html"},
)
HINT = "Hint: fix the row, or filter it out in the route's query\n"


def _blog(
    tmp_path: Path, slugs: list[object], *, routes: tuple[dict[str, str], ...] = ROUTES
) -> Host:
    host = make_host(
        tmp_path,
        sites={
            "acme/blog": SiteSpec(
                routes=routes,
                templates={
                    "index.html": html("<p>home</p>"),
                    "post.html": html("<p>{{ row.slug }}</p>"),
                },
            )
        },
    )
    db = sqlite3.connect(host.site_dir("acme/blog") / "site.db")
    db.execute("create table posts (id integer primary key, slug text, a text, b text)")
    db.executemany("insert into posts (id, slug) values (?, ?)", list(enumerate(slugs, 1)))
    db.commit()
    db.close()
    return host


def _build_out(host: Host, tmp_path: Path) -> tuple[int, str, list[str]]:
    """``render build acme/blog --out`` ; (exit code, stderr, what changed outside the state folder)."""
    before = listing(tmp_path, skip=[host.state_dir])
    result = host.cli("build", "acme/blog", "--out", str(tmp_path / "out"))
    after = listing(tmp_path, skip=[host.state_dir])
    return result.exit_code, result.stderr, changes(before, after)


BAD = [
    ("..", "value '..' is '..'"),
    ("../../escape", "value '../../escape' contains '..'"),
    ("/etc/passwd", "value '/etc/passwd' contains a slash"),
    ("a/b", "value 'a/b' contains a slash"),
    ("a\\b", "value 'a\\\\b' contains a slash"),
    ("nul\x00byte", "value 'nul\\x00byte' contains a NUL byte"),
    ("esc\x1b[2J", "value 'esc\\x1b[2J' contains a control character"),
    ("new\nline", "value 'new\\nline' contains a control character"),
    ("rtl\u202eoverride", "value 'rtl\\u202eoverride' contains a control character"),
    ("", "value '' is empty"),
    (" padded", "value ' padded' has leading or trailing whitespace"),
    ("．．／．．／x", "value '．．／．．／x' contains '..' after Unicode normalization"),
    ("．．", "value '．．' is '..' after Unicode normalization"),
    ("a／b", "value 'a／b' contains a slash after Unicode normalization"),
    (None, "is NULL; a path segment cannot be empty"),
]


@pytest.mark.parametrize(("slug", "problem"), BAD, ids=[repr(s) for s, _ in BAD])
def test_a_bad_slug_names_the_route_and_row_and_writes_nothing(
    tmp_path: Path, slug: object, problem: str
) -> None:
    host = _blog(tmp_path, ["fine", slug, "also-fine"])
    code, stderr, changed = _build_out(host, tmp_path)
    column = "column 'slug' " + problem
    assert (
        stderr
        == f"Error: acme/blog: build: routes[1] (/posts/{{slug}}/) row 2 (id=2): {column}\n" + HINT
    )
    assert code == 1
    assert changed == []  # no --out folder, no stray file anywhere under tmp_path


def test_a_path_component_over_255_bytes_names_the_route_and_row(tmp_path: Path) -> None:
    host = _blog(tmp_path, ["ok", "é" * 128])  # 256 bytes in UTF-8, 128 characters
    code, stderr, changed = _build_out(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/posts/{slug}/) row 2 (id=2): "
        "column 'slug' value is 256 bytes; a path component may be at most 255\n" + HINT
    )
    assert code == 1
    assert changed == []


def test_a_component_made_long_by_two_columns_together_names_the_route_and_row(
    tmp_path: Path,
) -> None:
    # each value alone is short enough; the component they make is not
    routes = (
        {"path": "/", "template": "index.html"},
        {
            "path": "/p/{a}-{b}.html",
            "query": "select * from posts order by id",
            "template": "post.html",
        },
    )
    host = _blog(tmp_path, [], routes=routes)
    db = sqlite3.connect(host.site_dir("acme/blog") / "site.db")
    db.execute("insert into posts values (1, 's', ?, ?)", ("x" * 200, "y" * 60))
    db.commit()
    db.close()
    code, stderr, changed = _build_out(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/p/{a}-{b}.html) row 1 (id=1): path component "
        f"{'x' * 32!r}... of '/p/{{a}}-{{b}}.html' is 266 bytes; a path component may be at most 255\n"
        "Hint: shorten the values, or filter long ones out in the route's query\n"
    )
    assert code == 1
    assert changed == []


def test_two_rows_with_the_same_slug_name_both_rows(tmp_path: Path) -> None:
    host = _blog(tmp_path, ["same", "other", "same"])
    code, stderr, changed = _build_out(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/posts/{slug}/) row 3 (id=3) and "
        "routes[1] (/posts/{slug}/) row 1 (id=1) both write posts/same/index.html\n"
        "Hint: make the paths unique (paths equal after Unicode normalization count as the same)\n"
    )
    assert code == 1
    assert changed == []


def test_slugs_that_differ_only_in_unicode_normalization_form_collide(tmp_path: Path) -> None:
    # 'café' as one code point (NFC) and as 'e' + combining acute (NFD): object stores
    # such as R2 normalize keys to NFC, so these would overwrite each other there.
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    host = _blog(tmp_path, [nfc, nfd])
    code, stderr, changed = _build_out(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/posts/{slug}/) row 2 (id=2) and "
        f"routes[1] (/posts/{{slug}}/) row 1 (id=1) both write posts/{nfc}/index.html\n"
        "Hint: make the paths unique (paths equal after Unicode normalization count as the same)\n"
    )
    assert code == 1
    assert changed == []


def test_a_row_and_a_fixed_route_writing_the_same_file_collide(tmp_path: Path) -> None:
    routes = (
        {"path": "/about/", "template": "index.html"},
        {"path": "/{slug}/", "query": "select * from posts order by id", "template": "post.html"},
    )
    host = _blog(tmp_path, ["about"], routes=routes)
    code, stderr, _ = _build_out(host, tmp_path)
    assert stderr.startswith(
        "Error: acme/blog: build: routes[1] (/{slug}/) row 1 (id=1) and routes[0] (/about/) "
        "both write about/index.html\n"
    )
    assert code == 1


def test_good_unicode_slugs_build_as_nfc_paths_inside_the_output(tmp_path: Path) -> None:
    host = _blog(tmp_path, ["cafe\u0301", "日本語", "a.b-c_d~e"])
    code, stderr, changed = _build_out(host, tmp_path)
    assert (code, stderr) == (0, "")
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("index.html")) == sorted(
        [
            "index.html",
            "posts/caf\u00e9/index.html",
            "posts/日本語/index.html",
            "posts/a.b-c_d~e/index.html",
        ]
    )
    assert all(c == "out" or c.startswith("out/") for c in changed)


def test_a_missing_column_in_the_path_pattern_names_the_route_row_and_column(
    tmp_path: Path,
) -> None:
    routes = (
        {"path": "/", "template": "index.html"},
        {
            "path": "/posts/{slugg}/",
            "query": "select * from posts order by id",
            "template": "post.html",
        },
    )
    host = _blog(tmp_path, ["one"], routes=routes)
    code, stderr, changed = _build_out(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/posts/{slugg}/) row 1 (id=1): path '/posts/{slugg}/' "
        "uses {slugg} but the row has no column 'slugg'\n"
        "Hint: add 'slugg' to the route's query, or change the path\n"
    )
    assert code == 1
    assert changed == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("posts/", "must start with '/', got 'posts/'"),
        ("/a/../b/", "contains '..': '/a/../b/'"),
        ("/a//b/", "contains an empty segment: '/a//b/'"),
        ("/a\\b/", "contains a backslash or a control character: '/a\\\\b/'"),
        ("/{slug/", "has an unclosed or invalid {placeholder}: '/{slug/'"),
        (
            "/" + "x" * 256 + "/",
            "has a component over 255 bytes: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'...",
        ),
    ],
)
def test_route_patterns_from_site_toml_are_checked(raw: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_pattern(raw)
    assert str(caught.value) == reason


def test_output_paths_are_pretty_urls() -> None:
    assert output_path("/") == "index.html"
    assert output_path("/posts/x/") == "posts/x/index.html"
    assert output_path("/posts/x") == "posts/x/index.html"
    assert output_path("/feed.xml") == "feed.xml"
