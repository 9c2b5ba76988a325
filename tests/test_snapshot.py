"""The snapshot: a consistent copy while the application writes, and the live file left alone."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sitekit import Host, SiteSpec, listing, make_host

from render.build import snapshot
from render.errors import SnapshotError

# The application: one process that writes without pause. Each transaction
# adds the same value to table a and to table b (and sometimes deletes the
# oldest row of both), so in any consistent state the two sums are equal.
WRITER = r"""
import os, sqlite3, sys, time
path, mode, ready, stop = sys.argv[1:5]
db = sqlite3.connect(path, timeout=60, isolation_level=None)
db.execute(f"pragma journal_mode={mode}")
db.execute("pragma synchronous=off")  # fast commits; locking is the same
n = 0
give_up = time.monotonic() + 120  # never outlive a broken test
while not os.path.exists(stop) and time.monotonic() < give_up:
    n += 1
    db.execute("begin immediate")
    db.execute("insert into a (v, pad) values (?, randomblob(400))", (n,))
    db.execute("insert into b (v, pad) values (?, randomblob(400))", (n,))
    if n % 7 == 0:
        db.execute("delete from a where id = (select min(id) from a)")
        db.execute("delete from b where id = (select min(id) from b)")
    db.execute("commit")
    if n == 200:
        open(ready, "w").close()
