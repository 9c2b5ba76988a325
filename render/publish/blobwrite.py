"""Many new files into one folder, each written once, none named until all are durable.

What the local store does with a publish's new blobs (``LocalStore.put_blobs``):
creating a file is what costs on this disk, and an fsync per file (what
``render.files.replace_durably`` does for one key) costs more than the rest of
the publish together. So:

1. each file is created under its own name in a staging folder beside the
   target, ``.<target>.staging-<pid>-<n>`` (no key names it; the store's
   ``list`` skips folders starting with a dot), with no temporary file each;
2. one ``syncfs`` makes every one of them durable;
3. the staging folder is renamed to the target whole when the target does not
   exist yet (a site's first publish), or each file is renamed into it;
   then the target's folder (and its parent) is synced.

A reader sees a file whole or not at all, and only durable ones. A crash
leaves the target as it was and a staging folder, which the next batch for
the same target removes once its process is gone.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from render.files import sync_folder, syncfs

BatchProgress = Callable[[int, int], None]
"""``(files written, files to write)``."""

_batches = itertools.count()

BLOB_MODE = 0o444
"""A local store's blob is read-only: it is immutable, and the ``--out`` tree and the
local mirror may share its inode (hard links), so nothing may write into it in place."""


BlobSource = Callable[[str], "bytes | Path"]
"""A blob's bytes by its hash, or a file that holds exactly them (a large one is copied)."""


@runtime_checkable
class BlobBatches(Protocol):
    """A store that takes many blobs in one call, cheaper than one ``put`` each."""

    def put_blobs(
        self,
        folder: str,
        digests: Collection[str],
        source: BlobSource,
        *,
        progress: BatchProgress | None = None,
        replace: bool = False,
    ) -> int:
        """Make each of ``digests`` an object ``<folder>/<digest>``; the number written.

        Objects already there are not written again, unless ``replace`` (a
        repair of blobs found corrupt). None of the new ones has its name
        until every one is whole and durable.
        """
        ...


def link_or_copy(source: Path, dest: Path) -> None:
    """A hard link to ``source`` at ``dest``; a copy where links cannot be made."""
    try:
        os.link(source, dest)
    except FileNotFoundError:
        raise
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, dest)


def write_named_last(
    target: Path,
    names: Sequence[str],
    write: Callable[[str, str], None],
    *,
    progress: BatchProgress | None = None,
) -> int:
    """Create ``target/<name>`` for each of ``names`` by ``write(path, name)``; how many.

    ``write`` must create ``path`` (it does not exist) and fill it. Names
    already in ``target`` should be left out by the caller: a name renamed
    into ``target`` replaces what is there.
    """
    if not names:
        return 0
    _remove_stale(target)
    staging = target.with_name(f".{target.name}.staging-{os.getpid()}-{next(_batches)}")
    staging.mkdir(parents=True)
    try:
        _fill(staging, names, write, progress=progress)
        syncfs(staging)  # every new file whole on disk before any has its name
        if not target.exists():
            with contextlib.suppress(OSError):  # another batch named it first: one by one
                os.rename(staging, target)
        if staging.exists():
            target.mkdir(exist_ok=True)
            for name in names:
                os.rename(staging / name, target / name)
            sync_folder(target)
        sync_folder(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(names)


def _fill(
    staging: Path,
    names: Sequence[str],
    write: Callable[[str, str], None],
    *,
    progress: BatchProgress | None,
) -> None:
    """``write`` each name into ``staging``, in this one thread.

    Creating names in one folder is serialized by the kernel on the folder's
    lock: on this disk 2 or 8 threads took as long or longer than one
    (10,807 blobs, medians of 4 alternated runs: 1 thread 5.2 s, 2 threads
    5.4 s, 8 threads 8.0 s on a loaded machine) and cost more CPU time. And
    one future a file, waited on as each finished, cost more than the writing.
    """
    base = str(staging)
    total = len(names)
    for count, name in enumerate(names, 1):
        write(os.path.join(base, name), name)
        if progress is not None and (count % 256 == 0 or count == total):
            progress(count, total)


def write_new(path: str, data: bytes | Path, *, mode: int) -> None:
    """Create ``path`` (it must not exist) with ``mode``, holding ``data`` or a copy of that file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        if isinstance(data, Path):
            with open(data, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                sent = 0
                while sent < size and (step := os.sendfile(fd, src.fileno(), sent, size - sent)):
                    sent += step
        else:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _remove_stale(target: Path) -> None:
    """Staging folders beside ``target`` left by a process that is gone (a crash mid-batch)."""
    try:
        names = os.listdir(target.parent)
    except FileNotFoundError:
        return
    mark = f".{target.name}.staging-"
    for name in names:
        pid = name[len(mark) :].split("-", 1)[0] if name.startswith(mark) else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(target.parent / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
