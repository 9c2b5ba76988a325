"""A site's versions in the store: listing them, and making an earlier one live (rollback).

A rollback is one write of ``root.json`` (compare-and-swap on the root it read),
under the site lock, and it waits out a running gc's lease like a publish does;
then the host claim is pointed at the version it made live (``hosts.point``).
Without a version named, it goes to the newest older version whose files
differ from the live one's: a version gc repacked (``repack_of``) has the same
files, so going back to it would change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from render.errors import PublishError
from render.publish.manifest import (
    Root,
    VersionTree,
    files_digest,
    new_blobs,
    site_prefix,
    utc_now_iso,
    version_key,
)
from render.publish.store import Store
from render.publish.versions import (
    VersionLedger,
    after_gc,
    read_root,
    read_tree,
    switch_and_point,
)


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
    repack_of: str | None = None  # the version whose files it repeats in fewer packs (gc)


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
                repack_of=tree.repack_of,
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
    """Make an earlier version live in one write (default: the newest older one whose files
    differ from the live version's)."""
    site = f"{owner}/{name}"
    try:
        root, tag = after_gc(
            store, *read_root(store, owner=owner, name=name), owner=owner, name=name
        )
        if root is None:
            raise PublishError("nothing is published yet", hint="publish with 'render force SITE'")
        ids = version_ids(store, owner=owner, name=name)
        if to is None:
            tree = _before(store, root, ids, owner=owner, name=name)
            target = tree.version
        elif to not in ids:
            raise PublishError(
                f"no version {to!r} in {store.description}",
                hint="'render versions SITE' lists the versions that exist",
            )
        else:
            target = to
        if target == root.version:
            return Rollback(site=site, version=target, previous=root.version)
        if to is not None:
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

        switch_and_point(
            store, owner=owner, name=name, root=new_root, tag=tag, on_top_of=live, again=still_there
        )
    except PublishError as exc:
        raise exc.with_site(site) from None
    if ledger is not None:
        ledger.set_live(owner, name, target)
    return Rollback(site=site, version=target, previous=root.version)


def _before(store: Store, root: Root, ids: list[str], *, owner: str, name: str) -> VersionTree:
    """The newest version older than the live one with other files (one tree read each)."""
    for v in ids:
        if v < root.version:
            tree = read_tree(store, owner=owner, name=name, version=v)
            if not root.files_hash or files_digest(tree.files) != root.files_hash:
                return tree
    raise PublishError(
        f"no version older than the live {root.version} with other files",
        hint="'render versions SITE' lists them; name one to roll forward",
    )
