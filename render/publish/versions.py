"""Publishing a built tree as a new version: upload what is missing, write the tree, flip the root.

The protocol, per site (keys in ``render.publish.manifest``):

1. read ``root.json`` (one GET). When its ``files_hash`` equals the build's,
   nothing changed: no upload, no new version, one read in all;
2. read the live version's tree (the second GET); when the base_url names a
   host the live version does not have, claim it (``render.publish.hosts``): a host
   another site holds fails the publish here, before any upload;
3. upload, concurrently, each blob the live tree does not name;
4. write ``versions/<new>.json``;
5. write ``root.json`` last, as a compare-and-swap on the tag read in 1.

Nothing is LISTed, except to recover after a publish from this host that
started and never finished (the ledger remembers it): then one listing of the
site's blobs tells which are already there. Readers that follow root -> tree
-> blobs always see one whole version. Any failure before step 5 leaves the
old version live; a re-run uploads only what is still missing.

``render gc`` takes a lease in ``root.json`` itself while it may delete (see
``gc``): a publish that finds one waits for it to end before step 3, and one
whose step 5 fails because a gc took its lease meanwhile waits for it, uploads
its new blobs again and switches on the new tag.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Protocol

from render.build.objects import Objects
from render.build.tree import Build, FileEntry
from render.errors import ConflictError, PublishError
from render.publish import hosts, reports
from render.publish.hosts import host_of
from render.publish.manifest import (
    BLOB_CACHE,
    JSON_TYPE,
    ROOT_CACHE,
    Diff,
    GcLease,
    Root,
    VersionTree,
    blob_key,
    diff,
    files_digest,
    new_blobs,
    new_version_id,
    root_key,
    site_prefix,
    utc_now_iso,
    version_key,
)
from render.publish.store import Store, StoredObject

UploadProgress = Callable[[int, int], None]
"""``(blobs uploaded, blobs to upload)``, called from upload threads."""

GC_LEASE_SECONDS = 900.0
"""How long a gc may go on deleting after it confirmed its lease (see ``gc``)."""

_SWITCH_ATTEMPTS = 3  # root switches tried by a writer that a gc's lease keeps pushing back


class PublishOutcome(Enum):
    published = "published"  # a new version is live
    unchanged = "unchanged"  # the live version already has exactly these files


@dataclass(frozen=True, kw_only=True)
class Publication:
    """The result of the publish stage."""

    site: str
    outcome: PublishOutcome
    version: str  # the live version afterwards
    parent: str | None  # the version that was live before
    files: int
    bytes: int
    uploaded_blobs: int
    uploaded_bytes: int
    requests: int  # requests the store received (HTTP attempts for S3)
    seconds: float
    diff: Diff  # paths added, changed, removed against the parent (for a CDN purge)
    store: str


class VersionLedger(Protocol):
    """The part of ``render.run.ledger.Ledger`` that publishing writes to."""

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
    ) -> None: ...

    def set_live(self, owner: str, site: str, version: str | None) -> None: ...

    def live_version(self, owner: str, site: str) -> str | None: ...

    def begin_publish(self, owner: str, site: str, *, store: str, version: str) -> None: ...

    def end_publish(self, owner: str, site: str, *, store: str) -> None: ...

    def unfinished_publish(self, owner: str, site: str, *, store: str) -> str | None: ...


def publish(
    build: Build,
    *,
    store: Store,
    ledger: VersionLedger | None,
    concurrency: int | None = None,
    grace_hours: float = 48.0,
    progress: UploadProgress | None = None,
    now: datetime | None = None,
) -> Publication:
    """Make ``build``'s tree the live version of its site in ``store``."""
    return publish_tree(
        build.files,
        build.objects,
        owner=build.site.id.owner,
        name=build.site.id.name,
        base_url=build.site.base_url,
        store=store,
        ledger=ledger,
        concurrency=concurrency,
        grace_hours=grace_hours,
        progress=progress,
        now=now,
    )


def publish_tree(
    files: Mapping[str, FileEntry],
    objects: Path,
    *,
    owner: str,
    name: str,
    base_url: str,
    store: Store,
    ledger: VersionLedger | None,
    concurrency: int | None = None,
    grace_hours: float = 48.0,
    progress: UploadProgress | None = None,
    now: datetime | None = None,
) -> Publication:
    """``publish`` for a bare tree: ``files`` (path -> entry) with bytes in the folder ``objects``."""
    site = f"{owner}/{name}"
    started = time.monotonic()
    requests_before = store.request_count()
    try:
        return _publish(
            files,
            objects,
            owner=owner,
            name=name,
            base_url=base_url,
            store=store,
            ledger=ledger,
            concurrency=concurrency or store.concurrency,
            grace_hours=grace_hours,
            progress=progress,
            now=now,
            started=started,
            requests_before=requests_before,
        )
    except PublishError as exc:
        raise exc.with_site(site) from None


