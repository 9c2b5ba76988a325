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
LIMITS = {"query_seconds": 0.5, "sql_max_length": 400, "template_cpu_seconds": 2}


def _host(tmp_path: Path, *, route_sql: str = "", named_sql: str = "") -> Host:
    """acme/blog with the attack in a route's query or in a named query; other/shop beside it."""
    routes: list[dict[str, str]] = [{"path": "/", "template": "index.html"}]
    if route_sql:
        routes.append({"path": "/list/", "query": route_sql, "template": "list.html"})
    templates = {
        "index.html": "<h1>home</h1>\n{{ query('evil')|length }}\n" if named_sql else html("home"),
        "list.html": html("{% for r in rows %}<p>{{ r.slug }} {{ r.t }}</p>{% endfor %}"),
    }
    return make_host(
        tmp_path,
        limits=LIMITS,
        sites={
            "acme/blog": SiteSpec(
                sql=POSTS,
                routes=routes,
                queries={"evil": named_sql} if named_sql else {},
                templates=templates,
            ),
            "other/shop": SiteSpec(
                sql=["create table secrets (card text)", "insert into secrets values ('4111-1111')"]
            ),
        },
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
    "insert into posts values (3, 'x', 'x')",
    "update posts set title = 'pwned'",
    "delete from posts",
    "create table pwn (x)",
    "drop table posts",
    "pragma query_only = 0",
    "pragma writable_schema = 1",
    "begin immediate",
    "select 1; delete from posts",
]


@pytest.mark.parametrize("sql", WRITES)
def test_a_route_query_that_writes_is_refused_naming_the_route(tmp_path: Path, sql: str) -> None:
    host = _host(tmp_path, route_sql=sql)
    code, stderr = _attempt(host, tmp_path)
    if sql.startswith("select 1;"):
        assert stderr == (
            "Error: acme/blog: build: routes[1] (/list/): You can only execute one statement at a time.\n"
            "Hint: nothing was published; the site has no live version yet.\n"
        )
    else:
        assert stderr == (
            "Error: acme/blog: build: routes[1] (/list/): query refused: only reading is allowed "
            "(not authorized)\n" + REFUSED_HINT
        )
    assert code == 1


@pytest.mark.parametrize("sql", ["update posts set title = 'pwned'", "pragma query_only = 0"])
def test_a_named_query_that_writes_is_refused_naming_query_template_and_line(
    tmp_path: Path, sql: str
) -> None:
    host = _host(tmp_path, named_sql=sql)
    code, stderr = _attempt(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: templates/index.html, line 2: [queries] evil: query refused: "
        "only reading is allowed (not authorized)\n"
        "    {{ query('evil')|length }}\n" + REFUSED_HINT
    )
    assert code == 1


def test_attaching_another_tenants_database_is_refused(tmp_path: Path) -> None:
    host = _host(tmp_path)
    other = host.site_dir("other/shop") / "site.db"
    host = _host(tmp_path, route_sql=f"attach database '{other}' as shop")
    code, stderr = _attempt(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/list/): query refused: only reading is allowed "
        "(not authorized)\n" + REFUSED_HINT
    )
    assert code == 1


def test_reading_another_tenants_database_through_a_uri_is_refused(tmp_path: Path) -> None:
    host = _host(tmp_path)
    other = host.site_dir("other/shop") / "site.db"
    host = _host(tmp_path, named_sql=f"attach database 'file:{other}?mode=ro' as shop")
    code, stderr = _attempt(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: templates/index.html, line 2: [queries] evil: query refused: "
        "only reading is allowed (not authorized)\n"
        "    {{ query('evil')|length }}\n" + REFUSED_HINT
    )
    assert code == 1


@pytest.mark.parametrize("where", ["tmp", "state", "site"])
def test_attaching_a_new_file_creates_nothing(tmp_path: Path, where: str) -> None:
    name = f"pwn-{uuid.uuid4().hex}.db"
    host = _host(tmp_path)
    target = {
        "tmp": Path("/tmp") / name,
        "state": host.state_dir / name,
        "site": host.site_dir("acme/blog") / name,
    }[where]
    host = _host(tmp_path, route_sql=f"attach database '{target}' as pwn")
    code, stderr = _attempt(host, tmp_path, watch=[target])
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/list/): query refused: only reading is allowed "
        "(not authorized)\n" + REFUSED_HINT
    )
    assert code == 1


