"""The mirror side: pull each site's live version from the store onto a static server.

Runs on the mirror host (the OVH VPS), reading the store and never writing to
it. For every site whose ``root.json`` names a version the mirror does not
serve yet, ``sync`` materializes that version as a release folder and then
switches the site's ``current`` symlink to it::

    <mirror>/releases/<owner>/<site>/<version>/   one whole version: the root's files,
                                                  each subfolder a symlink ../.d/<h>
    <mirror>/releases/<owner>/<site>/.d/<h>/      a folder kept releases share (render.mirror.pool)
    <mirror>/releases/<owner>/<site>/.trees/      the version tree of each release
    <mirror>/releases/<owner>/<site>/.meta/<version>/tree.json, delta/<parent>.json
    <mirror>/sites/<owner>/<site>/live.json       /_render/live.json
    <mirror>/sites/<owner>/<site>/current         symlink -> the release nginx serves
    <mirror>/sites/<owner>/<site>/previous        symlink -> the release served before
    <mirror>/sites/<owner>/<site>/site.json       the served version and its base_url
    <mirror>/hosts.map                            nginx map: host name -> owner/site

A folder that did not change between versions is one folder in ``.d/``, named
by its content, that every kept release links to; a new release makes only
the folders that changed and their ancestors. It is built in
``.partial-<version>/``: files whose hash a kept release already has are hard
links to it (no download); new blobs are downloaded into ``.incoming/``,
checked against their sha256 (a mismatch refuses the release) and linked in;
a local store's blobs are checked where they are and hard-linked straight in
(``render.mirror.fetch``). Its new folders are then staged whole under
``.pool-<version>/``, the file system is synced, and only then are they
renamed into ``.d/`` and the release folder renamed to ``<version>/``, so a
release folder without the prefix, and every folder it links to, is always
whole. Each kept release is also served under
``/_v/<version>/`` (``render.serve.versioned``): ``.meta/<version>/`` holds
its ``tree.json`` and the delta from its parent (from the store), and
``live.json`` names the served version. ``current`` is switched by making a new symlink beside
it and renaming it over the old one: a reader sees the old link or the new
one, never none. An interrupted sync leaves ``current`` where it was; the next
one reuses the blobs it already checked and the shared folders it named, and
finishes. Pruning deletes old releases, then the shared folders none of the
releases left reaches. One sync of a site runs at a time (``site_lock``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Protocol

from render.errors import MirrorError, RenderError
from render.files import sync_folder, utc_stamp
from render.mirror import pool
from render.mirror.fetch import Refused, fetch_release
from render.mirror.layout import (
    MAP_FILE,
    NAME_RE,
    STATUS_FILE,
    Layout,
    site_lock,
    sync_lock,
    syncfs,
    write_file,
    write_versioned,
)
from render.publish import hosts
from render.publish.hosts import HOST_RE, host_of
from render.publish.manifest import (
    Delta,
    Root,
    VersionTree,
    delta_key,
    root_key,
    version_key,
)

log = logging.getLogger(__name__)

MIN_KEEP = 2  # current and the release before it (assets of pages fetched just before a switch)


class MirrorStore(Protocol):
    """What the mirror reads from a store (``render.publish.store.Store`` has all of it)."""

    @property
    def description(self) -> str: ...

    def get(self, key: str) -> bytes | None: ...

    def get_range(self, key: str, start: int, length: int) -> bytes | None: ...

    def download(self, key: str, dest: Path) -> bool: ...

    def sites(self) -> list[tuple[str, str]]: ...


class SyncOutcome(Enum):
    switched = "switched"  # current now serves the store's live version
    unchanged = "unchanged"  # it already did
    refused = "refused"  # a blob did not match its hash; current was left alone
    failed = "failed"  # the store, the version tree or the disk failed; current was left alone


@dataclass(frozen=True, kw_only=True)
class SiteSync:
    """What one sync did for one site."""

    site: str
    outcome: SyncOutcome
    version: str | None = None  # the store's live version (None when unreadable)
    served: str | None = None  # what current points at after the sync
    fetched: int = 0  # blobs downloaded and verified
    fetched_bytes: int = 0
    linked: int = 0  # files taken from releases on disk: hard-linked, or in a shared folder
    shared: int = 0  # folders a kept release already has (not made again)
    removed: tuple[str, ...] = ()  # old releases deleted after the switch
    error: str | None = None
    hint: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SyncReport:
    root: Path
    sites: tuple[SiteSync, ...]
    map_changed: bool  # hosts.map was rewritten: nginx needs a reload to see it

    @property
    def failed(self) -> tuple[SiteSync, ...]:
        return tuple(
            s for s in self.sites if s.outcome in (SyncOutcome.failed, SyncOutcome.refused)
        )


# --- sync --------------------------------------------------------------------


def sync(
    store: MirrorStore,
    root: Path,
    *,
    keep: int = 3,
    concurrency: int = 8,
) -> SyncReport:
    """Bring every site in the store to its live version; one site's failure never stops the rest."""
    root.mkdir(parents=True, exist_ok=True)
    with sync_lock(root):
        sites = store.sites()
        results = tuple(
            sync_site(store, root, owner, name, keep=keep, concurrency=concurrency)
            for owner, name in sites
        )
        map_changed = write_host_map(root, store=store)
        _write_status(root, results)
    return SyncReport(root=root, sites=results, map_changed=map_changed)