def _publish(
    files: Mapping[str, FileEntry],
    objects: Path,
    *,
    owner: str,
    name: str,
    base_url: str,
    store: Store,
    ledger: VersionLedger | None,
    concurrency: int,
    grace_hours: float,
    progress: UploadProgress | None,
    now: datetime | None,
    started: float,
    requests_before: int,
) -> Publication:
    site = f"{owner}/{name}"
    digest = files_digest(files)
    total_bytes = sum(e.size for e in files.values())
    root, tag = _after_gc(store, *read_root(store, owner=owner, name=name), owner=owner, name=name)

    def result(
        outcome: PublishOutcome, version: str, parent: str | None, **kw: object
    ) -> Publication:
        return Publication(
            site=site,
            outcome=outcome,
            version=version,
            parent=parent,
            files=len(files),
            bytes=total_bytes,
            requests=store.request_count() - requests_before,
            seconds=time.monotonic() - started,
            store=store.description,
            **kw,  # type: ignore[arg-type]
        )

    if root is not None and root.files_hash == digest:
        _ledger_live(ledger, owner, name, root.version)
        return result(
            PublishOutcome.unchanged,
            root.version,
            root.previous,
            uploaded_blobs=0,
            uploaded_bytes=0,
            diff=diff(files, files),
        )
    live = read_tree(store, owner=owner, name=name, version=root.version) if root else None
    live_files: Mapping[str, FileEntry] = live.files if live else {}
    if live is not None and root is not None and dict(live.files) == dict(files):
        _ledger_live(ledger, owner, name, root.version)
        return result(
            PublishOutcome.unchanged,
            root.version,
            root.previous,
            uploaded_blobs=0,
            uploaded_bytes=0,
            diff=diff(files, files),
        )

    parent = root.version if root else None
    version = new_version_id(now=now, after=parent)
    created = utc_now_iso(now)
    # a host the live version does not have yet is claimed first: a second site fails here
    host, old_host = host_of(base_url), host_of(root.base_url) if root else None
    if host is not None and host != old_host:
        hosts.claim(store, host=host, site=site, version=version, grace_hours=grace_hours, now=now)
    missing = new_blobs(files, live.hashes() if live else ())
    if ledger is not None:
        if ledger.unfinished_publish(owner, name, store=store.description) and missing:
            # an earlier publish from here stopped half-way: skip what it already uploaded,
            # trusting only blobs young enough that gc cannot delete them under us.
            fresh_after = time.time() - grace_hours * 3600 / 2
            present = {
                obj.key.rsplit("/", 1)[1]
                for obj in store.list(f"{site_prefix(owner, name)}blobs/")
                if obj.modified > fresh_after
            }
            missing = {h: e for h, e in missing.items() if h not in present}
        ledger.begin_publish(owner, name, store=store.description, version=version)

    upload_blobs(
        store, missing, objects, owner=owner, name=name, concurrency=concurrency, progress=progress
    )
    tree = VersionTree(version=version, parent=parent, created=created, files=files)
    store.put(
        version_key(owner, name, version),
        tree.to_bytes(),
        content_type=JSON_TYPE,
        cache_control=BLOB_CACHE,
    )
    new_root = Root(
        version=version,
        site=site,
        base_url=base_url,
        previous=parent,
        published=created,
        files_hash=digest,
    )

    def upload_again() -> None:  # a gc that began after the root was read may have taken them
        upload_blobs(
            store, missing, objects, owner=owner, name=name, concurrency=concurrency, progress=None
        )

    try:
        _switch_past_gc(
            store,
            owner=owner,
            name=name,
            root=new_root,
            tag=tag,
            on_top_of=parent,
            again=upload_again,
        )
    except ConflictError:
        with contextlib.suppress(PublishError):  # the loser's tree would only confuse a listing
            store.delete([version_key(owner, name, version)])
        raise
    if old_host is not None and old_host != host:
        with contextlib.suppress(PublishError):  # a claim left behind is free after the grace
            hosts.release(store, host=old_host, site=site, version=version, now=now)
    uploaded_bytes = sum(e.size for e in missing.values())
    seconds = time.monotonic() - started
    if ledger is not None:
        ledger.record_version(
            owner,
            name,
            version=version,
            parent=parent,
            created=created,
            files=len(files),
            bytes=total_bytes,
            new_blobs=len(missing),
            new_bytes=uploaded_bytes,
            seconds=seconds,
            live=True,
        )
        ledger.end_publish(owner, name, store=store.description)
    return result(
        PublishOutcome.published,
        version,
        parent,
        uploaded_blobs=len(missing),
        uploaded_bytes=uploaded_bytes,
        diff=diff(live_files, files),
    )


