"""A consistent, read-only copy of a site database and its content hash.

The copy is made with SQLite's online backup API in a single step (copying in
small steps restarts on every concurrent write and can livelock). The live
database is opened read-only, never with ``immutable=1`` (which returns wrong
results while it changes), and is read-locked only for the length of the copy.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from render.config import SiteConfig, SiteId
from render.errors import DiskFullError, SnapshotError, is_disk_full

# Header bytes that SQLite rewrites without a change of content: the file
# change counter (24..28), the schema cookie (40..44: a backup into an existing
# file bumps it; a real schema change shows in sqlite_schema's pages) and the
# version-valid-for number (92..100).
_VOLATILE_HEADER = ((24, 28), (40, 44), (92, 100))
_BUSY_TIMEOUT_MS = 10_000
_BUSY_SECONDS = 120.0  # give up when the application keeps the database locked this long


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    site: SiteId
    path: Path
    content_hash: str
    seconds: float
    size: int
    # sha256 of each table's and index's pages; empty when SQLite lacks dbstat
    table_hashes: Mapping[str, str] = field(default_factory=dict)


def table_hashes(path: Path) -> dict[str, str]:
    """sha256 over the pages of each table and index, so that a rebuild knows which changed.

    A query whose tables' pages are all unchanged returns what it returned
    before, so the build need not run it again.
    """
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        page_size = db.execute("pragma page_size").fetchone()[0]
        # Runs of consecutive pages of each table, found by SQLite and returned as
        # one JSON value: each row fetched, like each hash update below, takes
        # Python's GIL back from the thread that loads the last build's record
        # meanwhile, and waits for it. One page a row took three times as long.
        (listed,) = db.execute(
            "select json_group_array(json_array(name, first, stop)) from ("
            "  select name, min(pageno) as first, max(pageno) + 1 as stop from ("
            "    select name, pageno, pageno - row_number() over"
            "      (partition by name order by pageno) as run from dbstat"
            "  ) group by name, run order by name, first"
            ")"
        ).fetchone()
        runs = json.loads(listed)
    except sqlite3.Error:
        return {}
    finally:
        db.close()
    spans: dict[str, list[tuple[int, int]]] = {}
    for name, first, stop in runs:
        spans.setdefault(name, []).append((first, stop))
    hashes: dict[str, str] = {}
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            for name, table_spans in spans.items():
                parts: list[bytes | memoryview] = []
                for first, stop in table_spans:
                    if first == 1:  # the header's change counters are not content
                        page = bytearray(view[:page_size])
                        for begin, end in _VOLATILE_HEADER:
                            page[begin:end] = bytes(end - begin)
                        parts.append(bytes(page))
                        first = 2
                    if first < stop:
                        parts.append(view[(first - 1) * page_size : (stop - 1) * page_size])
                # one update a table: the pages joined first (a copy, but no GIL handoffs)
                joined = b"".join(parts)
                del parts
                hashes[name] = hashlib.sha256(joined).hexdigest()
        finally:
            view.release()
    return hashes


def content_hash(path: Path, tables: Mapping[str, str] | None = None) -> str:
    """sha256 of the database's content, ignoring header counters SQLite bumps on its own.

    With ``tables`` (``table_hashes`` of the file: every table's and index's
    pages, the schema's first page included) it is a hash of those, and the
    file is not read again; free pages, which hold no content, do not count.
    Without, or when SQLite lacks ``dbstat``, it is a hash of the whole file.
    """
    if tables:
        return hashlib.sha256(repr(sorted(tables.items())).encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        header = bytearray(fh.read(100))
        for start, end in _VOLATILE_HEADER:
            header[start:end] = bytes(end - start)
        digest.update(header)
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def take(
    site: SiteConfig, *, into: Path, busy_seconds: float = _BUSY_SECONDS
) -> Iterator[Snapshot]:
    """Copy ``site``'s database into ``into``/snapshot.db; remove it again on failure.

    While the application holds a lock that keeps readers out (a write transaction
    in rollback-journal mode), the copy waits, for at most ``busy_seconds``.
    """
    source = site.database
    if not source.is_file():
        raise SnapshotError(
            f"database {site.site.database} not found in {site.root}",
            site=str(site.id),
            hint="check [site] database in site.toml",
        )
    into.mkdir(parents=True, exist_ok=True)
    final = into / "snapshot.db"
    partial = into / f".snapshot-{os.getpid()}.db"
    started = time.perf_counter()
    give_up = time.monotonic() + busy_seconds

    def bounded(status: int, _remaining: int, _total: int) -> None:
        # sqlite3's backup() retries a busy source for ever; this ends the wait
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > give_up:
            raise SnapshotError(
                f"cannot copy {site.site.database}: the application kept it locked for over "
                f"{busy_seconds:g} s",
                site=str(site.id),
                hint="a write transaction is open for a long time; the live version is unchanged",
            )

    try:
        src = sqlite3.connect(
            f"{source.as_uri()}?mode=ro",
            uri=True,
            timeout=min(_BUSY_TIMEOUT_MS / 1000, busy_seconds),
        )
        if final.exists():  # overwriting the last copy's blocks is cheaper than allocating new
            os.replace(final, partial)
        try:
            dst = sqlite3.connect(partial)
            try:
                # a private file until it is complete: no journal, no syncs
                dst.execute("PRAGMA journal_mode=OFF")
                dst.execute("PRAGMA synchronous=OFF")
                src.backup(dst, pages=-1, progress=bounded)
                # A rollback-journal copy; WAL mode would leave -wal/-shm beside it.
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(partial, final)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError.of(
                exc,
                writing=f"the snapshot {final}",
                folder=final.parent,
                stage="snapshot",
                site=str(site.id),
            ) from exc
        raise SnapshotError(
            f"cannot copy {site.site.database}: {exc}",
            site=str(site.id),
            hint="is it an SQLite database? the live version is unchanged",
        ) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    tables = table_hashes(final)
    snap = Snapshot(
        site=site.id,
        path=final,
        content_hash=content_hash(final, tables),
        seconds=time.perf_counter() - started,
        size=final.stat().st_size,
        table_hashes=tables,
    )
    yield snap