@pytest.mark.parametrize("where", ["tmp", "site"])
def test_vacuum_into_a_file_is_refused_and_creates_nothing(tmp_path: Path, where: str) -> None:
    name = f"pwn-{uuid.uuid4().hex}.db"
    host = _host(tmp_path)
    target = Path("/tmp") / name if where == "tmp" else host.site_dir("other/shop") / name
    host = _host(tmp_path, route_sql=f"vacuum into '{target}'")
    code, stderr = _attempt(host, tmp_path, watch=[target])
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/list/): query refused: only reading is allowed "
        "(authorization denied)\n" + REFUSED_HINT
    )
    assert code == 1


def test_vacuum_into_from_a_named_query_is_refused_naming_the_query(tmp_path: Path) -> None:
    target = Path("/tmp") / f"pwn-{uuid.uuid4().hex}.db"
    host = _host(tmp_path, named_sql=f"vacuum into '{target}'")
    code, stderr = _attempt(host, tmp_path, watch=[target])
    assert stderr == (
        "Error: acme/blog: build: templates/index.html, line 2: [queries] evil: query refused: "
        "only reading is allowed (authorization denied)\n"
        "    {{ query('evil')|length }}\n" + REFUSED_HINT
    )
    assert code == 1


def test_load_extension_is_refused(tmp_path: Path) -> None:
    library = tmp_path / "pwn.so"
    library.write_bytes(b"\x7fELF not really")
    host = _host(tmp_path, route_sql=f"select load_extension('{library}')")
    code, stderr = _attempt(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/list/): query refused: only reading is allowed "
        "(not authorized to use function: load_extension)\n" + REFUSED_HINT
    )
    assert code == 1


FOREVER = "with recursive n(x) as (select 1 union all select x + 1 from n) select count(*) from n"


def test_a_route_query_that_runs_forever_is_stopped_at_its_time_limit(tmp_path: Path) -> None:
    host = _host(tmp_path, route_sql=FOREVER)
    code, stderr = _attempt(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/list/): query ran past its time limit of 0.5 s\n"
        + SLOW_HINT
    )
    assert code == 1


def test_a_named_query_that_runs_forever_is_stopped_naming_query_and_template(
    tmp_path: Path,
) -> None:
    host = _host(tmp_path, named_sql=FOREVER)
    code, stderr = _attempt(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: templates/index.html, line 2: [queries] evil: query ran past its "
        "time limit of 0.5 s\n    {{ query('evil')|length }}\n" + SLOW_HINT
    )
    assert code == 1


def test_over_long_sql_is_refused_before_it_runs(tmp_path: Path) -> None:
    sql = "select * from posts where slug in (" + ", ".join(f"'s{i}'" for i in range(100)) + ")"
    host = _host(tmp_path, route_sql=sql)
    code, stderr = _attempt(host, tmp_path)
    assert stderr == (
        f"Error: acme/blog: build: routes[1] (/list/): SQL is {len(sql)} characters; the limit is 400\n"
        "Hint: nothing was published; the site has no live version yet.\n"
    )
    assert code == 1


def test_a_huge_value_is_refused_instead_of_filling_the_parents_memory(tmp_path: Path) -> None:
    host = _host(tmp_path, route_sql="select zeroblob(500000000) as b")
    code, stderr = _attempt(host, tmp_path)
    assert stderr == (
        "Error: acme/blog: build: routes[1] (/list/): string or blob too big\n"
        "Hint: nothing was published; the site has no live version yet.\n"
    )
    assert code == 1


def test_reading_is_allowed_and_the_build_succeeds(tmp_path: Path) -> None:
    # The fence is not a wall: SELECT with joins, CTEs, functions and parameters works.
    host = _host(
        tmp_path,
        route_sql=(
            "with recursive n(x) as (select 1 union all select x + 1 from n where x < 3) "
            "select p.slug, upper(p.title) as t, n.x from posts p join n on n.x = p.id order by p.id"
        ),
    )
    result = host.cli("build", "acme/blog")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    build_dir = host.state_dir / "builds" / "acme" / "blog"
    assert build_dir.is_dir()
    assert not any(name.startswith("pwn") for name in os.listdir(tmp_path))
