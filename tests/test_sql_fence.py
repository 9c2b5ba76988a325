"""Tenant SQL only reads: every way out of the fence is refused, and no file appears anywhere."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from sitekit import Host, SiteSpec, changes, html, listing, make_host

POSTS = [
    "create table posts (id integer primary key, slug text not null, title text not null)",
    "insert into posts values (1, 'hello', 'Hello')",
    "insert into posts values (2, 'again', 'Again')",
]
REFUSED_HINT = (
    "Hint: tenant SQL may only SELECT; writes, ATTACH, PRAGMA and extensions are refused\n"
)
SLOW_HINT = "Hint: add an index, narrow the query, or raise [limits] query_seconds\n"
NO_LIVE_HINT = "Hint: nothing was published; the site has no live version yet.\n"
NOT_AUTHORIZED = "query refused: only reading is allowed (not authorized)"
LIMITS = {"query_seconds": 0.5, "sql_max_length": 400, "template_cpu_seconds": 2}


def _host(tmp_path: Path, sql: str = "", *, where: str = "route") -> Host:
    """acme/blog with the attack in route /list/'s query (where="route") or in the named query
    ``evil`` that index.html calls on its line 2 (where="query"); other/shop beside it."""
    routes: list[dict[str, str]] = [{"path": "/", "template": "index.html"}]
    if sql and where == "route":
        routes.append({"path": "/list/", "query": sql, "template": "list.html"})
    named = bool(sql) and where == "query"
    templates = {
        "index.html": "<h1>home</h1>\n{{ query('evil')|length }}\n" if named else html("home"),
        "list.html": html("{% for r in rows %}<p>{{ r.slug }} {{ r.t }}</p>{% endfor %}"),
    }
    return make_host(
        tmp_path,
        limits=LIMITS,
        sites={
            "acme/blog": SiteSpec(
                sql=POSTS,
                routes=routes,
                queries={"evil": sql} if named else {},
                templates=templates,
            ),
            "other/shop": SiteSpec(
                sql=["create table secrets (card text)", "insert into secrets values ('4111-1111')"]
            ),
        },
    )


def _error(where: str, message: str, hint: str) -> str:
    """The whole stderr of a build whose route query or named query (see ``_host``) failed."""
    if where == "route":
        return f"Error: acme/blog: build: routes[1] (/list/): {message}\n{hint}"
    return (
        f"Error: acme/blog: build: templates/index.html, line 2: [queries] evil: {message}\n"
        "    {{ query('evil')|length }}\n" + hint
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _attempt(host: Host, tmp_path: Path, *, watch: Sequence[Path] = ()) -> tuple[int, str]:
    """Build acme/blog; return (exit code, stderr) after checking nothing was written outside."""
    live = host.site_dir("acme/blog") / "site.db"
    other = host.site_dir("other/shop") / "site.db"
    before = listing(tmp_path, skip=[host.state_dir])
    hashes = (_digest(live), _digest(other))
    result = host.cli("build", "acme/blog")
    assert listing(tmp_path, skip=[host.state_dir]) == before, changes(
        before, listing(tmp_path, skip=[host.state_dir])
    )
    assert (_digest(live), _digest(other)) == hashes
    for path in watch:
        created = path.exists()
        path.unlink(missing_ok=True)  # a failing run leaves nothing behind in /tmp
        assert not created, f"{path} was created"
    # inside the state folder only render's own files: no database the attack named
    stray = [p for p in host.state_dir.rglob("*") if p.is_file() and p.name.startswith("pwn")]
    assert stray == []
    return result.exit_code, result.stderr


WRITES = [
    ("route", "insert into posts values (3, 'x', 'x')"),
    ("route", "update posts set title = 'pwned'"),
    ("route", "delete from posts"),
    ("route", "create table pwn (x)"),
    ("route", "drop table posts"),
    ("route", "pragma query_only = 0"),
    ("route", "pragma writable_schema = 1"),
    ("route", "begin immediate"),
    ("query", "update posts set title = 'pwned'"),
    ("query", "pragma query_only = 0"),
]


@pytest.mark.parametrize(("where", "sql"), WRITES, ids=[f"{w}: {sql}" for w, sql in WRITES])
def test_sql_that_writes_is_refused_naming_the_route_or_the_query_template_and_line(
    tmp_path: Path, where: str, sql: str
) -> None:
    code, stderr = _attempt(_host(tmp_path, sql, where=where), tmp_path)
    assert stderr == _error(where, NOT_AUTHORIZED, REFUSED_HINT)
    assert code == 1


def test_a_write_after_a_select_in_one_route_query_is_refused(tmp_path: Path) -> None:
    code, stderr = _attempt(_host(tmp_path, "select 1; delete from posts"), tmp_path)
    assert stderr == _error("route", "You can only execute one statement at a time.", NO_LIVE_HINT)
    assert code == 1


@pytest.mark.parametrize(
    ("where", "sql"),
    [
        ("route", "attach database '{other}' as shop"),
        ("query", "attach database 'file:{other}?mode=ro' as shop"),
    ],
    ids=["attach-in-a-route-query", "attach-a-read-only-uri-in-a-named-query"],
)
def test_another_tenants_database_cannot_be_attached(tmp_path: Path, where: str, sql: str) -> None:
    other = _host(tmp_path).site_dir("other/shop") / "site.db"
    code, stderr = _attempt(_host(tmp_path, sql.format(other=other), where=where), tmp_path)
    assert stderr == _error(where, NOT_AUTHORIZED, REFUSED_HINT)
    assert code == 1


ATTACH_NEW = "attach database '{target}' as pwn"
VACUUM_INTO = "vacuum into '{target}'"
NEW_FILES = [
    pytest.param("route", ATTACH_NEW, "tmp", "not authorized", id="attach-in-tmp"),
    pytest.param("route", ATTACH_NEW, "state", "not authorized", id="attach-in-the-state-folder"),
    pytest.param(
        "route", ATTACH_NEW, "acme/blog", "not authorized", id="attach-in-the-site-folder"
    ),
    pytest.param("route", VACUUM_INTO, "tmp", "authorization denied", id="vacuum-into-tmp"),
    pytest.param(
        "route", VACUUM_INTO, "other/shop", "authorization denied", id="vacuum-into-another-site"
    ),
    pytest.param(
        "query", VACUUM_INTO, "tmp", "authorization denied", id="vacuum-into-tmp-from-a-named-query"
    ),
]


@pytest.mark.parametrize(("where", "sql", "folder", "reason"), NEW_FILES)
def test_sql_that_would_write_a_new_file_is_refused_and_creates_nothing(
    tmp_path: Path, where: str, sql: str, folder: str, reason: str
) -> None:
    host = _host(tmp_path)
    folders = {
        "tmp": Path("/tmp"),
        "state": host.state_dir,
        "acme/blog": host.site_dir("acme/blog"),
        "other/shop": host.site_dir("other/shop"),
    }
    target = folders[folder] / f"pwn-{uuid.uuid4().hex}.db"
    host = _host(tmp_path, sql.format(target=target), where=where)
    code, stderr = _attempt(host, tmp_path, watch=[target])
    assert stderr == _error(
        where, f"query refused: only reading is allowed ({reason})", REFUSED_HINT
    )
    assert code == 1


def test_load_extension_is_refused(tmp_path: Path) -> None:
    library = tmp_path / "pwn.so"
    library.write_bytes(b"\x7fELF not really")
    host = _host(tmp_path, f"select load_extension('{library}')")
    code, stderr = _attempt(host, tmp_path)
    assert stderr == _error(
        "route",
        "query refused: only reading is allowed (not authorized to use function: load_extension)",
        REFUSED_HINT,
    )
    assert code == 1


FOREVER = "with recursive n(x) as (select 1 union all select x + 1 from n) select count(*) from n"
LONG_SQL = "select * from posts where slug in (" + ", ".join(f"'s{i}'" for i in range(100)) + ")"
PAST_LIMITS = [
    pytest.param(
        "route",
        FOREVER,
        "query ran past its time limit of 0.5 s",
        SLOW_HINT,
        id="a-route-query-that-runs-forever-is-stopped-at-its-time-limit",
    ),
    pytest.param(
        "query",
        FOREVER,
        "query ran past its time limit of 0.5 s",
        SLOW_HINT,
        id="a-named-query-that-runs-forever-is-stopped-at-its-time-limit",
    ),
    pytest.param(
        "route",
        LONG_SQL,
        f"SQL is {len(LONG_SQL)} characters; the limit is 400",
        NO_LIVE_HINT,
        id="over-long-sql-is-refused-before-it-runs",
    ),
    pytest.param(
        "route",
        "select zeroblob(500000000) as b",
        "a string or blob is over the limit of 64000000 bytes",
        "Hint: select only the columns the pages use, or raise [limits] row_max_bytes\n",
        id="a-huge-value-is-refused-instead-of-filling-the-parents-memory",
    ),
]


@pytest.mark.parametrize(("where", "sql", "message", "hint"), PAST_LIMITS)
def test_a_query_past_its_limits_fails_naming_the_route_or_the_query(
    tmp_path: Path, where: str, sql: str, message: str, hint: str
) -> None:
    code, stderr = _attempt(_host(tmp_path, sql, where=where), tmp_path)
    assert stderr == _error(where, message, hint)
    assert code == 1


def test_reading_is_allowed_and_the_build_succeeds(tmp_path: Path) -> None:
    # The fence is not a wall: SELECT with joins, CTEs, functions and parameters works.
    sql = (
        "with recursive n(x) as (select 1 union all select x + 1 from n where x < 3) "
        "select p.slug, upper(p.title) as t, n.x from posts p join n on n.x = p.id order by p.id"
    )
    host = _host(tmp_path, sql)
    result = host.cli("build", "acme/blog")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    build_dir = host.state_dir / "builds" / "acme" / "blog"
    assert build_dir.is_dir()
    assert not any(name.startswith("pwn") for name in os.listdir(tmp_path))
