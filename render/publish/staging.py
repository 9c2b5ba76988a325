"""A version put in the store without going live, and its root switch later, elsewhere.

``render.publish.versions.publish`` uploads, writes the tree and switches the
root in one call. With audits on their own queue (``[schedule] audits =
"queue"``) the two halves run on different machines: the build stages the
version (steps 1-4 of the protocol: blobs, then ``versions/<new>.json``; the
root untouched, so readers still see the live version whole), and the audit
task switches the root to it when its audit passed (step 5, a compare-and-swap
on the root's tag as the build read it, then step 6).

A staged version that never goes live (its audit failed, or another publish
switched the root first) is a tree no root names: ``render gc`` deletes it
after the grace period, with blobs no live version names. Its blobs are safe
from gc until then, so an audit must run within ``[store] gc_grace_hours`` of
the stage (the switch uploads any that went missing again, as a publish does
past a gc).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from render.build.tree import FileEntry
from render.errors import PublishError
from render.publish.hosts import host_of
from render.publish.manifest import (
    Root,
    diff,
    root_key,
)
from render.publish.store import Store
from render.publish.versions import (
    DEFAULT_PACK_LIMIT,
    Publication,
    PublishOutcome,
    go_live,
    put_version,
    read_tree,
    upload_again_into,
)


@dataclass(frozen=True, kw_only=True)
class Staged:
    """A version whose blobs and tree are in the store, and the root switch that makes it live."""

    root: Root  # the root.json to write
    tag: str | None  # the live root's tag when staged: the switch is conditional on it
    old_host: str | None  # the host of the version live when staged
    uploaded: tuple[str, ...]  # the blobs staging uploaded (uploaded again past a gc)
    uploaded_bytes: int

    @property
    def version(self) -> str:
        return self.root.version

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root.to_bytes().decode(),
            "tag": self.tag,
            "old_host": self.old_host,
            "uploaded": list(self.uploaded),
            "uploaded_bytes": self.uploaded_bytes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, site: str) -> Staged:
        return cls(
            root=Root.from_bytes(str(data["root"]).encode(), key=root_key(*site.split("/"))),
            tag=data["tag"],
            old_host=data["old_host"],
            uploaded=tuple(data["uploaded"]),
            uploaded_bytes=int(data["uploaded_bytes"]),
        )


def stage_tree(
    files: Mapping[str, FileEntry],
    objects: Path,
    *,
    owner: str,
    name: str,
    base_url: str,
    store: Store,
    concurrency: int,
    grace_hours: float = 48.0,
    pack_limit: int | None = DEFAULT_PACK_LIMIT,
) -> Staged | None:
    """Upload what the live version lacks and write the new tree; None when nothing changed."""
    try:
        put = put_version(
            files,
            objects,
            owner=owner,
            name=name,
            base_url=base_url,
            store=store,
            concurrency=concurrency,
            grace_hours=grace_hours,
            pack_limit=pack_limit,
        )
    except PublishError as exc:
        raise exc.with_site(f"{owner}/{name}") from None
    if isinstance(put, Root):
        return None
    return Staged(
        root=put.root,
        tag=put.tag,
        old_host=put.old_host,
        uploaded=tuple(sorted(put.missing)),
        uploaded_bytes=sum(e.size for e in put.missing.values()),
    )


def switch(staged: Staged, *, objects: Path, store: Store, concurrency: int) -> Publication:
    """Make ``staged`` live (``ConflictError`` when another publish switched the root first).

    ``objects`` holds the staged tree's bytes: the blobs a gc may have taken
    since the stage are uploaded again from it before the switch is retried.
    """
    started = time.monotonic()
    requests_before = store.request_count()
    root = staged.root
    owner, name = root.site.split("/")
    tree = read_tree(store, owner=owner, name=name, version=root.version)
    missing = {e.hash: e for e in tree.files.values() if e.hash in set(staged.uploaded)}

    def upload_again() -> None:
        upload_again_into(
            store, tree, missing, objects, owner=owner, name=name, concurrency=concurrency
        )

    try:
        go_live(
            store,
            root,
            tag=staged.tag,
            again=upload_again,
            host=host_of(root.base_url),
            old_host=staged.old_host,
            now=None,
        )
    except PublishError as exc:
        raise exc.with_site(root.site) from None
    parent = (
        read_tree(store, owner=owner, name=name, version=root.previous) if root.previous else None
    )
    return Publication(
        site=root.site,
        outcome=PublishOutcome.published,
        version=root.version,
        parent=root.previous,
        files=len(tree.files),
        bytes=sum(e.size for e in tree.files.values()),
        uploaded_blobs=len(staged.uploaded),
        uploaded_bytes=staged.uploaded_bytes,
        requests=store.request_count() - requests_before,
        seconds=time.monotonic() - started,
        diff=diff(parent.files if parent else {}, tree.files),
        store=store.description,
    )