db.close()
print(n)
"""

SCHEMA = [
    "create table a (id integer primary key, v integer not null, pad blob)",
    "create table b (id integer primary key, v integer not null, pad blob)",
    # a few MB to start with, so that a copy takes long enough for commits to land mid-copy
    "with recursive n(v) as (select 1 union all select v + 1 from n where v < 4000)"
    " insert into a (v, pad) select v, randomblob(400) from n",
    "insert into b (v, pad) select v, randomblob(400) from a",
]


def _site(tmp_path: Path, *, mode: str, seed: bool = True) -> Host:
    sql = [f"pragma journal_mode={mode}", *(SCHEMA if seed else SCHEMA[:2])]
    return make_host(tmp_path, sites={"acme/app": SiteSpec(sql=sql)})


def _wait_for(path: Path, *, proc: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"the writer died: {proc.communicate()}"
        assert time.monotonic() < deadline, "the writer never got going"
        time.sleep(0.01)


@contextmanager
def _writer(db: Path, *, mode: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    ready, stop = tmp_path / f"ready-{mode}", tmp_path / f"stop-{mode}"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), mode, str(ready), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(ready, proc=proc)
        yield proc
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert int(out) > 200


def _state(path: Path) -> tuple[int, int, int, int]:
    """(rows in a, rows in b, sum of a, sum of b) read from a snapshot copy."""
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        assert db.execute("pragma integrity_check").fetchall() == [("ok",)]
        row = db.execute(
            "select (select count(*) from a), (select count(*) from b),"
            " (select total(v) from a), (select total(v) from b)"
        ).fetchone()
    finally:
        db.close()
    return tuple(int(x) for x in row)  # type: ignore[return-value]


def _bounded(work: object, *, seconds: float = 120) -> list[object]:
    """Run ``work()`` in a thread; fail (instead of hanging the suite) if it never returns."""
    out: list[object] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(work())  # type: ignore[operator]
        except BaseException as exc:  # re-raised below in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"snapshots still running after {seconds} s: a livelock or a hang"
    if errors:
        raise errors[0]
    return out


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_snapshot_while_another_process_writes_is_consistent_and_finishes(
    tmp_path: Path, mode: str
) -> None:
    host = _site(tmp_path, mode=mode)
    site = host.site("acme/app")
    into = host.state_dir / "snapshots"

    def snapshots() -> list[tuple[int, int, int, int]]:
        states = []
        for _ in range(6):
            with snapshot.take(site, into=into) as snap:
                states.append(_state(snap.path))
                tables = snapshot.table_hashes(snap.path)
                assert tables == snap.table_hashes
                assert snap.content_hash == snapshot.content_hash(snap.path, tables)
        return states

    with _writer(site.database, mode=mode, tmp_path=tmp_path):
        (states,) = _bounded(snapshots)

    for rows_a, rows_b, sum_a, sum_b in states:  # type: ignore[attr-defined]
        assert rows_a == rows_b and sum_a == sum_b > 0
    # the writer really wrote while we copied: the copies saw different states
    assert len(set(states)) > 1  # type: ignore[arg-type]
    assert list(into.iterdir()) == [into / "snapshot.db"]  # no partial copies left behind
    assert _journal_mode(into / "snapshot.db") == "delete"


def _journal_mode(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("pragma journal_mode").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_snapshot_never_modifies_the_live_database(tmp_path: Path, mode: str) -> None:
    host = _site(tmp_path, mode=mode, seed=False)
    site = host.site("acme/app")
    live = site.database
    db = sqlite3.connect(live)
    db.executemany("insert into a (v) values (?)", [(i,) for i in range(500)])
    db.executemany("insert into b (v) values (?)", [(i,) for i in range(500)])
    db.commit()
    db.close()  # the last connection: SQLite checkpoints and removes -wal/-shm
    before_bytes = hashlib.sha256(live.read_bytes()).hexdigest()
    before_stat = live.stat()
    before_folder = listing(live.parent)

    with snapshot.take(site, into=host.state_dir / "snap") as snap:
        assert _state(snap.path) == (500, 500, sum(range(500)), sum(range(500)))
        assert snap.path.parent == host.state_dir / "snap"

    assert hashlib.sha256(live.read_bytes()).hexdigest() == before_bytes
    assert live.stat().st_mtime_ns == before_stat.st_mtime_ns
    assert live.stat().st_size == before_stat.st_size
    after_folder = listing(live.parent)
    if mode == "delete":
        # A rollback-journal database is only read: nothing appears beside it.
        assert after_folder == before_folder
    else:
        # A WAL reader needs the shared-memory index; SQLite creates -wal/-shm for
        # a read-only connection and leaves them (a later writer reuses them).
        # Everything else in the site folder is untouched.
        assert {
            k: v for k, v in after_folder.items() if not k.startswith("site.db-")
        } == before_folder


def test_same_content_gives_the_same_hash_and_a_change_a_new_one(tmp_path: Path) -> None:
    host = _site(tmp_path, mode="delete")
    site = host.site("acme/app")
    with snapshot.take(site, into=host.state_dir / "one") as first:
        pass
    with snapshot.take(site, into=host.state_dir / "two") as second:
        pass
    assert first.content_hash == second.content_hash
    db = sqlite3.connect(site.database)
    db.execute("insert into a (v) values (1)")
    db.commit()
    db.close()
    with snapshot.take(site, into=host.state_dir / "three") as third:
        pass
    assert third.content_hash != first.content_hash


def _pages_by_table(path: Path) -> dict[str, str]:
    """What table_hashes must give, the plain way: each table's pages in order, one by one."""
    db = sqlite3.connect(path)
    size = db.execute("pragma page_size").fetchone()[0]
    rows = db.execute("select name, pageno from dbstat order by name, pageno").fetchall()
    db.close()
    data = bytearray(path.read_bytes())
    for start, end in ((24, 28), (40, 44), (92, 100)):  # counters SQLite bumps by itself
        data[start:end] = bytes(end - start)
    digests: dict[str, hashlib._Hash] = {}
    for name, page in rows:
        digests.setdefault(name, hashlib.sha256()).update(data[(page - 1) * size : page * size])
    return {name: d.hexdigest() for name, d in digests.items()}


