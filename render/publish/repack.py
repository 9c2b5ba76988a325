"""Repacking: the live version's blobs written again into as few packs as they fill.

A publish packs only what its version adds (``render.publish.packs``), so after
many publishes the live version's blobs lie in one pack per publish that
added one still in use, and a reader of the whole site (a new mirror's first
sync, the edge's cold cache) makes one request per pack. ``render gc`` repacks
when the live version needs more than ``REPACK_SLACK`` objects over the
fewest its bytes fill (``needs_repack``): it reads the blobs back from the
store, each checked against its hash, writes them into new packs (the packs a
first publish of the same files makes: sorted by path, at most ``[store]
pack_mb`` each), and writes a new version with the same files whose index
points at them, ``repack_of`` naming the version it repeats. gc switches the
root to it under its lease (``render.publish.gc``).

A repack is not a content change: the files and ``files_hash`` are the ones
of the version it repacks and the delta between them is empty, so a mirror or
a service worker on the old version finds nothing to fetch, ``render versions``
shows it as a repack, and ``render rollback`` passes over it. The old packs
stay while a kept version names them: gc keeps the repacked version while the
repack is younger than the grace period, for readers that started on it.

``render repair`` uses the same writer when a pack of the live version cannot
be put back byte for byte: its blobs come from the store, the bad ones from
the site's last build.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from render.publish.manifest import (
    BLOB_CACHE,
    VersionTree,
    new_blobs,
    new_version_id,
    pack_key,
    utc_now_iso,
)
from render.publish.packs import PACK_TYPE, Pack, StoredBlobs, pack_of, packed_tree, split
from render.publish.store import Store
from render.publish.versions import put_tree

REPACK_SLACK = 8
"""Objects (packs and loose blobs) the live version may need beyond the fewest its bytes fill
(``ceil(bytes / [store] pack_mb)``) before gc repacks it. A whole read of the site then costs at
most 8 requests over the least possible, fewer than one round of the 16 a store makes at once
(``[store] concurrency``), while a repack reads and writes the whole site: with one publish a
day that adds one pack, gc repacks at most every ninth day."""

Source = Callable[[Sequence[str]], Mapping[str, bytes]]
"""Reads blobs by hash: ``{hash: bytes}``, each checked against its hash."""


@dataclass(frozen=True, kw_only=True)
class Repack:
    """A repack gc made (or, in a dry run, would make) of the live version."""

    of: str  # the version repacked
    version: str | None  # the new version with the same files (None: a dry run)
    before: int  # objects a whole read of the old version needed (packs and loose blobs)
    after: int  # packs a whole read of the new one needs


def objects_of(tree: VersionTree) -> int:
    """Objects a whole read of ``tree`` asks for: its packs and its loose blobs."""
    return len(tree.packs) + sum(1 for digest in tree.sizes if digest not in tree.index)


def needs_repack(tree: VersionTree, *, limit: int, slack: int = REPACK_SLACK) -> int | None:
    """The packs a repack of ``tree`` makes, when it needs more than ``slack`` objects over
    the fewest its bytes fill; None when it does not."""
    if not tree.files:
        return None
    packs = len(split(new_blobs(tree.files, ()), limit=limit))
    fewest = max(1, math.ceil(sum(tree.sizes.values()) / limit))
    return packs if objects_of(tree) > fewest + slack else None


def from_store(store: Store, *, owner: str, name: str, tree: VersionTree) -> Source:
    """Blobs of ``tree`` read from the store (a missing or corrupt one raises ``PublishError``)."""
    blobs = StoredBlobs(store, owner=owner, name=name, tree=tree)

    def read(digests: Sequence[str]) -> Mapping[str, bytes]:
        got: dict[str, bytes] = {}
        blobs.fetch(digests, got.__setitem__, concurrency=store.concurrency)
        return got

    return read


def write_packs(
    store: Store, tree: VersionTree, *, owner: str, name: str, limit: int, read: Source
) -> list[Pack]:
    """Put ``tree``'s blobs into new packs: those a first publish of its files would make, one
    in memory at a time. Packs are named by their bytes: running it again puts the same ones."""
    packs: list[Pack] = []
    for run in split(new_blobs(tree.files, ()), limit=limit):
        got = read(run)
        pack, body = pack_of((digest, got[digest]) for digest in run)
        store.put(
            pack_key(owner, name, pack.id), body, content_type=PACK_TYPE, cache_control=BLOB_CACHE
        )
        packs.append(pack)
    return packs


def repacked_tree(
    tree: VersionTree, packs: Sequence[Pack], *, now: datetime | None = None
) -> VersionTree:
    """A new version with ``tree``'s files, its index pointing into ``packs`` (``repack_of``)."""
    bare = VersionTree(
        version=new_version_id(now=now, after=tree.version),
        parent=tree.version,
        created=utc_now_iso(now),
        files=tree.files,
    )
    return replace(packed_tree(bare, live=None, new=packs), repack_of=tree.version)


def rewrite(
    store: Store,
    tree: VersionTree,
    *,
    owner: str,
    name: str,
    limit: int,
    read: Source,
    now: datetime | None = None,
) -> VersionTree:
    """``write_packs``, then the new version's tree (and the empty delta from ``tree``) in the
    store; the new tree, not live yet."""
    packs = write_packs(store, tree, owner=owner, name=name, limit=limit, read=read)
    new = repacked_tree(tree, packs, now=now)
    put_tree(store, new, live=tree, owner=owner, name=name)
    return new
