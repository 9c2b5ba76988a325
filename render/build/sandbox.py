"""Fences around tenant code: the Jinja sandbox and the SQL fence.

Templates run in Jinja's immutable sandbox with autoescape on and undefined
names an error. The sandbox bounds nothing about CPU or memory, so the
operators that can blow up in one step (``**`` and ``*``) are intercepted, and
the worker processes that render carry CPU and memory limits (see
``render.build.workers``).

Queries run on the snapshot only, opened read-only, with an authorizer that
allows reading and nothing else, no attached databases, a bound on SQL length
and a deadline enforced by a progress handler. Their results are bounded too:
rows are counted as they are fetched, and a row or a result over its limit
stops the query before the rest is held in memory.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, TemplateNotFound
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from render.build.sitefiles import SiteFolder
from render.errors import BuildError, QueryError

MAX_POWER_EXPONENT = 64
MAX_REPEAT_ITEMS = 1_000_000
QUERY_MAX_BYTES = 256_000_000  # the defaults of [limits] query_max_bytes and row_max_bytes
ROW_MAX_BYTES = 64_000_000
# What a fetched row costs besides its text and blobs, as the limits count it: the
# tuple and, per value, its pointer and object header (an int, a float, a str's header).
_ROW_BYTES = 64
_VALUE_BYTES = 16
_SIZED = (str, bytes)

# --- templates ---------------------------------------------------------------


class SiteLoader(BaseLoader):
    """Loads templates from one site's templates folder and nowhere else.

    Names with ``..`` or absolute paths are refused, and so is a symlink whose
    target lies outside the folder. The file found is opened without following
    links (``render.build.sitefiles``): one swapped in after the check is refused too.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = self.resolve(template)
        try:
            source = self._read(template, path).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TemplateNotFound(f"{template} (not UTF-8: {exc.reason})") from None
        mtime = path.stat().st_mtime_ns
        return source, str(path), lambda: path.stat().st_mtime_ns == mtime

    def read(self, template: str) -> bytes:
        """The bytes of ``template``, opened without following a link (``render.build.sitefiles``).

        ``resolve`` finds where a link inside the folder leads; the file is
        then opened one folder at a time from there, so a link swapped in
        after that check is refused, not followed.
        """
        return self._read(template, self.resolve(template))

    def _read(self, template: str, path: Path) -> bytes:
        try:
            with SiteFolder(
                self.folder, inside=self.folder.parent, label=self.folder.name
            ) as folder:
                return folder.read_bytes(path.relative_to(self.folder).parts)
        except BuildError:
            raise TemplateNotFound(template) from None

    def resolve(self, template: str) -> Path:
        parts = template.replace("\\", "/").split("/")
        if template.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise TemplateNotFound(template)
        path = (self.folder / "/".join(parts)).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            raise TemplateNotFound(template)
        return path

    def list_templates(self) -> list[str]:
        found = []
        for dirpath, _dirs, files in os.walk(self.folder):
            for name in files:
                rel = os.path.relpath(os.path.join(dirpath, name), self.folder)
                found.append(rel.replace(os.sep, "/"))
        return sorted(found)


_DICT_ATTRIBUTES = frozenset(dir(dict))


class TenantEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the operators that allocate without bound fenced."""

    intercepted_binops = frozenset({"**", "*"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``row.title`` on a row (a plain dict): its key, as Jinja's rule gives.

        Jinja tries the attribute first and the key when that fails; a dict
        has no attributes but its methods, so for any other name the answer
        is the key, without raising and catching an AttributeError on every
        column a template reads. Method names (``items``, ``get``...) take
        the sandbox's own path.
        """
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER_EXPONENT:
                raise SecurityError(f"exponent {right!r} is over the limit of {MAX_POWER_EXPONENT}")
            return left**right
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple, bytes))
                    and isinstance(count, int)
                    and len(seq) * count > MAX_REPEAT_ITEMS
                ):
                    raise SecurityError(
                        f"repeating a sequence to {len(seq) * count} items is over the limit"
                    )
            return left * right
        return super().call_binop(context, operator, left, right)


