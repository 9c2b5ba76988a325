"""Column-level change detection: a rebuild skips a query only when what it read is unchanged.

The unit tests ask ``render.build.changes`` directly about snapshots taken before
and after an edit. The build tests edit a real site step by step and compare
each incremental build with a build from scratch of the same database: any
query wrongly taken as unchanged would leave a stale page and fail them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from sitekit import Host, SiteSpec, html, make_host

from render.build import snapshot
from render.build.changes import Changes
from render.build.sandbox import QueryRunner, Read
from render.config import load_host, load_site, site_dirs
from render.errors import PathError

SCHEMA = [
    "create table items (id integer primary key, slug text, title text, body text, price real,"
    " hidden integer, notes text)",
    "create table labels (item_id integer, label text, primary key (item_id, label)) without rowid",
    "create view visible as select id, title, price from items where hidden = 0",
    *[
        f"insert into items values ({i}, 'item-{i}', 'Item {i}', 'Body of item {i}.', {i * 3.5},"
        f" {i % 4 == 0}, 'note {i}')"
        for i in range(1, 13)
    ],
    *[f"insert into labels values ({i}, 'label-{i % 3}')" for i in range(1, 13)],
]

QUERIES = {
    "titles": "select title, slug from items order by id",
    "count": "select count(*) as n from items",
    "cheap": "select title from visible where price < 20 order by id",
    "labels_of": "select label from labels where item_id = :id order by label",
    "by_rowid": "select rowid as r, slug from items where rowid % 5 = 0",
}

TEMPLATES = {
    "index.html": html(
        "<ul>{% for r in query('titles') %}<li><a href='{{ url('/items/' ~ r.slug ~ '/') }}'>"
        "{{ r.title }}</a></li>{% endfor %}</ul><p>{{ query('count')[0].n }} items</p>"
    ),
    "item.html": html(
        "<p>{{ row.body }}</p><p>{% for l in query('labels_of', id=row.id) %}{{ l.label }} "
        "{% endfor %}</p>",
        title="{{ row.title }}",
    ),
    "cheap.html": html(
        "<ul>{% for r in query('cheap') %}<li>{{ r.title }}</li>{% endfor %}</ul>"
        "<p>{% for r in query('by_rowid') %}{{ r.r }}:{{ r.slug }} {% endfor %}</p>"
    ),
}

ROUTES = (
    {"path": "/", "template": "index.html"},
    {
        "path": "/items/{slug}/",
        "query": "select id, slug, title, body from items",
        "template": "item.html",
    },
    {"path": "/cheap/", "template": "cheap.html"},
)


def site_spec(sql: Sequence[str] = SCHEMA) -> SiteSpec:
    return SiteSpec(sql=sql, queries=QUERIES, templates=TEMPLATES, routes=ROUTES)


def edit(host: Host, *statements: str) -> None:
    with sqlite3.connect(host.site_dir("t/items") / "site.db") as db:
        for statement in statements:
            db.execute(statement)


def scratch_tree(tmp_path: Path, host: Host, name: str) -> dict[str, str]:
    """A build from nothing of ``host``'s current database, as ``{path: hash}``."""
    fresh = make_host(tmp_path, sites={"t/items": site_spec(sql=())}, folder=name)
    (fresh.site_dir("t/items") / "site.db").write_bytes(
        (host.site_dir("t/items") / "site.db").read_bytes()
    )
    return {p: e.hash for p, e in fresh.build("t/items").files.items()}


EDITS = [
    # (what, statements, the pages that must be rendered again)
    ("a column no query reads", ["update items set notes = 'changed' where id = 3"], set()),
    (
        "a body: only that item's page",
        ["update items set body = 'New body.' where id = 3"],
        {"/items/item-3/"},
    ),
    ("a price: the view's page", ["update items set price = 1 where id = 6"], {"/cheap/"}),
    ("a hidden flag: the view's page", ["update items set hidden = 0 where id = 4"], {"/cheap/"}),
    (
        "a label in a table without rowid",
        ["update labels set label = 'x' where item_id = 7"],
        {"/items/item-7/"},
    ),
    (
        "a new row",
        ["insert into items values (13, 'item-13', 'Item 13', 'B.', 99, 0, '')"],
        {"/", "/items/item-13/"},
    ),
    ("a deleted row", ["delete from items where id = 10"], {"/", "/cheap/"}),
    (
        "a title",
        ["update items set title = 'Renamed' where id = 2"],
        {"/", "/items/item-2/", "/cheap/"},
    ),
]


def test_each_edit_rerenders_exactly_the_pages_that_read_it_and_matches_a_fresh_build(
    tmp_path: Path,
) -> None:
    host = make_host(tmp_path, sites={"t/items": site_spec()})
    first = host.build("t/items")
    assert first.rendered == len(first.pages) == 14
    for number, (what, statements, expected) in enumerate(EDITS):
        edit(host, *statements)
        again = host.build("t/items")
        rendered = {p.url for p in again.pages if p.rendered}
        assert rendered == expected, what
        tree = {p: e.hash for p, e in again.files.items()}
        assert tree == scratch_tree(tmp_path, host, f"scratch-{number}"), what