def _ledger_live(ledger: VersionLedger | None, owner: str, name: str, version: str) -> None:
    if ledger is not None and ledger.live_version(owner, name) != version:
        ledger.set_live(owner, name, version)


def upload_blobs(
    store: Store,
    blobs: Mapping[str, FileEntry],
    objects: Path,
    *,
    owner: str,
    name: str,
    concurrency: int,
    progress: UploadProgress | None,
) -> None:
    """Upload each blob (hash -> an entry naming its type) from the build's ``objects`` folder."""
    if not blobs:
        return
    total = len(blobs)
    done = 0
    stored = Objects(objects)
    for digest in blobs:
        if not stored.has(digest):
            raise PublishError(
                f"the build's object {digest} is missing from {objects}",
                hint="rebuild with --force; the build folder is incomplete",
            )

    def one(digest: str, entry: FileEntry) -> None:
        key = blob_key(owner, name, digest)
        loose = stored.loose(digest)  # a file of its own: a large one may go up in parts
        if loose is not None:
            store.put_file(key, loose, content_type=entry.type, cache_control=BLOB_CACHE)
        else:
            store.put(key, stored.read(digest), content_type=entry.type, cache_control=BLOB_CACHE)

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="render-upload")
    try:
        pending: set[Future[None]] = {pool.submit(one, d, e) for d, e in blobs.items()}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                future.result()  # the first failure stops the publish
                done += 1
            if progress is not None:
                progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_root(store: Store, *, owner: str, name: str) -> tuple[Root | None, str | None]:
    """The live root and its tag; (None, None) when the site was never published."""
    key = root_key(owner, name)
    got = store.get_tagged(key)
    if got is None:
        return None, None
    data, tag = got
    return Root.from_bytes(data, key=key), tag


def read_tree(store: Store, *, owner: str, name: str, version: str) -> VersionTree:
    key = version_key(owner, name, version)
    data = store.get(key)
    if data is None:
        raise PublishError(
            f"{key} is missing from {store.description}",
            hint="root.json names a version whose tree is gone; 'render rollback' to a version"
            " that 'render versions' lists",
        )
    tree = VersionTree.from_bytes(data, key=key)
    if tree.version != version:
        raise PublishError(f"{key} in the store is corrupt: it holds version {tree.version}")
    return tree


def switch_root(store: Store, *, owner: str, name: str, root: Root, tag: str | None) -> None:
    """Write ``root.json`` if it still carries ``tag``; raise ``ConflictError`` if another won.

    A write that succeeded but whose response was lost comes back, after the
    client's automatic retry, as a failed condition: the root is re-read, and
    when it already names this version the switch did happen.
    """
    key = root_key(owner, name)
    if store.put_if(
        key, root.to_bytes(), tag=tag, content_type=JSON_TYPE, cache_control=ROOT_CACHE
    ):
        return
    current, _ = read_root(store, owner=owner, name=name)
    if current is not None and current.version == root.version:
        return
    winner = current.version if current else "none"
    raise ConflictError(
        f"another publisher switched the root to {winner} while this one was writing"
        f" {root.version}; {winner} stays live",
        hint="run the publish again to put this build on top of it",
    )


def _after_gc(
    store: Store, root: Root | None, tag: str | None, *, owner: str, name: str
) -> tuple[Root | None, str | None]:
    """``root`` and ``tag``, or, while a gc of the site holds its lease, the root once it is over.

    The wait is bounded: a gc deletes nothing after its lease expires, and a
    writer stops waiting then (see ``GcLease.running``).
    """
    delay = 0.1
    while root is not None and root.gc is not None and root.gc.running(time.time()):
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
        root, tag = read_root(store, owner=owner, name=name)
    return root, tag


