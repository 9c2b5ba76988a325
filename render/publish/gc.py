"""Garbage collection: versions beyond the newest N, and the blobs and packs no kept version names.

gc holds the site lock (``render.run.locks``, taken by the CLI) against builds
and rollbacks on this machine, and a lease written into ``root.json`` with a
compare-and-swap against every other machine: publishes and rollbacks that see
a running lease wait for it (``render.publish.versions``), and gc deletes
nothing if the root changed while it listed. A version's stored reports
(``render.publish.reports``) go with it. The version the site's host claim
points the edge at (``render.publish.hosts``; one behind the root after a
crash between a switch and its pointer write) is kept like the live one.

A pack (``packs/<sha256>.pack``) stays while a kept version's tree names it
(its ``packs``), or while it is younger than the grace period: an in-flight
publish's packs are named by no tree yet. A loose blob stays while a kept
version names it outside its ``index``, or while it is young. When the live
version's blobs lie in too many packs, gc also repacks it
(``render.publish.repack``) and switches the root to the repacked version,
still under its lease.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from render.errors import ConflictError, PublishError
from render.publish import hosts, reports
from render.publish.manifest import (
    JSON_TYPE,
    ROOT_CACHE,
    GcLease,
    Root,
    VersionTree,
    delta_key,
    root_key,
    site_prefix,
    version_key,
)
from render.publish.repack import Repack, from_store, needs_repack, objects_of, rewrite
from render.publish.store import Store, StoredObject
from render.publish.versions import (
    DEFAULT_PACK_LIMIT,
    GC_LEASE_SECONDS,
    SWITCH_ATTEMPTS,
    read_root,
    read_tree,
)


@dataclass(frozen=True, kw_only=True)
class GcReport:
    site: str
    kept: tuple[str, ...]
    removed_versions: tuple[str, ...]
    removed_blobs: int
    freed_bytes: int
    young_blobs: int  # unnamed blobs kept because they are younger than the grace period
    dry_run: bool
    removed_reports: int = 0  # stored report files (render.publish.reports) that went with them
    removed_packs: int = 0
    young_packs: int = 0  # unnamed packs kept because they are younger than the grace period
    repack: Repack | None = None  # the live version repacked (or, in a dry run, to repack)


def gc(
    store: Store,
    *,
    owner: str,
    name: str,
    keep: int = 10,
    grace_hours: float = 48.0,
    dry_run: bool = False,
    now: float | None = None,
    pack_limit: int | None = DEFAULT_PACK_LIMIT,
) -> GcReport:
    """Delete versions beyond the newest ``keep`` (never the live one), unnamed blobs and packs.

    A blob or a pack survives when a kept version names it or when it is
    younger than ``grace_hours``; so does a version tree younger than that,
    and the version a young repacked one repeats (``repack_of``). Version
    trees go first, then blobs and packs: a crash in between leaves only extra
    ones.

    Publishes and rollbacks on this machine never run beside it: the CLI holds
    the site lock, as builds do. Against writers on other machines, gc takes a
    lease in ``root.json`` itself, a compare-and-swap like every root switch,
    before it lists anything, and renews it with a second compare-and-swap on
    the tag it wrote, after listing and before deleting. If the root changed in
    between, nothing is deleted. So no version goes live naming a blob or pack
    that gc deleted:

    - a writer that reads the root while the lease is held waits until the gc
      is done before it uploads anything;
    - a writer that read the root before the lease (and may have uploaded again
      a blob gc then listed as old, or a pack no tree named yet) loses its own
      root switch; it waits for the gc to finish, uploads its new blobs again
      (its packs, rebuilt from the build: ``packs.put_back``; a rollback checks
      that its version's tree is still there; a tree gc keeps, it keeps whole)
      and switches on the new tag, also when gc repacked the version it
      builds on meanwhile;
    - a writer whose switch went through before the renewal makes the renewal
      fail; the live version at the renewal is kept whole, with every kept one;
    - a blob a publish skips because the live version names it stays, and one
      a resumed publish skips because it is there is younger than half the
      grace period.

    The renewed lease runs ``GC_LEASE_SECONDS``: gc sends no delete after that
    (by its own monotonic clock), and writers wait for it until
    ``LEASE_SKEW_SECONDS`` past its expiry, how far the machines' clocks may
    disagree. A gc killed while holding the lease delays that site's publishes
    until then.

    After deleting, when the live version needs more objects than
    ``repack.needs_repack`` allows and ``pack_limit`` is set (``[store] layout
    = "packs"``), gc repacks it: new packs, a new version with the same files,
    and the root switched to it on the lease's tag (a root that changed
    meanwhile wins: the repack is dropped with a ``ConflictError``), then the
    host claim pointed at it. Nothing the old version needs is deleted in the
    same run. ``dry_run`` takes no lease and deletes and writes nothing.
    """
    site = f"{owner}/{name}"
    cutoff = (time.time() if now is None else now) - grace_hours * 3600
    repacked: Repack | None = None
    try:
        root, tag = read_root(store, owner=owner, name=name)
        if root is None:
            raise PublishError("nothing is published yet; gc has nothing to do")
        live = root.version
        if dry_run:
            plan = _gc_plan(store, root, owner=owner, name=name, keep=keep, cutoff=cutoff)
            repacked = _repack_plan(plan.live_tree, pack_limit)
        else:
            with _HeldLease.taken(store, root, tag, owner=owner, name=name) as lease:
                plan = _gc_plan(store, lease.root, owner=owner, name=name, keep=keep, cutoff=cutoff)
                deadline = lease.renew()
                for keys in (
                    [version_key(owner, name, v) for v in plan.drop_versions],
                    [o.key for o in plan.drop_deltas],
                    [o.key for o in plan.drop_blobs],
                    [o.key for o in plan.drop_packs],
                ):
                    _delete_before(store, keys, deadline=deadline)
                if (
                    pack_limit is not None
                    and needs_repack(plan.live_tree, limit=pack_limit) is not None
                ):
                    repacked = _repack(lease, plan.live_tree, limit=pack_limit)
                live = lease.root.version
        # a version's reports go with it (after it: a crash in between leaves only reports)
        collected = reports.collect(
            store,
            owner=owner,
            name=name,
            kept={*plan.kept, live},
            dropped=set(plan.drop_versions),
            cutoff=cutoff,
            dry_run=dry_run,
        )
    except PublishError as exc:
        raise exc.with_site(site) from None
    return GcReport(
        site=site,
        kept=plan.kept,
        removed_versions=plan.drop_versions,
        removed_blobs=len(plan.drop_blobs),
        freed_bytes=sum(o.size for o in (*plan.drop_blobs, *plan.drop_packs)) + collected.bytes,
        young_blobs=plan.young_blobs,
        dry_run=dry_run,
        removed_reports=len(collected.keys),
        removed_packs=len(plan.drop_packs),
        young_packs=plan.young_packs,
        repack=repacked,
    )


@dataclass(frozen=True, kw_only=True)
class _GcPlan:
    kept: tuple[str, ...]  # newest first
    drop_versions: tuple[str, ...]
    drop_blobs: tuple[StoredObject, ...]
    young_blobs: int
    live_tree: VersionTree  # the tree of the live version the plan keeps whole
    drop_deltas: tuple[StoredObject, ...] = ()  # deltas to or from a version not kept
    drop_packs: tuple[StoredObject, ...] = ()
    young_packs: int = 0


def _gc_plan(
    store: Store, root: Root, *, owner: str, name: str, keep: int, cutoff: float
) -> _GcPlan:
    prefix = site_prefix(owner, name)
    listed = store.list(f"{prefix}versions/")
    by_id = {o.key[len(prefix) + 9 : -5]: o for o in listed if o.key.endswith(".json")}
    ids = sorted(by_id, reverse=True)
    kept = set(ids[: max(keep, 1)]) | {root.version} | _edge_pointer(store, root, f"{owner}/{name}")
    kept |= {v for v in ids if by_id[v].modified >= cutoff}
    trees = _kept_trees(store, kept, by_id, root=root, cutoff=cutoff, owner=owner, name=name)
    kept |= set(trees)
    loose: set[str] = set()  # blobs a kept version reads from their own keys
    packs: set[str] = set()
    for tree in trees.values():
        loose |= {d for d in tree.sizes if d not in tree.index}
        packs.update(tree.packs)
    blobs = store.list(f"{prefix}blobs/")
    unnamed = [o for o in blobs if o.key.rsplit("/", 1)[1] not in loose]
    drop_blobs = tuple(o for o in unnamed if o.modified < cutoff)
    stray = [o for o in store.list(f"{prefix}packs/") if _pack_id(o.key) not in packs]
    drop_packs = tuple(o for o in stray if o.modified < cutoff)
    deltas = store.list(f"{prefix}deltas/")
    drop_deltas = tuple(
        o for o in deltas if o.modified < cutoff and not _delta_kept(o.key[len(prefix) + 7 :], kept)
    )
    return _GcPlan(
        kept=tuple(sorted(kept & set(ids), reverse=True)),
        drop_versions=tuple(v for v in ids if v not in kept),
        drop_blobs=drop_blobs,
        young_blobs=len(unnamed) - len(drop_blobs),
        live_tree=trees[root.version],
        drop_deltas=drop_deltas,
        drop_packs=drop_packs,
        young_packs=len(stray) - len(drop_packs),
    )


def _kept_trees(
    store: Store,
    kept: set[str],
    by_id: Mapping[str, StoredObject],
    *,
    root: Root,
    cutoff: float,
    owner: str,
    name: str,
) -> dict[str, VersionTree]:
    """The trees of the ``kept`` versions that exist, and of each version a kept one younger
    than the grace period repacks (a reader may have started on it before the repack)."""
    trees: dict[str, VersionTree] = {}
    todo = sorted(kept)
    while todo:
        v = todo.pop()
        if v in trees or (v not in by_id and v != root.version):
            continue
        tree = trees[v] = read_tree(store, owner=owner, name=name, version=v)
        young = v not in by_id or by_id[v].modified >= cutoff
        if tree.repack_of is not None and young:
            todo.append(tree.repack_of)
    return trees


def _pack_id(key: str) -> str:
    return key.rsplit("/", 1)[1].removesuffix(".pack")


def _repack_plan(tree: VersionTree, limit: int | None) -> Repack | None:
    """The repack ``tree`` needs (``version`` None: not made yet), or None."""
    after = None if limit is None else needs_repack(tree, limit=limit)
    if after is None:
        return None
    return Repack(of=tree.version, version=None, before=objects_of(tree), after=after)


def _repack(lease: _HeldLease, tree: VersionTree, *, limit: int) -> Repack:
    """Repack the live ``tree`` and switch the root to the new version on the lease's tag."""
    store, owner, name = lease.store, lease.owner, lease.name
    new = rewrite(
        store,
        tree,
        owner=owner,
        name=name,
        limit=limit,
        read=from_store(store, owner=owner, name=name, tree=tree),
    )
    switched = replace(lease.root, version=new.version, previous=tree.version)
    if not lease.switch(switched):
        with contextlib.suppress(PublishError):  # its packs are young: a later gc takes them
            store.delete(
                [
                    version_key(owner, name, new.version),
                    delta_key(owner, name, new.version, tree.version),
                ]
            )
        current, _ = read_root(store, owner=owner, name=name)
        raise ConflictError(
            f"root.json changed while gc repacked {tree.version}"
            f" ({current.version if current else 'none'} is live); the repack was dropped",
            hint="the deletes before it stand; the next gc repacks if the live version needs it",
        )
    host = hosts.host_of(switched.base_url)
    if host is not None:
        with contextlib.suppress(PublishError):  # a claim left behind keeps the old one kept
            hosts.point(store, host=host, site=switched.site)
    return Repack(
        of=tree.version, version=new.version, before=objects_of(tree), after=len(new.packs)
    )


