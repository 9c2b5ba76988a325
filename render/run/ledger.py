"""The host's own SQLite: sites, builds, versions, check results, timings.

One file, ``<state>/ledger.sqlite``. Every table is keyed by ``(owner, site)``
so a dashboard can chart any site over time. Writes are short transactions;
WAL mode lets ``render status`` read while a build writes.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypedDict, TypeVar

from render.errors import DiskFullError, is_disk_full

_SCHEMA = """
create table if not exists sites (
    owner text not null, site text not null,
    live_version text,
    last_input_hash text,
    primary key (owner, site)
);
create table if not exists runs (
    id integer primary key,
    owner text not null, site text not null,
    reason text not null,          -- force, nightly, schedule, auto, catch-up, build
    started real not null, finished real,
    outcome text,                  -- published, unchanged, skipped, failed, failed_check, ...
    stage text, message text,
    pages integer, rendered integer, reused integer,
    version text,
    timings text                   -- json {stage: seconds}
);
create index if not exists runs_site on runs (owner, site, started);
create table if not exists versions (
    owner text not null, site text not null, version text not null,
    parent text, created text not null,
    files integer not null, bytes integer not null,
    new_blobs integer not null, new_bytes integer not null,
    seconds real,
    live integer not null default 0,
    primary key (owner, site, version)
);
create table if not exists seo_findings (
    run_id integer not null, owner text not null, site text not null,
    rule text not null, level text not null, path text not null, message text not null
);
create index if not exists seo_site on seo_findings (owner, site, run_id);
create table if not exists lighthouse_scores (
    run_id integer not null, owner text not null, site text not null,
    path text not null, measured_version text,
    performance real, accessibility real, best_practices real, seo real,
    metrics text,                  -- json: lcp, cls, tbt, fcp, speed_index
    report text                    -- sha256 of the HTML report (in the build's objects)
);
create index if not exists lighthouse_site on lighthouse_scores (owner, site, run_id);
create table if not exists publishes (
    owner text not null, site text not null, store text not null,
    version text not null, started real not null,
    primary key (owner, site, store)
);
"""


class AuditCarry(TypedDict):
    """What carrying an audit's no-JavaScript read forward needs (see ``lighthouse.check``)."""

    inputs: str  # hash of the site's subresources when measured
    parity: Mapping[str, Any]  # {"finding": a ParityFinding's JSON, or None}
    network: str | None  # the NetworkBlock value it was measured under
    method: str | None  # the Method value


class AuditRow(TypedDict):
    """One page's Lighthouse audit as the ledger keeps it (a plain dict at run time)."""

    path: str  # the page's path in the build
    measured_version: str | None  # content hash of the page the scores were measured on
    scores: Mapping[str, float | None]  # performance, accessibility, best-practices, seo
    metrics: Mapping[str, float | None]  # lcp, cls, tbt, fcp, speed_index
    report: str | None  # sha256 of the HTML report (in the build's objects)
    carry: AuditCarry | None  # None: recorded without a no-JavaScript read


@dataclass(frozen=True, kw_only=True)
class RunRow:
    id: int
    owner: str
    site: str
    reason: str
    started: float
    finished: float | None
    outcome: str | None
    stage: str | None
    message: str | None
    pages: int | None
    rendered: int | None
    reused: int | None
    version: str | None


P = ParamSpec("P")
R = TypeVar("R")


def _writes(method: Callable[Concatenate[Ledger, P], R]) -> Callable[Concatenate[Ledger, P], R]:
    """A method that writes the ledger: a full disk is ``DiskFullError`` naming the file."""

    @functools.wraps(method)
    def write(ledger: Ledger, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(ledger, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            if not is_disk_full(exc):
                raise
            path = ledger.path
            raise DiskFullError.of(
                exc, writing=f"the ledger {path}", folder=path.parent, stage="ledger"
            ) from exc

    return write


class Ledger:
    """A connection to the ledger; use as a context manager or call ``close``."""

    @_writes
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self._add_column("lighthouse_scores", "report", "text")
        self._add_column("lighthouse_scores", "carry", "text")  # JSON; see lighthouse.check

    def _add_column(self, table: str, column: str, kind: str) -> None:
        """Bring a ledger made by an older render up to this schema (additive only)."""
        names = {row[1] for row in self._db.execute(f"pragma table_info({table})")}
        if column not in names:
            self._db.execute(f"alter table {table} add column {column} {kind}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("begin immediate")
        try:
            yield self._db
            self._db.execute("commit")
        except BaseException:
            if self._db.in_transaction:  # (SQLite may have rolled back already: a full disk)
                self._db.execute("rollback")
            raise

    # --- sites ---------------------------------------------------------------

    @_writes
    def ensure_site(self, owner: str, site: str) -> None:
        self._db.execute("insert or ignore into sites (owner, site) values (?, ?)", (owner, site))

    def last_input_hash(self, owner: str, site: str) -> str | None:
        row = self._db.execute(
            "select last_input_hash from sites where owner=? and site=?", (owner, site)
        ).fetchone()
        return row[0] if row else None

    @_writes
    def set_input_hash(self, owner: str, site: str, value: str | None) -> None:
        self.ensure_site(owner, site)
        self._db.execute(
            "update sites set last_input_hash=? where owner=? and site=?", (value, owner, site)
        )

    # --- runs ----------------------------------------------------------------

    @_writes
    def start_run(self, owner: str, site: str, *, reason: str) -> int:
        self.ensure_site(owner, site)
        cur = self._db.execute(
            "insert into runs (owner, site, reason, started) values (?, ?, ?, ?)",
            (owner, site, reason, time.time()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    @_writes
    def finish_run(
        self,
        run_id: int,
        *,
        outcome: str,
        stage: str | None = None,
        message: str | None = None,
        pages: int | None = None,
        rendered: int | None = None,
        reused: int | None = None,
        version: str | None = None,
        timings: Mapping[str, float] | None = None,
    ) -> None:
        self._db.execute(
            "update runs set finished=?, outcome=?, stage=?, message=?, pages=?, rendered=?,"
            " reused=?, version=?, timings=? where id=?",
            (
                time.time(),
                outcome,
                stage,
                message,
                pages,
                rendered,
                reused,
                version,
                json.dumps(dict(timings or {}), sort_keys=True),
                run_id,
            ),
        )

    def last_run(self, owner: str, site: str) -> RunRow | None:
        row = self._db.execute(
            "select id, owner, site, reason, started, finished, outcome, stage, message, pages,"
            " rendered, reused, version from runs where owner=? and site=? and finished is not null"
            " order by id desc limit 1",
            (owner, site),
        ).fetchone()
        return RunRow(**dict(row)) if row else None

    # --- versions ------------------------------------------------------------

    @_writes
    def record_version(
        self,
        owner: str,
        site: str,
        *,
        version: str,
        parent: str | None,
        created: str,
        files: int,
        bytes: int,  # noqa: A002 - the column's name
        new_blobs: int,
        new_bytes: int,
        seconds: float,
        live: bool,
    ) -> None:
        with self.transaction() as db:
            db.execute("insert or ignore into sites (owner, site) values (?, ?)", (owner, site))
            db.execute(
                "insert or replace into versions (owner, site, version, parent, created, files,"
                " bytes, new_blobs, new_bytes, seconds, live) values (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    owner,
                    site,
                    version,
                    parent,
                    created,
                    files,
                    bytes,
                    new_blobs,
                    new_bytes,
                    seconds,
                    0,
                ),
            )
            if live:
                self._set_live(db, owner, site, version)

    @_writes
    def set_live(self, owner: str, site: str, version: str | None) -> None:
        with self.transaction() as db:
            self._set_live(db, owner, site, version)

    @staticmethod
    def _set_live(db: sqlite3.Connection, owner: str, site: str, version: str | None) -> None:
        db.execute("update versions set live=0 where owner=? and site=? and live=1", (owner, site))
        if version is not None:
            db.execute(
                "update versions set live=1 where owner=? and site=? and version=?",
                (owner, site, version),
            )
        db.execute("insert or ignore into sites (owner, site) values (?, ?)", (owner, site))
        db.execute(
            "update sites set live_version=? where owner=? and site=?", (version, owner, site)
        )

    def live_version(self, owner: str, site: str) -> str | None:
        row = self._db.execute(
            "select live_version from sites where owner=? and site=?", (owner, site)
        ).fetchone()
        return row[0] if row else None

    def versions(self, owner: str, site: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "select * from versions where owner=? and site=? order by version desc", (owner, site)
        ).fetchall()
        return [dict(r) for r in rows]

    # --- publishes in flight (publish.py) -------------------------------------

    @_writes
    def begin_publish(self, owner: str, site: str, *, store: str, version: str) -> None:
        """Mark a publish to ``store`` as started: blobs may exist that no version names."""
        self._db.execute(
            "insert or replace into publishes (owner, site, store, version, started)"
            " values (?, ?, ?, ?, ?)",
            (owner, site, store, version, time.time()),
        )

    @_writes
    def end_publish(self, owner: str, site: str, *, store: str) -> None:
        self._db.execute(
            "delete from publishes where owner=? and site=? and store=?", (owner, site, store)
        )

    def unfinished_publish(self, owner: str, site: str, *, store: str) -> str | None:
        """The version of a publish to ``store`` that started and never finished, if any."""
        row = self._db.execute(
            "select version from publishes where owner=? and site=? and store=?",
            (owner, site, store),
        ).fetchone()
        return row[0] if row else None

    # --- check results -------------------------------------------------------

    @_writes
    def record_seo(
        self, run_id: int, owner: str, site: str, findings: list[Mapping[str, str]]
    ) -> None:
        with self.transaction() as db:
            db.executemany(
                "insert into seo_findings (run_id, owner, site, rule, level, path, message)"
                " values (?,?,?,?,?,?,?)",
                [
                    (run_id, owner, site, f["rule"], f["level"], f["path"], f["message"])
                    for f in findings
                ],
            )

    @_writes
    def record_lighthouse(
        self, run_id: int, owner: str, site: str, audits: Iterable[AuditRow]
    ) -> None:
        # .get: a row made by hand may leave out what it lacks (stored as NULL, read back as None)
        with self.transaction() as db:
            db.executemany(
                "insert into lighthouse_scores (run_id, owner, site, path, measured_version,"
                " performance, accessibility, best_practices, seo, metrics, report, carry)"
                " values (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        owner,
                        site,
                        a["path"],
                        a.get("measured_version"),
                        a["scores"].get("performance"),
                        a["scores"].get("accessibility"),
                        a["scores"].get("best-practices"),
                        a["scores"].get("seo"),
                        json.dumps(a.get("metrics", {}), sort_keys=True),
                        a.get("report"),
                        None if a.get("carry") is None else json.dumps(a["carry"], sort_keys=True),
                    )
                    for a in audits
                ],
            )

    def last_lighthouse(self, owner: str, site: str) -> list[AuditRow]:
        """The latest audit of each page of a site, in ``record_lighthouse``'s shape, by path.

        ``lighthouse.check(..., previous=...)`` carries these forward for pages
        whose content hash still equals ``measured_version``; ``carry`` (JSON)
        holds what carrying the no-JavaScript read forward too needs.
        """
        rows = self._db.execute(
            "select path, measured_version, performance, accessibility, best_practices, seo,"
            " metrics, report, carry from lighthouse_scores where rowid in (select max(rowid)"
            " from lighthouse_scores where owner=? and site=? group by path) order by path",
            (owner, site),
        ).fetchall()
        return [
            {
                "path": r["path"],
                "measured_version": r["measured_version"],
                "scores": {
                    "performance": r["performance"],
                    "accessibility": r["accessibility"],
                    "best-practices": r["best_practices"],
                    "seo": r["seo"],
                },
                "metrics": json.loads(r["metrics"] or "{}"),
                "report": r["report"],
                "carry": json.loads(r["carry"]) if r["carry"] else None,
            }
            for r in rows
        ]

    # --- reading for reports (render.report) ------------------------------------

    def select(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """The rows of one read-only ``select`` over these tables (the report readers' SQL)."""
        if not sql.lstrip().lower().startswith(("select", "with")):
            raise ValueError("Ledger.select runs select statements only")
        return self._db.execute(sql, tuple(params)).fetchall()


def open_ledger(state_dir: Path) -> Ledger:
    return Ledger(state_dir / "ledger.sqlite")
