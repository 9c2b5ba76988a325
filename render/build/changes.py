"""What changed in a site's database since the last build, down to the column.

A query's result depends only on the columns it reads (SQLite's authorizer
reports each table and column as the statement is prepared), so a query whose
columns hold the same values as at the last build returns the same rows and
need not run again. That is what lets a rebuild after one article's body
changed skip the list and tag queries that read only titles and slugs.

Two levels, cheapest first:

- a table whose pages are byte-for-byte those of the last snapshot
  (``Snapshot.table_hashes``) is unchanged in every column;
- for a table whose pages changed, one scan in rowid order hashes each column
  (and the rowids themselves, the ``""`` column: row count and identity).

The build record keeps the column hashes, so the next build compares against
them. Anything unsure counts as changed: a query that calls a function whose
result changes between runs (``random()``, ``date('now')``), reads a virtual
table, a table without rowid, or a database without ``dbstat``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from render.build.sandbox import MMAP_BYTES, VOLATILE, Read
from render.build.snapshot import Snapshot

SCHEMA = "sqlite_schema"
_CHUNK = 2048
_ROWID = ("rowid", "_rowid_", "oid")


class Changes:
    """Answers "did anything this query read change since the last build?" for one snapshot."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        tables: Mapping[str, str],
        columns: Mapping[str, Mapping[str, str]],
    ) -> None:
        self._path = snapshot.path
        self._now = snapshot.table_hashes
        self._before_tables = tables
        self._before_columns = columns
        self._hashes: dict[str, dict[str, str] | None] = {}  # table -> column -> hash, as needed
        self._names: dict[str, frozenset[str]] = {}
        self._views: frozenset[str] | None = None
        self._db: sqlite3.Connection | None = None  # opened at the first look at the snapshot
        self._schema_same = bool(self._now) and self._same_pages(SCHEMA)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = _open(self._path)
        return self._db

    def _same_pages(self, table: str) -> bool:
        now = self._now.get(table)
        return now is not None and now == self._before_tables.get(table)

    def unchanged(self, reads: Iterable[Read]) -> bool:
        """True when every column in ``reads`` holds what it held at the last build."""
        if not self._schema_same:
            return False
        wanted: dict[str, set[str]] = {}
        for table, column in reads:
            if table == VOLATILE:
                return False
            if not self._same_pages(table):
                wanted.setdefault(table, set()).add(column)
        for table, names in wanted.items():
            if table in self.views():
                continue  # the columns of its tables are reported too
            if self._covers(table, names):
                return False  # every column of a table whose pages changed: something did
            before = self._before_columns.get(table, {})
            now = self.hashes(table, names)
            if now is None or any(before.get(name) != now[name] for name in now):
                return False
        return True

    def record(self, read_sets: Iterable[Iterable[Read]]) -> dict[str, dict[str, str]]:
        """Column hashes to keep for the next build, for the columns ``read_sets`` read.

        A set that reads every column of a table needs none: when that
        table's pages change, the set counts as changed without a look.
        """
        needed: dict[str, set[str]] = {}
        for reads in read_sets:
            by_table: dict[str, set[str]] = {}
            for table, column in reads:
                if table != VOLATILE and table in self._now:
                    by_table.setdefault(table, set()).add(column)
            for table, names in by_table.items():
                if not self._covers(table, names):
                    needed.setdefault(table, set()).update(names)
        kept: dict[str, dict[str, str]] = {}
        for table in sorted(needed.keys() - self.views()):
            hashes = self.hashes(table, needed[table])
            if hashes is not None:
                kept[table] = hashes
        return kept

    def hashes(self, table: str, names: Iterable[str]) -> dict[str, str] | None:
        """This snapshot's hashes of ``names`` (and of the rowids, ``""``) in ``table``."""
        wanted = {"" if n.lower() in _ROWID and n not in self.names(table) else n for n in names}
        wanted.add("")
        known = self._hashes.setdefault(table, {})
        if known is None:
            return None
        if self._same_pages(table):
            before = self._before_columns.get(table, {})
            known.update((n, before[n]) for n in wanted - known.keys() if n in before)
        missing = wanted - known.keys()
        if missing:  # one scan: what the last build needed of this table comes along
            missing |= self._before_columns.get(table, {}).keys() & self.names(table)
            found = _hash_columns(
                self._connection(), table, sorted(missing - {""}), self.names(table)
            )
            if found is None:
                self._hashes[table] = None
                return None
            known.update(found)
        return {name: known[name] for name in sorted(wanted)}

    def names(self, table: str) -> frozenset[str]:
        """The columns of ``table`` (none for a name that is not a table)."""
        if table not in self._names:
            rows = self._connection().execute(f"pragma table_info({_quote(table)})")
            self._names[table] = frozenset(row[1] for row in rows)
        return self._names[table]

    def _covers(self, table: str, names: set[str]) -> bool:
        columns = self.names(table)
        return bool(columns) and columns <= names

    def views(self) -> frozenset[str]:
        if self._views is None:
            rows = self._connection().execute(f"select name from {SCHEMA} where type = 'view'")
            self._views = frozenset(name for (name,) in rows)
        return self._views


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    db.execute("pragma query_only = 1")
    db.execute(f"pragma mmap_size = {MMAP_BYTES}")
    return db


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _hash_columns(
    db: sqlite3.Connection, table: str, names: list[str], columns: frozenset[str]
) -> dict[str, str] | None:
    """One scan of ``table`` in rowid order: a hash of each column in ``names`` and of the rowids.

    ``columns`` are the table's own; a rowid alias none of them shadows is used.
    """
    alias = next((a for a in _ROWID if a not in columns), None)
    if alias is None or not set(names) <= columns:
        return None
    try:
        selected = ", ".join([alias, *map(_quote, names)])
        cursor = db.execute(f"select {selected} from {_quote(table)} order by {alias}")
        digests = [hashlib.sha256() for _ in range(len(names) + 1)]
        while chunk := cursor.fetchmany(_CHUNK):
            for digest, values in zip(digests, zip(*chunk, strict=True), strict=True):
                digest.update(repr(values).encode("utf-8", "surrogatepass"))
    except sqlite3.Error:
        return None  # a virtual or WITHOUT ROWID table: it counts as changed
    return {name: digest.hexdigest() for name, digest in zip(["", *names], digests, strict=True)}