def make_environment(folder: Path, *, extensions: Sequence[type] = ()) -> TenantEnvironment:
    env = TenantEnvironment(
        loader=SiteLoader(folder),
        autoescape=True,
        undefined=StrictUndefined,
        extensions=list(extensions),
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=-1,
    )
    return env


# --- SQL ---------------------------------------------------------------------

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_DENIED_FUNCTIONS = {
    "load_extension",
    "readfile",
    "writefile",
    "edit",
    "fts3_tokenizer",
    "sqlite_offset",
}


def _check(action: int, arg2: str | None) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


Row = dict[str, Any]

MMAP_BYTES = 256 << 20
"""How much of a snapshot the build process reads through mmap (faster than read() copies)."""

Read = tuple[str, str]
"""(table, column) a query read, as SQLite's authorizer reports it; column "" is the rows."""

VOLATILE = ""
"""The table of a read that stands for a function whose result varies between runs."""

# Functions whose result is not a function of the database alone. Date functions
# count whatever their arguments: only 'now' varies, but telling needs the values.
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "randomblob",
        "date",
        "time",
        "datetime",
        "julianday",
        "unixepoch",
        "strftime",
        "timediff",
        "current_date",
        "current_time",
        "current_timestamp",
        "changes",
        "total_changes",
        "last_insert_rowid",
        "sqlite_version",
        "sqlite_source_id",
    }
)