def _switch_past_gc(
    store: Store,
    *,
    owner: str,
    name: str,
    root: Root,
    tag: str | None,
    on_top_of: str | None,
    again: Callable[[], None],
) -> None:
    """``switch_root``; when only a gc's lease changed the root since ``tag``, wait it out and retry.

    A gc that took its lease after this writer read the root may have listed
    blobs this writer uploaded again as old and deleted them: ``again`` puts
    back whatever that could be (or checks that it is still there) before the
    switch is tried on the new tag. A root that another publish or rollback
    switched (it names another version than ``on_top_of``, or carries no gc
    record) wins, as before.
    """
    for attempt in range(_SWITCH_ATTEMPTS):
        try:
            switch_root(store, owner=owner, name=name, root=root, tag=tag)
            return
        except ConflictError:
            current, tag = _after_gc(
                store, *read_root(store, owner=owner, name=name), owner=owner, name=name
            )
            if current is None or current.gc is None or current.version != on_top_of:
                raise
            if attempt == _SWITCH_ATTEMPTS - 1:
                raise ConflictError(
                    f"gc of the site took its lease {_SWITCH_ATTEMPTS} times while {root.version}"
                    f" waited to go live; {current.version} stays live",
                    hint="run it again once 'render gc' of this site is done",
                ) from None
        again()


# --- versions, rollback, gc ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VersionInfo:
    version: str
    parent: str | None
    created: str
    files: int
    bytes: int
    new_blobs: int  # blobs its parent's tree does not name
    new_bytes: int
    live: bool


def version_ids(store: Store, *, owner: str, name: str) -> list[str]:
    """Every version id of a site in the store, newest first (one LIST)."""
    prefix = f"{site_prefix(owner, name)}versions/"
    ids = [
        o.key[len(prefix) : -len(".json")]
        for o in store.list(prefix)
        if o.key.endswith(".json") and "/" not in o.key[len(prefix) :]
    ]
    return sorted(ids, reverse=True)


def list_versions(store: Store, *, owner: str, name: str, limit: int = 50) -> list[VersionInfo]:
    """The site's versions in the store, newest first, with sizes and which one is live."""
    try:
        root, _ = read_root(store, owner=owner, name=name)
        ids = version_ids(store, owner=owner, name=name)[:limit]
        trees = {v: read_tree(store, owner=owner, name=name, version=v) for v in ids}
    except PublishError as exc:
        raise exc.with_site(f"{owner}/{name}") from None
    out = []
    for v in ids:
        tree = trees[v]
        parent = trees.get(tree.parent) if tree.parent else None
        fresh = new_blobs(tree.files, parent.hashes() if parent else ())
        out.append(
            VersionInfo(
                version=v,
                parent=tree.parent,
                created=tree.created,
                files=len(tree.files),
                bytes=tree.total_bytes,
                new_blobs=len(fresh),
                new_bytes=sum(e.size for e in fresh.values()),
                live=root is not None and root.version == v,
            )
        )
    return out


@dataclass(frozen=True, kw_only=True)
class Rollback:
    site: str
    version: str  # live now
    previous: str  # live before


def rollback(
    store: Store,
    *,
    owner: str,
    name: str,
    to: str | None = None,
    ledger: VersionLedger | None = None,
    now: datetime | None = None,
) -> Rollback:
    """Make an earlier version live in one write (default: the one before the live one)."""
    site = f"{owner}/{name}"
    try:
        root, tag = _after_gc(
            store, *read_root(store, owner=owner, name=name), owner=owner, name=name
        )
        if root is None:
            raise PublishError("nothing is published yet", hint="publish with 'render force SITE'")
        ids = version_ids(store, owner=owner, name=name)
        if to is None:
            older = [v for v in ids if v < root.version]
            if not older:
                raise PublishError(
                    f"no version older than the live {root.version}",
                    hint="'render versions SITE' lists them; name one to roll forward",
                )
            target = older[0]
        elif to not in ids:
            raise PublishError(
                f"no version {to!r} in {store.description}",
                hint="'render versions SITE' lists the versions that exist",
            )
        else:
            target = to
        if target == root.version:
            return Rollback(site=site, version=target, previous=root.version)
        tree = read_tree(store, owner=owner, name=name, version=target)
        new_root = Root(
            version=target,
            site=site,
            base_url=root.base_url,
            previous=root.version,
            published=utc_now_iso(now),
            files_hash=files_digest(tree.files),
        )
        live = root.version

        def still_there() -> None:  # a gc keeps the trees of what it keeps whole, blobs included
            if not store.exists(version_key(owner, name, target)):
                raise PublishError(
                    f"gc removed version {target} while this rollback waited for it;"
                    f" {live} stays live",
                    hint="'render versions SITE' lists the versions that are left",
                )

        _switch_past_gc(
            store, owner=owner, name=name, root=new_root, tag=tag, on_top_of=live, again=still_there
        )
    except PublishError as exc:
        raise exc.with_site(site) from None
    if ledger is not None:
        ledger.set_live(owner, name, target)
    return Rollback(site=site, version=target, previous=root.version)


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