def test_a_query_calling_random_runs_again_on_every_build(tmp_path: Path) -> None:
    spec = SiteSpec(
        sql=["create table t (x)", "insert into t values (1)"],
        queries={"lucky": "select abs(random()) % 1000000000 as n, x from t"},
        templates={"index.html": html("<p>{{ query('lucky')[0].n }}</p>")},
    )
    host = make_host(tmp_path, sites={"t/items": spec})
    first = host.build("t/items")
    again = host.build("t/items")
    assert again.rendered == 1
    assert again.files["index.html"].hash != first.files["index.html"].hash


# --- Changes itself ------------------------------------------------------------


@contextmanager
def snapshots(tmp_path: Path, *statements: str) -> Iterator[tuple[Changes, QueryRunner]]:
    """A snapshot of the site, then ``statements``, then a second one: Changes between them."""
    host = make_host(tmp_path, sites={"t/items": site_spec()})
    config = load_host(host.config_path)
    site = load_site(site_dirs(config)[0], host=config)
    with snapshot.take(site, into=tmp_path / "a") as before:
        runner = QueryRunner(before.path, seconds=5, max_length=10_000)
        for name, sql in QUERIES.items():
            runner.fetch(sql, {"id": 1}, what=name)
        read_sets = [runner.reads_of(sql) or () for sql in QUERIES.values()]
        runner.close()
        recorded = Changes(before, tables={}, columns={}).record(read_sets)
        tables = dict(before.table_hashes)
    edit(host, *statements)
    with snapshot.take(site, into=tmp_path / "b") as after:
        runner = QueryRunner(after.path, seconds=5, max_length=10_000)
        try:
            yield Changes(after, tables=tables, columns=recorded), runner
        finally:
            runner.close()


def reads(runner: QueryRunner, sql: str) -> tuple[Read, ...]:
    runner.fetch(sql, {"id": 1}, what="test")
    found = runner.reads_of(sql)
    assert found is not None
    return found


def test_columns_not_read_do_not_count(tmp_path: Path) -> None:
    with snapshots(tmp_path, "update items set body = 'x' where id = 2") as (changes, runner):
        assert changes.unchanged(reads(runner, QUERIES["titles"]))
        assert changes.unchanged(reads(runner, QUERIES["count"]))
        assert not changes.unchanged(reads(runner, "select body from items where id = 1"))
        # every column of a changed table: counted as changed without a look
        assert not changes.unchanged(reads(runner, "select * from items where id = 1"))


def test_rows_added_or_removed_count_for_every_column(tmp_path: Path) -> None:
    with snapshots(tmp_path, "delete from items where id = 12") as (changes, runner):
        assert not changes.unchanged(reads(runner, QUERIES["count"]))
        assert not changes.unchanged(reads(runner, QUERIES["titles"]))


def test_a_view_follows_its_table(tmp_path: Path) -> None:
    with snapshots(tmp_path, "update items set price = 1000 where id = 1") as (changes, runner):
        assert not changes.unchanged(reads(runner, QUERIES["cheap"]))
        assert changes.unchanged(reads(runner, QUERIES["titles"]))


def test_a_schema_change_counts_as_a_change_everywhere(tmp_path: Path) -> None:
    with snapshots(tmp_path, "create index items_title on items (title)") as (changes, runner):
        assert not changes.unchanged(reads(runner, QUERIES["titles"]))


@pytest.mark.parametrize(
    "sql",
    [
        "select random() as r from items",
        "select date('now') as d, title from items",
        "select current_timestamp as t",
    ],
)
def test_functions_that_vary_between_runs_always_count_as_changed(tmp_path: Path, sql: str) -> None:
    with snapshots(tmp_path) as (changes, runner):
        assert changes.unchanged(reads(runner, QUERIES["titles"]))
        assert not changes.unchanged(reads(runner, sql))


def test_a_row_changed_onto_an_unchanged_rows_path_is_an_error_naming_both(
    tmp_path: Path,
) -> None:
    host = make_host(tmp_path, sites={"t/items": site_spec()})
    host.build("t/items")
    live = host.build("t/items").files
    edit(host, "update items set slug = 'item-3' where id = 2")
    with pytest.raises(PathError) as caught:
        host.build("t/items")
    message = str(caught.value)
    assert "row 2 (id=2)" in message and "row 3 (id=3)" in message
    assert "items/item-3/index.html" in message
    # the failed build left the last good tree and record in place
    edit(host, "update items set slug = 'item-2' where id = 2")
    again = host.build("t/items")
    assert again.rendered == 0 and dict(again.files) == dict(live)
