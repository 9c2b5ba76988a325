"""Getting a new release's blobs: read from packs, downloaded, or linked from a local store.

A blob the version's index places in a pack is read by byte range (nearby
ranges of one pack in one request, so most of a pack is one GET: see
``render.publish.packs``), checked against its sha256, written once under
``.incoming/`` and renamed whole to its first path in the partial release. A loose blob from a store elsewhere
is downloaded into ``.incoming/`` and checked the same way. A local store's
loose blob (``LocalStore``, on this machine) is checked where it is and
hard-linked straight into the release: its blobs are read-only and never
written in place, so the release shares their bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Protocol

from render.build.tree import FileEntry
from render.errors import MirrorError, PublishError
from render.mirror.layout import Layout
from render.publish.blobwrite import write_new
from render.publish.manifest import VersionTree, blob_key
from render.publish.packs import RangeSource, StoredBlobs
from render.publish.store import LocalStore


class BlobSource(Protocol):
    """What fetching needs from a store (``MirrorStore`` has it)."""

    @property
    def description(self) -> str: ...

    def download(self, key: str, dest: Path) -> bool: ...


class PackSource(BlobSource, RangeSource, Protocol):
    """A store the mirror reads loose blobs and ranges of packs from."""


def fetch_release(
    store: PackSource,
    lay: Layout,
    tree: VersionTree,
    wanted: Mapping[str, FileEntry],
    by_hash: Mapping[str, list[str]],
    partial: Path,
    *,
    concurrency: int,
) -> int:
    """Every blob of ``wanted`` where the release can link it; the bytes read from the store."""
    packed = [d for d in wanted if d in tree.index]
    loose = {d: e for d, e in wanted.items() if d not in tree.index}
    total = _fetch_packed(store, lay, tree, packed, by_hash, partial, concurrency=concurrency)
    if isinstance(store, LocalStore):  # on this machine: links to its files, no download
        return total + link_blobs(store, lay, loose, by_hash, partial)
    return total + fetch_blobs(store, lay, loose, by_hash, concurrency=concurrency)


def _fetch_packed(
    store: PackSource,
    lay: Layout,
    tree: VersionTree,
    digests: list[str],
    by_hash: Mapping[str, list[str]],
    partial: Path,
    *,
    concurrency: int,
) -> int:
    """The packed blobs of ``digests``, each checked, then written once and renamed whole to
    its first path in the partial release (the other paths link to it)."""
    if not digests:
        return 0
    total = 0
    lock = threading.Lock()
    base, incoming = str(partial), str(lay.incoming)

    def keep(digest: str, data: bytes) -> None:
        nonlocal total
        tmp = os.path.join(incoming, f".{digest}.{threading.get_ident()}.part")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        write_new(tmp, data, mode=0o444)
        dest = os.path.join(base, by_hash[digest][0])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.rename(tmp, dest)
        with lock:
            total += len(data)

    def gone(digest: str, key: str) -> None:
        raise _missing(store, lay, key, by_hash[digest][0])

    blobs = StoredBlobs(store, owner=lay.owner, name=lay.name, tree=tree)
    try:
        blobs.fetch(digests, keep, concurrency=concurrency, missing=gone)
    except PublishError as exc:  # a blob whose bytes do not hash to its name
        raise Refused(
            exc.message,
            site=lay.site,
            hint="the release was refused and the served version is unchanged; run"
            f" 'render repair {lay.site}' on the host that builds the site",
        ) from None
    return total


class Refused(MirrorError):
    """A downloaded blob does not hash to its name."""


def fetch_blobs(
    store: BlobSource,
    lay: Layout,
    wanted: Mapping[str, FileEntry],
    by_hash: Mapping[str, list[str]],
    *,
    concurrency: int,
) -> int:
    if not wanted:
        return 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="mirror") as pool:
        futures = [pool.submit(_fetch_blob, store, lay, d, by_hash[d][0]) for d in wanted]
        wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.done() and not f.cancelled() and f.exception() for f in futures):
            pool.shutdown(wait=True, cancel_futures=True)  # stop fetching for a release we refuse
    for future in futures:
        if not future.cancelled() and (exc := future.exception()) is not None:
            raise exc
    return sum(f.result() for f in futures)


def _fetch_blob(store: BlobSource, lay: Layout, digest: str, path: str) -> int:
    key = blob_key(lay.owner, lay.name, digest)
    final = lay.incoming / digest
    tmp = lay.incoming / f".{digest}.{threading.get_ident()}.part"
    if not store.download(key, tmp):
        raise _missing(store, lay, key, path)
    actual = sha256_file(tmp)
    if actual != digest:
        tmp.unlink()
        raise _refused(lay, key, path, actual)
    st = tmp.stat()
    if st.st_mode & 0o444 != 0o444:  # nginx reads it (a link to a local store's blob already may)
        os.chmod(tmp, 0o644)
    os.replace(tmp, final)
    return st.st_size


def link_blobs(
    store: LocalStore,
    lay: Layout,
    wanted: Mapping[str, FileEntry],
    by_hash: Mapping[str, list[str]],
    partial: Path,
) -> int:
    """Each wanted blob checked against its hash in the local store, then hard-linked in.

    It goes straight to its first path in the partial release (the other paths
    link to it): no download, no ``.incoming`` copy. The store's blobs are
    read-only and never written in place, so what was checked is what is linked.
    """
    total = 0
    base = str(partial)
    folders: set[str] = set()
    for digest in wanted:  # plain strings and os calls: 10,000s of blobs in a first sync
        path = by_hash[digest][0]
        key = blob_key(lay.owner, lay.name, digest)
        source = store.local_path(key)
        try:
            actual, size = _sha256_and_size(str(source)) if source is not None else (None, 0)
        except FileNotFoundError:
            actual = None
        if actual is None:
            raise _missing(store, lay, key, path)
        if actual != digest:
            raise _refused(lay, key, path, actual)
        dest = os.path.join(base, path)
        folder = os.path.dirname(dest)
        if folder not in folders:
            os.makedirs(folder, exist_ok=True)
            folders.add(folder)
        if not store.link(key, dest):
            raise _missing(store, lay, key, path)
        total += size
    return total


def _sha256_and_size(path: str) -> tuple[str, int]:
    with open(path, "rb", buffering=0) as fh:
        data = fh.read()
        size = len(data)
        h = hashlib.sha256(data)
        while chunk := fh.read(1 << 20):  # the file grew past what read() returned: unlikely
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _missing(store: BlobSource, lay: Layout, key: str, path: str) -> MirrorError:
    return MirrorError(
        f"{key} ({path}) is missing from {store.description}",
        site=lay.site,
        hint=f"the store lost a blob the live version names; run 'render repair {lay.site}'"
        " on the host that builds the site",
    )


def _refused(lay: Layout, key: str, path: str, actual: str) -> Refused:
    return Refused(
        f"{key} ({path}) does not match its hash: its bytes hash to {actual}",
        site=lay.site,
        hint="the release was refused and the served version is unchanged; run"
        f" 'render repair {lay.site}' on the host that builds the site",
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