def sync_site(
    store: MirrorStore,
    root: Path,
    owner: str,
    name: str,
    *,
    keep: int = 3,
    concurrency: int = 8,
) -> SiteSync:
    """Sync one site; every failure becomes a ``SiteSync`` and ``current`` stays where it was."""
    started = time.monotonic()
    site = f"{owner}/{name}"
    seen: dict[str, str] = {}  # the live version, once root.json is read
    try:
        lay = Layout(root, owner, name)
        with site_lock(lay):
            result = _sync_site(store, lay, keep=keep, concurrency=concurrency, seen=seen)
    except Refused as exc:
        outcome, error, hint = SyncOutcome.refused, exc.message, exc.hint
    except RenderError as exc:
        outcome, error, hint = SyncOutcome.failed, exc.message, exc.hint
    except OSError as exc:
        outcome, error = SyncOutcome.failed, f"{exc.filename or root}: {exc.strerror or exc}"
        hint = (
            "check the mirror folder's permissions and free space; the release served is unchanged"
        )
    except Exception as exc:
        # a bug: its traceback goes to the log; this site keeps its release, the others sync
        log.exception("mirror sync of %s failed", site)
        outcome, error, hint = SyncOutcome.failed, f"unexpected {type(exc).__name__}: {exc}", None
    else:
        return _timed(result, started)
    served = (
        Layout(root, owner, name).served() if NAME_RE.match(owner) and NAME_RE.match(name) else None
    )
    return SiteSync(
        site=site,
        outcome=outcome,
        version=seen.get("version"),
        served=served,
        error=error,
        hint=hint,
        seconds=time.monotonic() - started,
    )


def _timed(result: SiteSync, started: float) -> SiteSync:
    return replace(result, seconds=time.monotonic() - started)


def _sync_site(
    store: MirrorStore, lay: Layout, *, keep: int, concurrency: int, seen: dict[str, str]
) -> SiteSync:
    key = root_key(lay.owner, lay.name)
    raw = store.get(key)
    if raw is None:
        raise MirrorError(
            f"{key} is missing from {store.description}",
            site=lay.site,
            hint="publish the site, or check the mirror's [store] settings",
        )
    live = Root.from_bytes(raw, key=key)
    seen["version"] = live.version
    host = host_of(live.base_url)
    if host is None:
        raise MirrorError(
            f"{key}: base_url {live.base_url!r} has no usable host name",
            site=lay.site,
            hint="set [site] base_url in site.toml to the site's public URL and publish again",
        )
    served = lay.served()
    if served == live.version:
        _write_site_info(lay, live, host)
        write_versioned(lay, live)
        return SiteSync(
            site=lay.site, outcome=SyncOutcome.unchanged, version=live.version, served=served
        )
    made = _Made()
    if not lay.release(live.version).is_dir():
        tree = _fetch_tree(store, lay, live.version)
        made = _materialize(store, lay, tree, concurrency=concurrency)
        if tree.parent is not None:
            delta = _delta(store, lay, tree, tree.parent)
            if delta is not None:
                write_file(lay.meta(tree.version) / "delta" / f"{tree.parent}.json", delta)
    _switch(lay, live.version)
    _write_site_info(lay, live, host)
    write_versioned(lay, live)
    removed = _prune(lay, keep=keep)
    return SiteSync(
        site=lay.site,
        outcome=SyncOutcome.switched,
        version=live.version,
        served=live.version,
        fetched=made.fetched,
        fetched_bytes=made.fetched_bytes,
        linked=made.linked,
        shared=made.shared,
        removed=removed,
    )


