"""Publishing a built tree as a new version: upload what is missing, write the tree, flip the root.

The protocol, per site (keys in ``render.publish.manifest``):

1. read ``root.json`` (one GET). When its ``files_hash`` equals the build's,
   nothing changed: no upload, no new version, one read in all;
2. read the live version's tree (the second GET); when the base_url names a
   host the live version does not have, claim it (``render.publish.hosts``): a host
   another site holds fails the publish here, before any upload;
3. upload, concurrently, each blob the live tree does not name;
4. write ``versions/<new>.json``;
5. write ``root.json`` last, as a compare-and-swap on the tag read in 1;
6. point the host claim at the new version (``hosts.point``: the edge Worker's
   pointer, one GET of the claim before the switch and one conditional PUT after).

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
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Protocol

from render.build.tree import Build, FileEntry
from render.errors import ConflictError, PublishError
from render.publish import hosts
from render.publish.blobwrite import BlobBatches
from render.publish.hosts import host_of
from render.publish.manifest import (
    BLOB_CACHE,
    JSON_TYPE,
    ROOT_CACHE,
    Delta,
    Diff,
    Root,
    VersionTree,
    blob_key,
    delta_key,
    diff,
    files_digest,
    new_blobs,
    new_version_id,
    pack_key,
    root_key,
    site_prefix,
    utc_now_iso,
    version_key,
)
from render.publish.packs import build_objects, packed_tree, put_back, upload_packs
from render.publish.store import Store

UploadProgress = Callable[[int, int], None]
"""``(blobs uploaded, blobs to upload)``, called from upload threads."""

GC_LEASE_SECONDS = 900.0
"""How long a gc may go on deleting after it confirmed its lease (see ``gc``)."""

DEFAULT_PACK_LIMIT = 16 << 20
"""``[store] pack_mb``'s default, in bytes (chosen from ``bench/packs.py``'s sweep)."""

SWITCH_ATTEMPTS = (
    3  # root switches tried by a writer (or a lease by gc) that another keeps pushing back
)


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
    pack_limit: int | None = DEFAULT_PACK_LIMIT,
) -> Publication:
    """Make ``build``'s tree the live version of its site in ``store``.

    ``pack_limit`` is the largest pack in bytes (``[store] pack_mb``); None
    uploads one key per blob (``[store] layout = "loose"``).
    """
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
        pack_limit=pack_limit,
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
    pack_limit: int | None = DEFAULT_PACK_LIMIT,
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
            pack_limit=pack_limit,
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
    pack_limit: int | None,
) -> Publication:
    site = f"{owner}/{name}"
    total_bytes = sum(e.size for e in files.values())

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

    put = put_version(
        files,
        objects,
        owner=owner,
        name=name,
        base_url=base_url,
        store=store,
        concurrency=concurrency,
        grace_hours=grace_hours,
        ledger=ledger,
        progress=progress,
        now=now,
        pack_limit=pack_limit,
    )
    if isinstance(put, Root):  # the live version has exactly these files
        _ledger_live(ledger, owner, name, put.version)
        return result(
            PublishOutcome.unchanged,
            put.version,
            put.previous,
            uploaded_blobs=0,
            uploaded_bytes=0,
            diff=diff(files, files),
        )
    missing, version, parent = put.missing, put.root.version, put.root.previous
    created = put.root.published

    def upload_again() -> None:  # a gc that began after the root was read may have taken them
        upload_again_into(
            store, put.tree, missing, objects, owner=owner, name=name, concurrency=concurrency
        )

    go_live(
        store,
        put.root,
        tag=put.tag,
        again=upload_again,
        host=host_of(base_url),
        old_host=put.old_host,
        now=now,
    )
    uploaded_bytes = sum(e.size for e in missing.values())
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
            seconds=time.monotonic() - started,
            live=True,
        )
        ledger.end_publish(owner, name, store=store.description)
    return result(
        PublishOutcome.published,
        version,
        parent,
        uploaded_blobs=len(missing),
        uploaded_bytes=uploaded_bytes,
        diff=diff(put.live.files if put.live else {}, files),
    )


@dataclass(frozen=True, kw_only=True)
class PutVersion:
    """A new version's blobs and tree in the store; its root not switched yet."""

    root: Root  # the root that makes it live
    tag: str | None  # the live root's tag when it was read: the switch's compare-and-swap
    live: VersionTree | None  # the live version's tree then
    tree: VersionTree  # the new version's tree, as written
    missing: dict[str, FileEntry]  # the blobs uploaded for it (loose, or in its packs)
    old_host: str | None  # the live version's host then


