"""Packs: a version's new blobs in a few store objects, read back whole or by byte range.

With R2, requests cost money and time and bytes do not, so a publish puts the
blobs its version adds over the live one into one or a few packs
(``sites/<owner>/<site>/packs/<sha256>.pack``: the blobs' bytes back to back,
named by the sha256 of the whole) instead of one object per blob. The
version file's ``index`` says where each blob is (``VersionTree.locate``);
``bench/packs.py`` measured the sizes (``[store] pack_mb``).

A pack written by version N holds exactly what N added over its parent, so a
reader k versions behind needs at most the k packs after its version (a
forward delta), and a reader that needs a few files of a pack asks for their
byte ranges, one request each. Nearby ranges are read as one request: a
request costs about as much as a megabyte.

Every blob read from a pack (or a loose key) is checked against its sha256
before anyone uses it: a truncated or corrupted pack is refused, never served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from render.build.objects import Objects
from render.build.tree import FileEntry
from render.errors import PublishError
from render.publish.manifest import BLOB_CACHE, VersionTree, blob_key, pack_key
from render.publish.store import Store

PACK_TYPE = "application/octet-stream"
MERGE_GAP = 1 << 20
"""Ranges of one pack closer than this are read as one request (a request's
latency to R2 costs about what a megabyte takes to arrive)."""
PACKS_IN_FLIGHT = 4  # packs a publish holds in memory while they upload


@dataclass(frozen=True, kw_only=True)
class Pack:
    """One pack a publish wrote: its id and where each of its blobs starts."""

    id: str
    size: int
    offsets: Mapping[str, int]  # blob hash -> byte offset


def build_objects(objects: Path, digests: Iterable[str]) -> Objects:
    """The build's objects folder, once it is known to hold every one of ``digests``."""
    stored = Objects(objects)
    for digest in digests:
        if not stored.has(digest):
            raise PublishError(
                f"the build's object {digest} is missing from {objects}",
                hint="rebuild with --force; the build folder is incomplete",
            )
    return stored


def split(blobs: Mapping[str, FileEntry], *, limit: int) -> list[list[str]]:
    """``blobs`` (in the order given) cut into runs of at most ``limit`` bytes each.

    A blob larger than ``limit`` gets a run of its own.
    """
    runs: list[list[str]] = []
    size = 0
    for digest, entry in blobs.items():
        if not runs or (size + entry.size > limit and runs[-1]):
            runs.append([])
            size = 0
        runs[-1].append(digest)
        size += entry.size
    return runs


def assemble(objects: Objects, digests: Sequence[str]) -> tuple[Pack, bytes]:
    """The pack of ``digests`` from a build's objects: its bytes and its index."""
    return pack_of((digest, objects.read(digest)) for digest in digests)


def pack_of(blobs: Iterable[tuple[str, bytes]]) -> tuple[Pack, bytes]:
    """The pack of ``(hash, bytes)`` in that order: its bytes and its index."""
    parts: list[bytes] = []
    offsets: dict[str, int] = {}
    at = 0
    for digest, data in blobs:
        offsets[digest] = at
        parts.append(data)
        at += len(data)
    body = b"".join(parts)
    return Pack(id=hashlib.sha256(body).hexdigest(), size=len(body), offsets=offsets), body