def _fetch_tree(store: MirrorStore, lay: Layout, version: str) -> VersionTree:
    key = version_key(lay.owner, lay.name, version)
    raw = store.get(key)
    if raw is None:
        raise MirrorError(
            f"{key} is missing from {store.description}",
            site=lay.site,
            hint="the store's root.json names a version without a tree; "
            "'render rollback' to a good version or publish again",
        )
    tree = VersionTree.from_bytes(raw, key=key)
    if tree.version != version:
        raise MirrorError(
            f"{key} holds version {tree.version!r}",
            site=lay.site,
            hint="the store is inconsistent; publish the site again",
        )
    for path in tree.files:
        if not _safe_path(path):
            raise MirrorError(
                f"{key}: refusing the path {path!r}",
                site=lay.site,
                hint="a path in a version tree must be relative and stay inside the release",
            )
    return tree


def _delta(store: MirrorStore, lay: Layout, tree: VersionTree, parent: str) -> bytes | None:
    """The delta from ``parent`` to ``tree``: worked out here when the parent's release is kept
    (the same bytes the publish stored), else read from the store."""
    try:
        tree_file = lay.tree_file(parent)
        older = VersionTree.from_bytes(tree_file.read_bytes(), key=str(tree_file))
    except (OSError, RenderError):
        return store.get(delta_key(lay.owner, lay.name, tree.version, parent))
    return Delta.between(
        older.files, tree.files, version=tree.version, older=parent, older_parent=older.parent
    ).to_bytes()


def _safe_path(path: str) -> bool:
    parts = path.split("/")
    return (
        bool(path)
        and "\x00" not in path
        and "\\" not in path
        and all(p not in ("", ".", "..") for p in parts)
    )


@dataclass(frozen=True, kw_only=True)
class _Made:
    """What making a release took (nothing, when the release was on disk)."""

    fetched: int = 0  # blobs fetched and checked
    fetched_bytes: int = 0
    linked: int = 0  # files hard-linked from kept releases, or in a folder they share
    shared: int = 0  # folders the pool had


def _materialize(store: MirrorStore, lay: Layout, tree: VersionTree, *, concurrency: int) -> _Made:
    """Build ``releases/.../<version>/`` whole, or raise and leave it unbuilt.

    Only the root and the folders the pool lacks are made (``render.mirror.pool``):
    their files go into ``.partial-<version>/``, the new folders are staged, the
    whole is made durable, and then the pool folders and the release are named.
    """
    shape = _folders(lay, tree)
    partial, staging = lay.partial(tree.version), lay.staging(tree.version)
    for stale in (*lay.releases.glob(".partial-*"), *lay.releases.glob(".pool-*")):
        if stale not in (partial, staging):
            shutil.rmtree(stale, ignore_errors=True)
    if staging.exists():  # an earlier run stopped while staging: again (what it named stays)
        for started in (partial, staging):
            if started.exists():
                shutil.rmtree(started)
    partial.mkdir(parents=True, exist_ok=True)
    lay.incoming.mkdir(exist_ok=True)
    have = pool.existing(lay.pool)
    make = pool.to_make(shape, have)
    placed = {"", *make.values()}  # the folders whose files go into the partial release
    by_hash: dict[str, list[str]] = {}
    shared_files = 0
    for path in sorted(tree.files):
        folder = path.rpartition("/")[0]
        if folder in placed:
            by_hash.setdefault(tree.files[path].hash, []).append(path)
        elif shape.hashes[folder] in have:
            shared_files += 1
    on_disk = _known_blobs(lay, exclude=tree.version, needed=by_hash.keys())
    base, incoming = str(partial), str(lay.incoming)
    wanted = {  # plain strings: 10,000s of files in a first sync
        digest: tree.files[paths[0]]
        for digest, paths in by_hash.items()
        if digest not in on_disk
        and not os.path.isfile(os.path.join(incoming, digest))
        and not all(os.path.lexists(os.path.join(base, p)) for p in paths)
    }
    fetched_bytes = fetch_release(
        store, lay, tree, wanted, by_hash, partial, concurrency=concurrency
    )
    linked = 0
    folders: set[str] = set()
    for (
        digest,
        paths,
    ) in by_hash.items():  # plain strings and os calls: 10,000s of files per release
        source = os.path.join(incoming, digest)
        from_disk = not os.path.isfile(source) and digest in on_disk
        if from_disk:
            source = on_disk[digest]
        elif not os.path.isfile(source):  # resumed: a file an interrupted sync already placed
            source = next(d for p in paths if os.path.lexists(d := os.path.join(base, p)))
        for path in paths:
            dest = os.path.join(base, path)
            if os.path.lexists(dest):
                continue
            folder = os.path.dirname(dest)
            if folder not in folders:
                os.makedirs(folder, exist_ok=True)
                folders.add(folder)
            _link_or_copy(source, dest)
            linked += from_disk
    write_file(lay.tree_file(tree.version), tree.to_bytes())
    pool.stage(partial, shape, make, staging)
    syncfs(lay.releases)  # every file and folder of the release is on disk before any is named
    made = [h for f in shape.deepest_first() if make.get(h := shape.hashes[f]) == f]
    pool.name(staging, lay.pool, made)
    os.rename(partial, lay.release(tree.version))
    sync_folder(lay.releases)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(lay.incoming, ignore_errors=True)
    return _Made(
        fetched=len(wanted),
        fetched_bytes=fetched_bytes,
        linked=linked + shared_files,
        shared=sum(1 for f, h in shape.hashes.items() if f and h in have),
    )


