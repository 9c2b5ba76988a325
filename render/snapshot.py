"""A consistent, read-only copy of a site database and its content hash.

The copy is made with SQLite's online backup API in a single step (copying in
small steps restarts on every concurrent write and can livelock). The live
database is opened read-only, never with ``immutable=1`` (which returns wrong
results while it changes), and is read-locked only for the length of the copy.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from render.config import SiteConfig, SiteId
from render.errors import SnapshotError

# Header bytes that SQLite rewrites without a change of content: the file
# change counter (24..28) and the version-valid-for number (92..100).
_VOLATILE_HEADER = ((24, 28), (92, 100))
_BUSY_TIMEOUT_MS = 10_000


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    site: SiteId
    path: Path
    content_hash: str
    seconds: float
    size: int


def content_hash(path: Path) -> str:
    """sha256 of the database file, ignoring header counters SQLite bumps on its own."""
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
def take(site: SiteConfig, *, into: Path) -> Iterator[Snapshot]:
    """Copy ``site``'s database into ``into``/snapshot.db; remove it again on failure."""
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
    try:
        src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst, pages=-1)
                # A rollback-journal copy; WAL mode would leave -wal/-shm beside it.
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(partial, final)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise SnapshotError(
            f"cannot copy {site.site.database}: {exc}",
            site=str(site.id),
            hint="is it an SQLite database? the live version is unchanged",
        ) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    snap = Snapshot(
        site=site.id,
        path=final,
        content_hash=content_hash(final),
        seconds=time.perf_counter() - started,
        size=final.stat().st_size,
    )
    yield snap
