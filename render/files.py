"""File-system guarantees, one function each, named for what it promises.

Where durability matters and where it does not:

- ``replace_atomically``: a reader sees the old bytes or the new ones, never a
  torn file; after a power loss the new bytes may be gone. Enough for what
  render can make again: build objects, the build record (a lost record means
  one full rebuild), snapshots.
- ``replace_durably``: the same, and once it returns the new bytes survive a
  power loss (the file and its folder are synced). For what others rely on:
  the local store's keys (``root.json`` is the live version) and the mirror's
  trees, ``hosts.map`` and status. (A publish's new blobs are many: they are
  made durable together, with ``syncfs``, before any has its name; see
  ``render.publish.blobwrite``.)
- ``sync_folder``: a rename or a new entry in ``folder`` survives a power loss
  (the mirror's ``current`` switch).
- ``syncfs``: everything written to the file system so far survives a power
  loss: one call instead of an fsync per file and folder, for a folder of many
  new files filled first and only then named (a mirror release, the local
  store's new blobs).
- ``flocked``: an exclusive ``flock`` on a lock file held for a ``with`` block
  (the local store's compare-and-swap, the mirror's one sync at a time; the
  per-site build locks in ``render.run.locks`` add a holder record on top).
- ``utc_stamp``: the one text form of a moment in files and the ledger,
  ``2026-12-03T03:00:00Z``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path


def _tmp(target: Path) -> Path:
    # pid and thread: two writers of one target never share a temporary file
    return target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def replace_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file and a rename (no fsync)."""
    tmp = _tmp(target)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def replace_durably(target: Path, data: bytes, *, mode: int | None = None) -> None:
    """``replace_atomically``, with the file synced before the rename and its folder after.

    ``mode`` sets the file's permissions (a temporary file starts at 0600 under a
    strict umask; nginx must read the mirror's files).
    """
    tmp = _tmp(target)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_folder(target.parent)


def sync_folder(folder: Path) -> None:
    """Sync ``folder`` itself, so that its entries (renames, new names) survive a power loss."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush the file system holding ``path``: one call instead of an fsync per file and folder."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = getattr(libc, "syncfs", None)
        if call is None or call(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@contextlib.contextmanager
def flocked(lock_file: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (made if missing) for the block.

    With ``wait=False`` raises ``BlockingIOError`` at once when another holds it.
    """
    with open(lock_file, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def utc_stamp(moment: datetime | None = None) -> str:
    """``moment`` (default now) in UTC, to the second: ``2026-12-03T03:00:00Z``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