def _folders(lay: Layout, tree: VersionTree) -> pool.Folders:
    try:
        return pool.folders_of(tree.files)
    except pool.Clash as exc:
        raise MirrorError(
            f"{version_key(lay.owner, lay.name, tree.version)}: refusing the tree: {exc}",
            site=lay.site,
            hint="a path in a version tree must not be a file and a folder at once",
        ) from None


def _known_blobs(lay: Layout, *, exclude: str, needed: Collection[str]) -> dict[str, str]:
    """hash -> a file holding it, from the releases on disk (current first), for ``needed``."""
    found: dict[str, str] = {}
    served = lay.served()
    order = ([served] if served else []) + [v for v in reversed(lay.kept()) if v != served]
    for version in order:
        if version == exclude:
            continue
        tree_file = lay.tree_file(version)
        try:
            tree = VersionTree.from_bytes(tree_file.read_bytes(), key=str(tree_file))
        except (OSError, RenderError):
            continue  # a release without its tree is only used as a whole, never as a link source
        release = str(lay.release(version))
        for path, entry in tree.files.items():
            if entry.hash in needed and entry.hash not in found and _safe_path(path):
                candidate = os.path.join(release, path)
                if os.path.isfile(candidate):
                    found[entry.hash] = candidate
    return found


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:  # another file system, or a file system without hard links
        shutil.copyfile(source, dest)
        os.chmod(dest, 0o644)


# --- switch and prune ----------------------------------------------------------


def _switch(lay: Layout, version: str) -> None:
    """Point ``previous`` at what is served now, then ``current`` at ``version``."""
    lay.site_dir.mkdir(parents=True, exist_ok=True)
    if lay.current.exists() and not lay.current.is_symlink():
        raise MirrorError(
            f"{lay.current} is not a symlink",
            site=lay.site,
            hint="move that folder away; the mirror manages 'current' as a symlink",
        )
    served = lay.served()
    if served is not None and served != version:
        _replace_symlink(lay.previous, lay.link_target(served))
    _replace_symlink(lay.current, lay.link_target(version))
    sync_folder(lay.site_dir)