def result_hash(names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> str:
    """A stable hash of a query result (column names, order and values)."""
    text = repr((tuple(names), rows))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class QueryRunner:
    """Runs tenant SQL on a snapshot, reading only, within a time limit."""

    def __init__(
        self,
        snapshot: Path,
        *,
        seconds: float,
        max_length: int,
        max_bytes: int = QUERY_MAX_BYTES,
        row_max_bytes: int = ROW_MAX_BYTES,
        mmap_bytes: int = 0,
    ) -> None:
        self.seconds = seconds
        self.max_length = max_length
        self.max_bytes = max_bytes
        self.row_max_bytes = row_max_bytes
        self._db = sqlite3.connect(
            f"{snapshot.as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        self._db.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self._db.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, max_length)
        # Route queries run in the parent: no single value may be huge (zeroblob(1e9)),
        # and SQLite refuses one before it is made. (SQLite caps the limit at its own.)
        self._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, min(row_max_bytes, 2**31 - 1))
        self._db.execute("pragma query_only = 1")
        if mmap_bytes:
            self._db.execute(f"pragma mmap_size = {int(mmap_bytes)}")
        self._reading: set[Read] = set()
        self._reads: dict[str, tuple[Read, ...]] = {}
        self._db.set_authorizer(self._authorize)
        self._deadline = 0.0
        self._db.set_progress_handler(self._progress, 10_000)

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
    ) -> int:
        verdict = _check(action, arg2)
        if verdict != sqlite3.SQLITE_OK:
            return verdict
        if action == sqlite3.SQLITE_READ and arg1:
            self._reading.add((arg1, arg2 or ""))
        elif action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in VOLATILE_FUNCTIONS:
            self._reading.add((VOLATILE, (arg2 or "").lower()))
        return verdict

    def reads_of(self, sql: str) -> tuple[Read, ...] | None:
        """The columns ``sql`` read when it first ran here (None if it has not run)."""
        return self._reads.get(sql)

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def close(self) -> None:
        self._db.close()

    def run(self, sql: str, params: Mapping[str, Any] | None = None, *, what: str) -> list[Row]:
        """Rows as dicts; ``what`` names the route or query in errors."""
        names, rows = self.fetch(sql, params, what=what)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def run_hashed(
        self, sql: str, params: Mapping[str, Any] | None = None, *, what: str
    ) -> tuple[list[Row], str]:
        """Rows as dicts and the result's hash."""
        names, rows = self.fetch(sql, params, what=what)
        return [dict(zip(names, row, strict=True)) for row in rows], result_hash(names, rows)

    def hash(self, sql: str, params: Mapping[str, Any] | None = None, *, what: str) -> str:
        """Only the result's hash (cheaper than building rows)."""
        return result_hash(*self.fetch(sql, params, what=what))

    def fetch(
        self, sql: str, params: Mapping[str, Any] | None = None, *, what: str
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and row tuples."""
        names, rows, _size = self.fetch_counted(sql, params, what=what)
        return names, rows

    def fetch_counted(
        self, sql: str, params: Mapping[str, Any] | None = None, *, what: str, held: int = 0
    ) -> tuple[list[str], list[tuple[Any, ...]], int]:
        """Column names, row tuples and the result's size in bytes as the limits count it.

        ``held`` is the size of earlier results the caller still holds: they
        count against ``max_bytes`` together with this one.
        """
        if len(sql) > self.max_length:
            raise QueryError(
                f"{what}: SQL is {len(sql)} characters; the limit is {self.max_length}"
            )
        self._deadline = time.monotonic() + self.seconds
        first = sql not in self._reads
        if first:
            self._reading = set()
        try:
            cursor = self._db.execute(sql, dict(params or {}))
            names = [d[0] for d in cursor.description or ()]
            try:
                rows, size = self._rows(cursor, len(names), held=held, what=what)
            finally:
                cursor.close()
            if first:
                self._reads[sql] = tuple(sorted(self._reading))
            return names, rows, size
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if text == "string or blob too big":
                raise QueryError(
                    f"{what}: a string or blob is over the limit of {self.row_max_bytes} bytes",
                    hint=_ROW_HINT,
                ) from None
            if text == "interrupted":
                raise QueryError(
                    f"{what}: query ran past its time limit of {self.seconds:g} s",
                    hint="add an index, narrow the query, or raise [limits] query_seconds",
                ) from None
            if "not authorized" in text or "prohibited" in text or "authorization denied" in text:
                raise QueryError(
                    f"{what}: query refused: only reading is allowed ({text})",
                    hint="tenant SQL may only SELECT; writes, ATTACH, PRAGMA and extensions are refused",
                ) from None
            raise QueryError(f"{what}: {text}") from None
        except (sqlite3.Warning, sqlite3.ProgrammingError, ValueError, OverflowError) as exc:
            raise QueryError(f"{what}: {exc}") from None

    def _rows(
        self, cursor: sqlite3.Cursor, width: int, *, held: int, what: str
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Every row of ``cursor`` and their size, counted as they are fetched.

        A row or a result over its limit stops the query there, before the
        rest is held in memory.
        """
        rows: list[tuple[Any, ...]] = []
        total = held
        fixed = _ROW_BYTES + _VALUE_BYTES * width
        for row in cursor:
            size = fixed
            for value in row:
                if isinstance(value, _SIZED):
                    size += len(value)
            if size > self.row_max_bytes:
                raise QueryError(
                    f"{what}: row {len(rows) + 1} of the query's result is {size} bytes; "
                    f"the limit is {self.row_max_bytes}",
                    hint=_ROW_HINT,
                )
            total += size
            if total > self.max_bytes:
                whose = (
                    "the route queries' results together are" if held else "the query's result is"
                )
                raise QueryError(
                    f"{what}: {whose} over the limit of {self.max_bytes} bytes "
                    f"(at row {len(rows) + 1})",
                    hint="select only the rows and columns the pages use (paginate long lists), "
                    "or raise [limits] query_max_bytes",
                )
            rows.append(row)
        return rows, total - held


_ROW_HINT = "select only the columns the pages use, or raise [limits] row_max_bytes"