def put_version(
    files: Mapping[str, FileEntry],
    objects: Path,
    *,
    owner: str,
    name: str,
    base_url: str,
    store: Store,
    concurrency: int,
    grace_hours: float,
    ledger: VersionLedger | None = None,
    progress: UploadProgress | None = None,
    now: datetime | None = None,
    pack_limit: int | None = DEFAULT_PACK_LIMIT,
) -> PutVersion | Root:
    """Steps 1 to 4 of the protocol: claim the host, upload what the live version lacks, write
    the tree. The live root instead when it already has exactly ``files`` (nothing written)."""
    site = f"{owner}/{name}"
    digest = files_digest(files)
    root, tag = after_gc(store, *read_root(store, owner=owner, name=name), owner=owner, name=name)
    if root is not None and root.files_hash == digest:  # no need to read the live tree
        return root
    live = read_tree(store, owner=owner, name=name, version=root.version) if root else None
    if root is not None and live is not None and dict(live.files) == dict(files):
        return root
    parent = root.version if root else None
    version = new_version_id(now=now, after=parent)
    created = utc_now_iso(now)
    # a host the live version does not have yet is claimed first: a second site fails here
    host, old_host = host_of(base_url), host_of(root.base_url) if root else None
    if host is not None and host != old_host:
        hosts.claim(store, host=host, site=site, version=version, grace_hours=grace_hours, now=now)
    tree = VersionTree(version=version, parent=parent, created=created, files=files)
    if pack_limit is None:
        missing = _to_upload(
            store,
            ledger,
            new_blobs(files, live.hashes() if live else ()),
            owner=owner,
            name=name,
            version=version,
            grace_hours=grace_hours,
        )
        upload_blobs(
            store,
            missing,
            objects,
            owner=owner,
            name=name,
            concurrency=concurrency,
            progress=progress,
        )
        # the blobs it keeps stay where the live version has them (in its packs, if packed)
        tree = packed_tree(tree, live=live, new=())
    else:
        missing = new_blobs(files, live.hashes() if live else ())
        resumed = ledger is not None and bool(
            ledger.unfinished_publish(owner, name, store=store.description)
        )
        if ledger is not None:
            ledger.begin_publish(owner, name, store=store.description, version=version)
        tree = packed_tree(
            tree,
            live=live,
            new=upload_packs(
                store,
                missing,
                objects,
                owner=owner,
                name=name,
                limit=pack_limit,
                skip=(lambda pack: store.exists(pack_key(owner, name, pack))) if resumed else None,
                progress=progress,
            ),
        )
    put_tree(store, tree, live=live, owner=owner, name=name)
    new_root = Root(
        version=version,
        site=site,
        base_url=base_url,
        previous=parent,
        published=created,
        files_hash=digest,
    )
    return PutVersion(
        root=new_root, tag=tag, live=live, tree=tree, missing=missing, old_host=old_host
    )


def put_tree(
    store: Store, tree: VersionTree, *, live: VersionTree | None, owner: str, name: str
) -> None:
    """The new version's tree, and the delta a client on the live version fetches to catch up."""
    store.put(
        version_key(owner, name, tree.version),
        tree.to_bytes(),
        content_type=JSON_TYPE,
        cache_control=BLOB_CACHE,
    )
    if live is not None and tree.parent is not None:
        delta = Delta.between(
            live.files,
            tree.files,
            version=tree.version,
            older=tree.parent,
            older_parent=live.parent,
        )
        store.put(
            delta_key(owner, name, tree.version, tree.parent),
            delta.to_bytes(),
            content_type=JSON_TYPE,
            cache_control=BLOB_CACHE,
        )


def go_live(
    store: Store,
    root: Root,
    *,
    tag: str | None,
    again: Callable[[], None],
    host: str | None,
    old_host: str | None,
    now: datetime | None,
) -> None:
    """Switch the root to the new version (past a running gc), then free the host it left."""
    owner, name = root.site.split("/")
    moved = old_host is not None and old_host != host
    if old_host is not None and moved:  # the old host's edge pointer goes first: see hosts.unpoint
        hosts.unpoint(store, host=old_host, site=root.site)
    try:
        switch_and_point(
            store,
            owner=owner,
            name=name,
            root=root,
            tag=tag,
            on_top_of=root.previous,
            again=again,
        )
    except ConflictError:
        with contextlib.suppress(PublishError):  # the loser's tree would only confuse a listing
            store.delete(
                [version_key(owner, name, root.version)]
                + ([delta_key(owner, name, root.version, root.previous)] if root.previous else [])
            )
        raise
    if old_host is not None and moved:
        with contextlib.suppress(PublishError):  # a claim left behind is free after the grace
            hosts.release(store, host=old_host, site=root.site, version=root.version, now=now)