def upload_packs(
    store: Store,
    blobs: Mapping[str, FileEntry],
    objects: Path,
    *,
    owner: str,
    name: str,
    limit: int,
    skip: Callable[[str], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Pack]:
    """Put ``blobs`` (hash -> entry, in pack order) into the store as packs of at most ``limit``.

    ``skip(pack id)`` says a pack is in the store already (an interrupted
    publish of the same build put it: packs are named by their bytes, so a
    rerun makes the same ones). ``progress`` counts blobs.
    """
    stored = build_objects(objects, blobs)
    runs = split(blobs, limit=limit)
    packs: list[Pack] = []
    total, done = len(blobs), 0
    pool = ThreadPoolExecutor(max_workers=PACKS_IN_FLIGHT, thread_name_prefix="render-pack")
    pending: set[Future[int]] = set()

    def put(pack: Pack, body: bytes) -> int:
        if skip is None or not skip(pack.id):
            store.put(
                pack_key(owner, name, pack.id),
                body,
                content_type=PACK_TYPE,
                cache_control=BLOB_CACHE,
            )
        return len(pack.offsets)

    def settle(until: int) -> None:
        nonlocal pending, done
        while len(pending) > until:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                done += future.result()  # the first failure stops the publish
            if progress is not None:
                progress(done, total)

    try:
        for run in runs:
            pack, body = assemble(stored, run)
            packs.append(pack)
            settle(PACKS_IN_FLIGHT - 1)
            pending.add(pool.submit(put, pack, body))
        settle(0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return packs


def packed_tree(tree: VersionTree, *, live: VersionTree | None, new: Sequence[Pack]) -> VersionTree:
    """``tree`` with its ``packs`` and ``index``: the live version's entries for the blobs it
    keeps, and the new packs' for the rest (blobs in neither stay loose keys)."""
    wanted = tree.hashes()
    located: dict[str, tuple[str, int]] = {}
    if live is not None:
        for digest in wanted:
            where = live.locate(digest)
            if where is not None:
                located[digest] = where
    for pack in new:
        for digest, offset in pack.offsets.items():
            located[digest] = (pack.id, offset)
    order = sorted({pid for pid, _ in located.values()})
    position = {pid: i for i, pid in enumerate(order)}
    index = {d: (position[pid], off) for d, (pid, off) in located.items()}
    return VersionTree(
        version=tree.version,
        parent=tree.parent,
        created=tree.created,
        files=tree.files,
        packs=tuple(order),
        index=index,
    )


# --- reading -------------------------------------------------------------------


class RangeSource(Protocol):
    """What reading blobs needs from a store (``Store`` has it)."""

    @property
    def description(self) -> str: ...

    def get(self, key: str) -> bytes | None: ...

    def get_range(self, key: str, start: int, length: int) -> bytes | None: ...


@dataclass(frozen=True, kw_only=True)
class _Range:
    key: str
    start: int
    length: int
    blobs: tuple[tuple[str, int, int], ...]  # (hash, offset in the range, size)


class StoredBlobs:
    """A version's blobs in the store, read by hash and checked against it.

    ``read`` is one request (a byte range of a pack, or a loose key);
    ``fetch`` reads many, merging ranges of one pack that lie close together,
    so a reader that needs most of a pack reads it in one request.
    """

    def __init__(self, store: RangeSource, *, owner: str, name: str, tree: VersionTree) -> None:
        self.store = store
        self.owner = owner
        self.name = name
        self.tree = tree
        self._sizes = tree.sizes

    def read(self, digest: str) -> bytes | None:
        """The blob's bytes; None when the store lacks them. Raises ``PublishError`` when corrupt."""
        if digest not in self._sizes:
            return None
        where = self.tree.locate(digest)
        if where is None:
            key = blob_key(self.owner, self.name, digest)
            data = self.store.get(key)
        else:
            key = pack_key(self.owner, self.name, where[0])
            data = self.store.get_range(key, where[1], self._sizes[digest])
        if data is None:
            return None
        return self._checked(digest, data, key, 0 if where is None else where[1])

    def fetch(
        self,
        digests: Sequence[str],
        sink: Callable[[str, bytes], object],
        *,
        concurrency: int,
        missing: Callable[[str, str], None] | None = None,
    ) -> int:
        """Read each of ``digests`` and hand it to ``sink(hash, bytes)``; the requests made.

        A blob the store lacks goes to ``missing(hash, key)`` (or raises
        ``PublishError``); a corrupt one raises ``PublishError``.
        """
        ranges = list(self._ranges(digests))

        def one(span: _Range) -> None:
            data = (
                self.store.get(span.key)
                if span.start < 0
                else self.store.get_range(span.key, span.start, span.length)
            )
            if data is None:
                for digest, _, _ in span.blobs:
                    if missing is None:
                        raise PublishError(
                            f"{span.key} is missing from {self.store.description}",
                            hint="a gc deleted it, or the store was changed by hand;"
                            " 'render repair' checks the live version",
                        )
                    missing(digest, span.key)
                return
            for digest, at, size in span.blobs:
                part = data[at : at + size]
                sink(digest, self._checked(digest, part, span.key, max(span.start, 0) + at))

        if not ranges:
            return 0
        pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="render-read")
        try:
            pending = {pool.submit(one, span) for span in ranges}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return len(ranges)

    def _ranges(self, digests: Sequence[str]) -> Iterator[_Range]:
        by_pack: dict[str, list[tuple[int, str]]] = {}
        for digest in dict.fromkeys(digests):
            if digest not in self._sizes:
                continue
            where = self.tree.locate(digest)
            if where is None:
                yield _Range(
                    key=blob_key(self.owner, self.name, digest),
                    start=-1,
                    length=self._sizes[digest],
                    blobs=((digest, 0, self._sizes[digest]),),
                )
            else:
                by_pack.setdefault(where[0], []).append((where[1], digest))
        for pack, entries in sorted(by_pack.items()):
            entries.sort()
            key = pack_key(self.owner, self.name, pack)
            start, end = -1, -1
            group: list[tuple[str, int, int]] = []
            for offset, digest in entries:
                size = self._sizes[digest]
                if group and offset - end > MERGE_GAP:
                    yield _Range(key=key, start=start, length=end - start, blobs=tuple(group))
                    group = []
                if not group:
                    start = end = offset
                group.append((digest, offset - start, size))
                end = max(end, offset + size)
            if group:
                yield _Range(key=key, start=start, length=end - start, blobs=tuple(group))

    def _checked(self, digest: str, data: bytes, key: str, offset: int) -> bytes:
        if len(data) != self._sizes[digest] or hashlib.sha256(data).hexdigest() != digest:
            raise PublishError(
                f"{key} in {self.store.description} is corrupt: blob {digest} at offset"
                f" {offset} does not match its hash ({len(data)} of {self._sizes[digest]}"
                " bytes read)",
                hint="it was not used; 'render repair' puts the live version's blobs back",
            )
        return data


def put_back(
    store: Store,
    tree: VersionTree,
    digests: Collection[str],
    objects: Path,
    *,
    owner: str,
    name: str,
) -> None:
    """Upload again each pack of ``tree`` holding one of ``digests``, rebuilt from a build's
    objects (a gc that began after the publish read the root may have taken it)."""
    stored = Objects(objects)
    wanted = set(digests)
    by_pack: dict[int, list[tuple[int, str]]] = {}
    for digest, (pack, offset) in tree.index.items():
        by_pack.setdefault(pack, []).append((offset, digest))
    for pack, entries in sorted(by_pack.items()):
        if wanted.isdisjoint(d for _, d in entries):
            continue
        built, body = assemble(stored, [d for _, d in sorted(entries)])
        if built.id != tree.packs[pack]:
            raise PublishError(
                f"pack {tree.packs[pack]} of version {tree.version} cannot be rebuilt from"
                f" {objects}: its blobs make pack {built.id}",
                hint="publish the site again",
            )
        store.put(
            pack_key(owner, name, built.id), body, content_type=PACK_TYPE, cache_control=BLOB_CACHE
        )
