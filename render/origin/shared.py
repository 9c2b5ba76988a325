"""What the origin's processes share on one machine (``render origin --workers N``).

Each process finds stale pages and renders them on its own, so two things are
arranged between them through the origin's folder (``<state>/origin``), with
two open files per process whatever the number of sites:

- **A scratch folder per process** (``p<pid>/<owner>/<site>/``), where its
  render processes write. The process holds a ``flock`` on ``p<pid>.lock``
  while it lives; a folder whose lock nobody holds was left by a process that
  died, and the next process to start removes it.
- **One render per page across processes**: before rendering a page a process
  takes a lock on that site's page (a byte-range lock, one byte per hash of
  site and path, in ``renders.lock``), then looks at the pages rendered on
  request (``render.build.onrequest``): a page another process rendered from
  the same database state is taken as it is, not rendered again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SLOTS = 1 << 30  # byte offsets for page locks: two paths share one only by a hash collision


class Shared:
    """This process's share of the origin's folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._scratch = folder / f"p{os.getpid()}"
        self._mine = os.open(folder / f"p{os.getpid()}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._mine, fcntl.LOCK_EX)
        self._pages = os.open(folder / "renders.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._sweep()

    def _sweep(self) -> None:
        """Remove the scratch folders of processes that are gone (their lock is free)."""
        for lock in self.folder.glob("p*.lock"):
            if lock.name == f"p{os.getpid()}.lock":
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            else:
                shutil.rmtree(self.folder / lock.stem, ignore_errors=True)
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def scratch(self, site: str) -> Path:
        """This process's scratch folder for ``site`` ("owner/name")."""
        return self._scratch / site

    @contextmanager
    def page(self, site: str, path: str) -> Iterator[None]:
        """Hold the lock on rendering ``site``'s ``path`` (other processes wait for it)."""
        key = f"{site}\0{path}".encode()
        slot = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % _SLOTS
        fcntl.lockf(self._pages, fcntl.LOCK_EX, 1, slot)
        try:
            yield
        finally:
            fcntl.lockf(self._pages, fcntl.LOCK_UN, 1, slot)

    def close(self) -> None:
        """Remove this process's scratch folder and let go of its lock."""
        shutil.rmtree(self._scratch, ignore_errors=True)
        (self.folder / f"p{os.getpid()}.lock").unlink(missing_ok=True)
        os.close(self._mine)
        os.close(self._pages)