def _replace_symlink(link: Path, target: str) -> None:
    """rename(2) over the old link: readers see the old target or the new one, never none."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}.new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _prune(lay: Layout, *, keep: int) -> tuple[str, ...]:
    """Delete releases beyond the newest ``keep``, then the pool folders no release reaches.

    Current and previous always stay. A release is renamed out of the version
    names before it is deleted: a half-deleted release is never switched to.
    """
    protected = [v for v in (lay.served(), lay.linked_version(lay.previous)) if v]
    kept = list(dict.fromkeys(protected))
    for version in reversed(lay.kept()):
        if len(kept) >= max(keep, MIN_KEEP):
            break
        if version not in kept:
            kept.append(version)
    removed = tuple(v for v in lay.kept() if v not in kept)
    for pattern in (".partial-*", ".pool-*", ".gone-*"):
        for leftover in lay.releases.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
    shutil.rmtree(lay.incoming, ignore_errors=True)
    for version in removed:
        gone = lay.releases / f".gone-{version}"
        try:
            os.rename(lay.release(version), gone)
        except OSError:
            gone = lay.release(version)  # deleted where it is
        shutil.rmtree(gone, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            lay.tree_file(version).unlink()
        shutil.rmtree(lay.meta(version), ignore_errors=True)
    try:  # every release on disk, kept or not deleted whole: a folder any of them reaches stays
        pool.prune(lay.pool, [lay.release(v) for v in lay.kept()])
    except OSError as exc:  # the switch is done; the next sync prunes again
        log.warning("%s: pruning %s: %s", lay.site, lay.pool, exc)
    return removed


# --- host map, site info, status ---------------------------------------------


def _write_site_info(lay: Layout, live: Root, host: str) -> None:
    info = {"site": lay.site, "version": live.version, "base_url": live.base_url, "host": host}
    data = json.dumps(info, sort_keys=True, indent=1).encode() + b"\n"
    target = lay.site_dir / "site.json"
    with contextlib.suppress(FileNotFoundError):
        if target.read_bytes() == data:
            return
    write_file(target, data)


def host_map(root: Path, *, store: MirrorStore | None = None) -> dict[str, str]:
    """host -> ``owner/site`` for every site the mirror serves.

    Two sites live with one host (one published it before host claims existed):
    the site the store's claim names serves it (``render.publish.hosts``), else the first.
    """
    candidates: dict[str, list[str]] = {}
    for info_file in sorted((root / "sites").glob("*/*/site.json")):
        lay_dir = info_file.parent
        owner, name = lay_dir.parent.name, lay_dir.name
        if not (NAME_RE.match(owner) and NAME_RE.match(name)) or not (lay_dir / "current").exists():
            continue
        try:
            host = json.loads(info_file.read_bytes()).get("host", "")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(host, str) or not HOST_RE.match(host):
            continue
        candidates.setdefault(host, []).append(f"{owner}/{name}")
    entries: dict[str, str] = {}
    for host, sites in candidates.items():
        entries[host] = sites[0] if store is None else hosts.winner(store, host, sites)
        for other in sites:
            if other != entries[host]:
                log.warning("%s: host %s is served by %s", other, host, entries[host])
    return entries


def write_host_map(root: Path, *, store: MirrorStore | None = None) -> bool:
    """Write ``hosts.map`` for nginx atomically; True when its content changed."""
    lines = [f"{host} {site};\n" for host, site in sorted(host_map(root, store=store).items())]
    data = ("# written by 'render mirror sync'; do not edit\n" + "".join(lines)).encode()
    target = root / MAP_FILE
    with contextlib.suppress(FileNotFoundError):
        if target.read_bytes() == data:
            return False
    write_file(target, data)
    return True


def _write_status(root: Path, results: tuple[SiteSync, ...]) -> None:
    now = utc_stamp()
    data = {
        "synced": now,
        "sites": {
            r.site: {"outcome": r.outcome.value, "version": r.version, "error": r.error}
            for r in results
        },
    }
    write_file(root / STATUS_FILE, json.dumps(data, indent=1, sort_keys=True).encode() + b"\n")


# --- the daemon --------------------------------------------------------------


def run_forever(
    store: MirrorStore,
    root: Path,
    *,
    stop: threading.Event,
    interval: float = 60.0,
    jitter: float = 0.2,
    keep: int = 3,
    concurrency: int = 8,
    on_report: Callable[[SyncReport], None] = lambda _r: None,
    on_error: Callable[[Exception], None] = lambda _e: None,
) -> None:
    """Sync, wait ``interval`` give or take ``jitter`` (a fraction), repeat until ``stop`` is set.

    Nothing stops the loop but ``stop``: a site's failure is in its report, and
    a failure of the whole sync (the store unreachable, another sync holding
    the lock) goes to ``on_error`` and is retried at the next tick.
    """
    while not stop.is_set():
        try:
            on_report(sync(store, root, keep=keep, concurrency=concurrency))
        except Exception as exc:
            if not isinstance(exc, RenderError):
                log.exception("mirror sync failed")
            on_error(exc)
        stop.wait(max(0.0, interval * random.uniform(1 - jitter, 1 + jitter)))