def _edge_pointer(store: Store, root: Root, site: str) -> set[str]:
    """The version the claim on the root's host names for the edge (what the Worker serves)."""
    host = hosts.host_of(root.base_url)
    if host is None:
        return set()
    try:
        held = hosts.read_claim(store, host)
    except PublishError:
        return set()  # a corrupt claim points nowhere: the Worker serves nothing from it
    if held is None or held.claim.site != site or held.claim.live is None:
        return set()
    return {held.claim.live.version}


def _delta_kept(rest: str, kept: set[str]) -> bool:
    """``<version>/<older>.json`` (a delta's key under ``deltas/``): are both ends kept?"""
    version, _, older = rest.removesuffix(".json").partition("/")
    return version in kept and older in kept


def _delete_before(store: Store, keys: Sequence[str], *, deadline: float) -> None:
    """Delete ``keys`` in batches, none sent after ``deadline`` (``time.monotonic``)."""
    for start in range(0, len(keys), 1000):
        if time.monotonic() >= deadline:
            raise PublishError(
                f"gc ran past its lease ({GC_LEASE_SECONDS / 60:.0f} minutes) and stopped deleting",
                hint="nothing live was touched; run gc again to delete the rest",
            )
        store.delete(keys[start : start + 1000])


class _HeldLease:
    """A gc's lease in ``root.json``: taken, renewed once before deleting, given back when done."""

    def __init__(self, store: Store, *, owner: str, name: str, root: Root, tag: str) -> None:
        self.store, self.owner, self.name = store, owner, name
        self.root, self.tag = root, tag  # the root as this gc last wrote it, and its tag

    @classmethod
    @contextlib.contextmanager
    def taken(
        cls, store: Store, root: Root, tag: str | None, *, owner: str, name: str
    ) -> Iterator[_HeldLease]:
        held: _HeldLease | None = None
        for _attempt in range(SWITCH_ATTEMPTS):
            if root.gc is not None and root.gc.running(time.time()):
                raise PublishError(
                    f"another gc of this site is running ({root.gc.describe()})",
                    hint=f"wait for it to finish; its lease ends at {root.gc.expires}",
                )
            held = cls(store, owner=owner, name=name, root=root, tag=tag or "")
            if held._write(_new_lease()):
                break
            got, tag = read_root(store, owner=owner, name=name)
            if got is None:
                raise PublishError("root.json vanished while gc was starting")
            root, held = got, None
        if held is None:
            raise ConflictError(
                "the root kept changing while gc tried to take its lease; nothing was deleted",
                hint="run gc again when the site's publishes are done",
            )
        try:
            yield held
        finally:
            with contextlib.suppress(PublishError):  # else the lease runs out by itself
                held._write(replace(_new_lease(), done=True))

    def renew(self) -> float:
        """Renew the lease on the tag it was written with; the ``time.monotonic()`` to stop by.

        ``ConflictError`` when the root changed since the lease was taken: a
        version may have gone live that the listing did not keep.
        """
        deadline = time.monotonic() + GC_LEASE_SECONDS
        if not self._write(_new_lease()):
            raise ConflictError(
                "root.json changed while gc was listing (a publish or rollback went live);"
                " nothing was deleted",
                hint="run gc again",
            )
        return deadline

    def switch(self, root: Root) -> bool:
        """Compare-and-swap the root to ``root`` on the tag this gc wrote, its lease unchanged."""
        return self._write_root(replace(root, gc=self.root.gc))

    def _write(self, lease: GcLease) -> bool:
        """Compare-and-swap the root with ``lease``; on success, remember the new root and tag."""
        return self._write_root(replace(self.root, gc=lease))

    def _write_root(self, held: Root) -> bool:
        data = held.to_bytes()
        key = root_key(self.owner, self.name)
        # Read back either way: the new tag is the store's to make (an S3 ETag), and a
        # write whose response was lost comes back from the client's retry as a failed
        # condition. The lease's random id makes these bytes ours alone.
        self.store.put_if(
            key, data, tag=self.tag or None, content_type=JSON_TYPE, cache_control=ROOT_CACHE
        )
        got = self.store.get_tagged(key)
        if got is None or got[0] != data:
            return False
        self.root, self.tag = held, got[1]
        return True


def _new_lease() -> GcLease:
    """A lease from now for ``GC_LEASE_SECONDS``, with an id of its own (no bytes written twice)."""
    started = time.time()

    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return GcLease(
        id=secrets.token_hex(8),
        host=socket.gethostname(),
        pid=os.getpid(),
        started=stamp(started),
        expires=stamp(started + GC_LEASE_SECONDS),
    )