def upload_again_into(
    store: Store,
    tree: VersionTree,
    blobs: Mapping[str, FileEntry],
    objects: Path,
    *,
    owner: str,
    name: str,
    concurrency: int,
) -> None:
    """Put back ``blobs`` of ``tree`` (the ones its publish uploaded): its packs, or loose keys."""
    put_back(store, tree, blobs, objects, owner=owner, name=name)
    loose = {h: e for h, e in blobs.items() if h not in tree.index}
    upload_blobs(
        store, loose, objects, owner=owner, name=name, concurrency=concurrency, progress=None
    )


def _to_upload(
    store: Store,
    ledger: VersionLedger | None,
    missing: dict[str, FileEntry],
    *,
    owner: str,
    name: str,
    version: str,
    grace_hours: float,
) -> dict[str, FileEntry]:
    """The blobs this publish uploads; the publish marked begun in the ledger.

    After an earlier publish from here stopped half-way, what it already uploaded
    is skipped, trusting only blobs young enough that gc cannot delete them under us.
    """
    if ledger is None:
        return missing
    if ledger.unfinished_publish(owner, name, store=store.description) and missing:
        fresh_after = time.time() - grace_hours * 3600 / 2
        present = {
            obj.key.rsplit("/", 1)[1]
            for obj in store.list(f"{site_prefix(owner, name)}blobs/")
            if obj.modified > fresh_after
        }
        missing = {h: e for h, e in missing.items() if h not in present}
    ledger.begin_publish(owner, name, store=store.description, version=version)
    return missing


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
    replace: bool = False,
) -> None:
    """Upload each blob (hash -> an entry naming its type) from the build's ``objects`` folder.

    A local store skips the blobs it has already (``BlobBatches``) unless
    ``replace`` (a repair of blobs found corrupt); other stores upload each.
    """
    if not blobs:
        return
    total = len(blobs)
    done = 0
    stored = build_objects(objects, blobs)

    if isinstance(store, BlobBatches):  # the local store: one write each, one syncfs for all

        def source(digest: str) -> bytes | Path:
            return stored.bytes_or_file(digest)

        folder = f"{site_prefix(owner, name)}blobs"
        store.put_blobs(folder, list(blobs), source, progress=progress, replace=replace)
        return

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


def after_gc(
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


def switch_past_gc(
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
    switch is tried on the new tag. The gc may also have repacked ``on_top_of``
    (``render.publish.repack``): the root then names a version with the same
    files, and this writer goes on top of it all the same. A root that another
    publish or rollback switched (it names another version, or carries no gc
    record) wins, as before.
    """
    for attempt in range(SWITCH_ATTEMPTS):
        try:
            switch_root(store, owner=owner, name=name, root=root, tag=tag)
            return
        except ConflictError:
            current, tag = after_gc(
                store, *read_root(store, owner=owner, name=name), owner=owner, name=name
            )
            if current is None or current.gc is None:
                raise
            if current.version != on_top_of and (
                on_top_of is None
                or read_tree(store, owner=owner, name=name, version=current.version).repack_of
                != on_top_of
            ):
                raise
            if attempt == SWITCH_ATTEMPTS - 1:
                raise ConflictError(
                    f"gc of the site took its lease {SWITCH_ATTEMPTS} times while {root.version}"
                    f" waited to go live; {current.version} stays live",
                    hint="run it again once 'render gc' of this site is done",
                ) from None
        again()


def switch_and_point(
    store: Store,
    *,
    owner: str,
    name: str,
    root: Root,
    tag: str | None,
    on_top_of: str | None,
    again: Callable[[], None],
) -> None:
    """``switch_past_gc``, then the claim of the root's host pointed at it (``hosts.point``).

    The claim is read before the switch, so the pointer write on its tag needs
    no second read when no one else wrote the claim meanwhile. The version is
    live once the root is switched: a pointer that cannot be written is left
    naming the version before, which the edge keeps serving whole until the
    next publish or ``render repair`` points it again.
    """
    host = host_of(root.base_url)
    before: hosts.HeldClaim | None = None
    if host is not None:
        with contextlib.suppress(PublishError):  # a corrupt claim is not written: not_held
            before = hosts.read_claim(store, host)
    switch_past_gc(
        store, owner=owner, name=name, root=root, tag=tag, on_top_of=on_top_of, again=again
    )
    if host is not None and before is not None:
        with contextlib.suppress(PublishError):
            hosts.point(store, host=host, site=root.site, switched=root, before=before)