def test_table_hashes_cover_each_tables_pages_and_change_with_that_table_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.db"
    db = sqlite3.connect(path)
    odd = 'odd "name", \\ [x] \x1e é'  # quotes, a backslash, a separator, non-ASCII
    db.execute("create table posts (id integer primary key, body text)")
    quoted = '"' + odd.replace('"', '""') + '"'
    db.execute(f"create table {quoted} (id integer primary key, body text)")
    db.execute("create index posts_body on posts (body)")
    for i in range(300):  # interleaved inserts: each table's pages come in many runs
        db.execute("insert into posts (body) values (?)", (f"post {i} " * 40,))
        db.execute(f"insert into {quoted} (body) values (?)", (f"other {i} " * 40,))
    db.commit()
    before = snapshot.table_hashes(path)
    assert before == _pages_by_table(path)
    assert set(before) >= {"posts", odd, "posts_body", "sqlite_schema"}
    db.execute("update posts set body = 'changed' where id = 150")
    db.commit()
    db.close()
    after = snapshot.table_hashes(path)
    assert after == _pages_by_table(path)
    assert {name for name in after if after[name] != before[name]} == {"posts", "posts_body"}


def test_a_file_that_is_not_a_database_fails_naming_the_site_and_leaves_no_partial_copy(
    tmp_path: Path,
) -> None:
    host = make_host(tmp_path, sites={"acme/app": SiteSpec(database=False)})
    (host.site_dir("acme/app") / "site.db").write_bytes(
        b"these are not the bytes of a database\n" * 50
    )
    into = host.state_dir / "snap"
    with pytest.raises(SnapshotError) as caught, snapshot.take(host.site("acme/app"), into=into):
        pass
    assert str(caught.value) == "acme/app: snapshot: cannot copy site.db: file is not a database"
    assert list(into.iterdir()) == []


def test_a_missing_database_names_the_site_and_the_key_to_fix(tmp_path: Path) -> None:
    host = make_host(tmp_path, sites={"acme/app": SiteSpec(database=False)})
    with (
        pytest.raises(SnapshotError) as caught,
        snapshot.take(host.site("acme/app"), into=host.state_dir / "snap"),
    ):
        pass
    assert str(caught.value) == (
        f"acme/app: snapshot: database site.db not found in {host.site_dir('acme/app')}"
    )
    assert caught.value.hint == "check [site] database in site.toml"


def test_the_snapshot_is_a_plain_file_with_no_sidecars(tmp_path: Path) -> None:
    host = _site(tmp_path, mode="wal")
    into = host.state_dir / "snap"
    with snapshot.take(host.site("acme/app"), into=into) as snap:
        assert sorted(os.listdir(into)) == ["snapshot.db"]
        assert snap.size == snap.path.stat().st_size


HOLD_LOCK = r"""
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("begin exclusive")  # an application transaction that keeps readers out
db.execute("insert into a (v) values (1)")
open(sys.argv[2], "w").close()
give_up = time.monotonic() + 120
while not os.path.exists(sys.argv[3]) and time.monotonic() < give_up:
    time.sleep(0.02)
db.execute("rollback")
"""


def test_a_database_locked_by_the_application_for_too_long_fails_instead_of_waiting_for_ever(
    tmp_path: Path,
) -> None:
    host = _site(tmp_path, mode="delete", seed=False)
    site = host.site("acme/app")
    ready, stop = tmp_path / "locked", tmp_path / "release"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(site.database), str(ready), str(stop)]
    )
    into = host.state_dir / "snap"
    try:
        _wait_for(ready, proc=proc)  # type: ignore[arg-type]

        def attempt() -> None:
            with snapshot.take(site, into=into, busy_seconds=1):
                pass

        with pytest.raises(SnapshotError) as caught:
            _bounded(attempt, seconds=60)
    finally:
        stop.touch()
        proc.wait(timeout=60)
    assert str(caught.value) == (
        "acme/app: snapshot: cannot copy site.db: the application kept it locked for over 1 s"
    )
    assert list(into.iterdir()) == []  # no partial copy
    with snapshot.take(site, into=into, busy_seconds=1) as snap:  # released: it works again
        assert _state(snap.path) == (0, 0, 0, 0)