def gc(
    store: Store,
    *,
    owner: str,
    name: str,
    keep: int = 10,
    grace_hours: float = 48.0,
    dry_run: bool = False,
    now: float | None = None,
) -> GcReport:
    """Delete versions beyond the newest ``keep`` (never the live one) and unnamed blobs.

    A blob survives when a kept version names it or when it is younger than
    ``grace_hours``; so does a version tree younger than that. Version trees go
    first, then blobs: a crash in between leaves only extra blobs.

    Publishes and rollbacks on this machine never run beside it: the CLI holds
    the site lock, as builds do. Against writers on other machines, gc takes a
    lease in ``root.json`` itself, a compare-and-swap like every root switch,
    before it lists anything, and renews it with a second compare-and-swap on
    the tag it wrote, after listing and before deleting. If the root changed in
    between, nothing is deleted. So no version goes live naming a blob that gc
    deleted:

    - a writer that reads the root while the lease is held waits until the gc
      is done before it uploads anything;
    - a writer that read the root before the lease (and may have uploaded again
      a blob gc then listed as old) loses its own root switch; it waits for the
      gc to finish, uploads its new blobs again (a rollback checks that its
      version's tree is still there; a tree gc keeps, it keeps whole) and
      switches on the new tag;
    - a writer whose switch went through before the renewal makes the renewal
      fail; the live version at the renewal is kept whole, with every kept one;
    - a blob a publish skips because the live version names it stays, and one
      a resumed publish skips because it is there is younger than half the
      grace period.

    The renewed lease runs ``GC_LEASE_SECONDS``: gc sends no delete after that
    (by its own monotonic clock), and writers wait for it until
    ``LEASE_SKEW_SECONDS`` past its expiry, how far the machines' clocks may
    disagree. A gc killed while holding the lease delays that site's publishes
    until then. ``dry_run`` takes no lease and deletes nothing.
    """
    site = f"{owner}/{name}"
    cutoff = (time.time() if now is None else now) - grace_hours * 3600
    try:
        root, tag = read_root(store, owner=owner, name=name)
        if root is None:
            raise PublishError("nothing is published yet; gc has nothing to do")
        live = root.version
        if dry_run:
            plan = _gc_plan(store, root, owner=owner, name=name, keep=keep, cutoff=cutoff)
        else:
            with _HeldLease.taken(store, root, tag, owner=owner, name=name) as lease:
                plan = _gc_plan(store, lease.root, owner=owner, name=name, keep=keep, cutoff=cutoff)
                deadline = lease.renew()
                _delete_before(
                    store,
                    [version_key(owner, name, v) for v in plan.drop_versions],
                    deadline=deadline,
                )
                _delete_before(store, [o.key for o in plan.drop_blobs], deadline=deadline)
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
        freed_bytes=sum(o.size for o in plan.drop_blobs) + collected.bytes,
        young_blobs=plan.young_blobs,
        dry_run=dry_run,
        removed_reports=len(collected.keys),
    )


@dataclass(frozen=True, kw_only=True)
class _GcPlan:
    kept: tuple[str, ...]  # newest first
    drop_versions: tuple[str, ...]
    drop_blobs: tuple[StoredObject, ...]
    young_blobs: int


def _gc_plan(
    store: Store, root: Root, *, owner: str, name: str, keep: int, cutoff: float
) -> _GcPlan:
    prefix = site_prefix(owner, name)
    listed = store.list(f"{prefix}versions/")
    by_id = {o.key[len(prefix) + 9 : -5]: o for o in listed if o.key.endswith(".json")}
    ids = sorted(by_id, reverse=True)
    kept = set(ids[: max(keep, 1)]) | {root.version}
    kept |= {v for v in ids if by_id[v].modified >= cutoff}
    named: set[str] = set()
    for v in sorted(kept):
        if v in by_id or v == root.version:
            named |= read_tree(store, owner=owner, name=name, version=v).hashes()
    blobs = store.list(f"{prefix}blobs/")
    unnamed = [o for o in blobs if o.key.rsplit("/", 1)[1] not in named]
    drop_blobs = tuple(o for o in unnamed if o.modified < cutoff)
    return _GcPlan(
        kept=tuple(sorted(kept & set(ids), reverse=True)),
        drop_versions=tuple(v for v in ids if v not in kept),
        drop_blobs=drop_blobs,
        young_blobs=len(unnamed) - len(drop_blobs),
    )


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
        for _attempt in range(_SWITCH_ATTEMPTS):
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

    def _write(self, lease: GcLease) -> bool:
        """Compare-and-swap the root with ``lease``; on success, remember the new root and tag."""
        held = replace(self.root, gc=lease)
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
