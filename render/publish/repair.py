"""``render repair``: read back every blob the live version names; put the bad ones back.

A publish trusts the store: a blob the live tree names is never uploaded
again, so a blob that was lost, or whose bytes rotted (the mirror refuses it:
its bytes do not match its hash), would stay broken through every later
publish. Repair reads each blob of the live version back from the store and
hashes it: a loose blob's key (a local store's file in place; an S3 object
downloaded into a scratch folder), and each pack of the live version's index
once, every blob checked by its byte range. The good copies of the bad ones
come from the site's last build on this host, checked against their hash
first. What that build does not hold is named in the error, with what to do.

A bad loose blob is uploaded again. A pack with a bad blob is put back byte
for byte: the store's copy (or, when it is gone, nothing) with the build's
bytes written over the bad blobs' ranges, kept only when it hashes to the
pack's name. A pack that cannot be made so (it also held blobs of older
versions that are lost with it) is not written: the live version's files go
live again as a new version in new packs (``render.publish.repack``), its
blobs read from the store and the bad ones from the build, switched like a
publish (a compare-and-swap, past a running gc).

It also points the host claim at the live version (``hosts.point``):
after a crash between a root switch and its pointer write, the edge Worker
keeps serving the version before until a publish or a repair does that.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from render.build.objects import Objects, sha256
from render.errors import PublishError
from render.publish import hosts
from render.publish.hosts import host_of
from render.publish.manifest import BLOB_CACHE, Root, VersionTree, blob_key, pack_key
from render.publish.packs import PACK_TYPE
from render.publish.repack import from_store, repacked_tree, write_packs
from render.publish.store import Store
from render.publish.versions import (
    DEFAULT_PACK_LIMIT,
    after_gc,
    go_live,
    put_tree,
    read_root,
    read_tree,
    upload_blobs,
)


@dataclass(frozen=True, kw_only=True)
class BadBlob:
    hash: str
    path: str  # the first path of the live version with these bytes
    problem: str  # "missing" or "corrupt"
    pack: str | None = None  # the pack the live version reads it from (None: a loose key)


@dataclass(frozen=True, kw_only=True)
class Repair:
    """What ``repair`` found and put right."""

    site: str
    version: str  # the live version it checked
    checked: int  # blobs read back and hashed
    repaired: tuple[BadBlob, ...]  # missing or corrupt, uploaded again
    host: str | None  # the live version's host name (None: its base_url has none)
    pointer: hosts.Pointed | None  # what became of the edge pointer in that host's claim
    requests: int
    seconds: float
    repacked: str | None = None  # the new live version, when a pack could not be put back


def repair(
    store: Store,
    *,
    owner: str,
    name: str,
    objects: Path,
    scratch: Path,
    concurrency: int | None = None,
    pack_limit: int = DEFAULT_PACK_LIMIT,
) -> Repair:
    """Make every blob of the live version whole again from the build's ``objects`` folder.

    ``scratch`` holds downloads while they are hashed and is removed after.
    Raises ``PublishError`` naming the blobs the build does not have (the
    others are put back first). ``pack_limit`` sizes the new packs when a
    pack cannot be put back as it was.
    """
    site = f"{owner}/{name}"
    started, requests_before = time.monotonic(), store.request_count()
    workers = max(1, concurrency or store.concurrency)
    repacked: str | None = None
    try:
        root, tag = after_gc(
            store, *read_root(store, owner=owner, name=name), owner=owner, name=name
        )
        if root is None:
            raise PublishError(
                "nothing is published yet; there is nothing to repair",
                hint="publish with 'render force SITE'",
            )
        tree = read_tree(store, owner=owner, name=name, version=root.version)
        scratch.mkdir(parents=True, exist_ok=True)
        bad = _check(store, tree, owner=owner, name=name, scratch=scratch, workers=workers)
        build = Objects(objects)
        good = {b.hash for b in bad if _good_copy(build, b.hash)}
        upload_blobs(  # replace: the store's copy is there, but corrupt
            store,
            {b.hash: tree.files[b.path] for b in bad if b.hash in good and b.pack is None},
            objects,
            owner=owner,
            name=name,
            concurrency=workers,
            progress=None,
            replace=True,
        )
        lost = [b for b in bad if b.hash not in good]
        unmade = _put_packs_back(store, tree, bad, build, owner=owner, name=name, scratch=scratch)
        if unmade and not lost:  # no pack can hold those blobs as it did: new packs, a new version
            repacked = _go_live_repacked(
                store, root, tag, tree, build, {b.hash for b in bad}, limit=pack_limit
            )
        host = host_of(root.base_url)
        pointer = None if host is None else hosts.point(store, host=host, site=site)
        if lost:
            raise _not_in_build(lost, bad, root.version, owner=owner, name=name, unmade=unmade)
    except PublishError as exc:
        raise exc.with_site(site) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Repair(
        site=site,
        version=root.version,
        checked=len(tree.sizes),
        repaired=tuple(bad),
        host=host,
        pointer=pointer,
        requests=store.request_count() - requests_before,
        seconds=time.monotonic() - started,
        repacked=repacked,
    )


def _check(
    store: Store, tree: VersionTree, *, owner: str, name: str, scratch: Path, workers: int
) -> list[BadBlob]:
    """The live version's missing and corrupt blobs: each loose key, and each pack once."""
    first_path: dict[str, str] = {}
    for path in sorted(tree.files):
        first_path.setdefault(tree.files[path].hash, path)
    by_pack: dict[str, list[tuple[int, str]]] = {}
    loose: list[str] = []
    for digest in first_path:
        where = tree.locate(digest)
        if where is None:
            loose.append(digest)
        else:
            by_pack.setdefault(where[0], []).append((where[1], digest))

    def one_blob(digest: str) -> dict[str, str]:
        problem = _problem(store, blob_key(owner, name, digest), digest, scratch)
        return {} if problem is None else {digest: problem}

    def one_pack(item: tuple[str, list[tuple[int, str]]]) -> dict[str, str]:
        pack, entries = item
        return _pack_problems(store, pack_key(owner, name, pack), sorted(entries), tree, scratch)

    found: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render-verify") as pool:
        for problems in (*pool.map(one_blob, loose), *pool.map(one_pack, by_pack.items())):
            found.update(problems)
    return [
        BadBlob(hash=d, path=first_path[d], problem=found[d], pack=_pack_of(tree, d))
        for d in first_path
        if d in found
    ]


def _pack_of(tree: VersionTree, digest: str) -> str | None:
    where = tree.locate(digest)
    return None if where is None else where[0]


def _pack_problems(
    store: Store, key: str, entries: Sequence[tuple[int, str]], tree: VersionTree, scratch: Path
) -> dict[str, str]:
    """hash -> "missing" or "corrupt" for the blobs of one pack (``(offset, hash)``, in order).

    The pack is read once: a local store's file in place, an S3 object
    downloaded into ``scratch`` (kept there when a blob is bad: it is the
    base a put-back writes over).
    """
    path = store.local_path(key)
    downloaded = path is None
    if path is None:
        path = scratch / key.rsplit("/", 1)[1]
        if not store.download(key, path):
            return {digest: "missing" for _, digest in entries}
    found: dict[str, str] = {}
    try:
        with open(path, "rb") as fh:
            for offset, digest in entries:
                fh.seek(offset)
                if _read_sha256(fh, tree.sizes[digest]) != digest:
                    found[digest] = "corrupt"
    except FileNotFoundError:
        return {digest: "missing" for _, digest in entries}
    except OSError as exc:
        raise PublishError(
            f"{store.description}: cannot read {key}: {exc.strerror or exc}",
            hint="check the store folder's permissions",
        ) from None
    if downloaded and not found:
        path.unlink(missing_ok=True)
    return found


def _put_packs_back(
    store: Store,
    tree: VersionTree,
    bad: Sequence[BadBlob],
    build: Objects,
    *,
    owner: str,
    name: str,
    scratch: Path,
) -> list[str]:
    """Put back, byte for byte, each pack holding a bad blob the build has good; the packs that
    cannot be made so (they held other blobs that are lost too)."""
    bad_in: dict[str, list[BadBlob]] = {}
    for b in bad:
        if b.pack is not None:
            bad_in.setdefault(b.pack, []).append(b)
    unmade: list[str] = []
    for pack, blobs in sorted(bad_in.items()):
        if not all(_good_copy(build, b.hash) for b in blobs):
            continue  # named in the error; its other bad blobs wait for a build that has them
        key = pack_key(owner, name, pack)
        body = _patched(store, key, tree, pack, {b.hash for b in blobs}, build, scratch)
        if body is None:
            unmade.append(pack)
        else:
            store.put(key, body, content_type=PACK_TYPE, cache_control=BLOB_CACHE)
    return unmade


def _patched(
    store: Store,
    key: str,
    tree: VersionTree,
    pack: str,
    bad: set[str],
    build: Objects,
    scratch: Path,
) -> bytes | None:
    """The pack's bytes again: the store's copy with the build's bytes over the bad blobs'
    ranges; None when that does not hash to the pack's name."""
    local = store.local_path(key)
    copy = local if local is not None else scratch / key.rsplit("/", 1)[1]
    try:
        body = bytearray(copy.read_bytes())
    except FileNotFoundError:
        body = bytearray()
    end = 0
    for digest, (at, offset) in tree.index.items():
        if tree.packs[at] != pack:
            continue
        size = tree.sizes[digest]
        end = max(end, offset + size)
        if digest in bad:
            if len(body) < offset + size:
                body.extend(bytes(offset + size - len(body)))
            body[offset : offset + size] = build.read(digest)
    for candidate in (bytes(body), bytes(body[:end])):  # the whole copy; cut after the last blob
        if hashlib.sha256(candidate).hexdigest() == pack:
            return candidate
    return None


def _go_live_repacked(
    store: Store,
    root: Root,
    tag: str | None,
    tree: VersionTree,
    build: Objects,
    bad: set[str],
    *,
    limit: int,
) -> str:
    """The live version's files live again as a new version in new packs; its id.

    Its blobs come from the store, the ``bad`` ones from the build (checked
    already). The switch is a publish's: on the tag read, past a running gc.
    """
    owner, name = root.site.split("/")
    stored = from_store(store, owner=owner, name=name, tree=tree)

    def read(digests: Sequence[str]) -> Mapping[str, bytes]:
        got = dict(stored([d for d in digests if d not in bad]))
        got.update({d: build.read(d) for d in digests if d in bad})
        return got

    def put() -> None:  # again, after a gc that began meanwhile: the same packs
        write_packs(store, tree, owner=owner, name=name, limit=limit, read=read)

    new = repacked_tree(
        tree, write_packs(store, tree, owner=owner, name=name, limit=limit, read=read)
    )
    put_tree(store, new, live=tree, owner=owner, name=name)
    switched = Root(
        version=new.version,
        site=root.site,
        base_url=root.base_url,
        previous=root.version,
        published=root.published,
        files_hash=root.files_hash,
    )
    host = host_of(root.base_url)
    go_live(store, switched, tag=tag, again=put, host=host, old_host=host, now=None)
    return new.version


def _not_in_build(
    lost: Sequence[BadBlob],
    bad: Sequence[BadBlob],
    version: str,
    *,
    owner: str,
    name: str,
    unmade: Sequence[str],
) -> PublishError:
    """The error naming the bad blobs the build lacks, and the packs left as they were."""

    def where(b: BadBlob) -> str:
        return "" if b.pack is None else f", in {pack_key(owner, name, b.pack)}"

    named = ", ".join(f"{b.path} ({b.problem}{where(b)})" for b in lost[:5])
    # a pack is written only with bytes that hash to its name: all its bad blobs, or none
    left = {b.pack for b in lost if b.pack is not None} | set(unmade)
    return PublishError(
        f"{len(lost)} of the {len(bad)} missing or corrupt blobs of the live version"
        f" {version} are not in this host's last build: {named}"
        + (", ..." if len(lost) > 5 else "")
        + (f"; {len(left)} packs are left as they were" if left else ""),
        hint="'render force SITE' builds every file again; then run 'render repair SITE' again",
    )


def _problem(store: Store, key: str, digest: str, scratch: Path) -> str | None:
    """None when the store holds ``digest``'s bytes under ``key``; else "missing" or "corrupt"."""
    path = store.local_path(key)
    downloaded = path is None
    if path is None:
        path = scratch / digest
        if not store.download(key, path):
            return "missing"
    try:
        actual = _file_sha256(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        raise PublishError(
            f"{store.description}: cannot read {key}: {exc.strerror or exc}",
            hint="check the store folder's permissions",
        ) from None
    finally:
        if downloaded:
            path.unlink(missing_ok=True)
    return None if actual == digest else "corrupt"


def _good_copy(build: Objects, digest: str) -> bool:
    """The build holds ``digest``, and its bytes hash to it."""
    if not build.has(digest):
        return False
    loose = build.loose(digest)
    try:
        actual = _file_sha256(loose) if loose is not None else sha256(build.read(digest))
    except FileNotFoundError:
        return False
    return actual == digest


def _read_sha256(fh: BinaryIO, size: int) -> str:
    """sha256 of the next ``size`` bytes of ``fh``; "" when the file ends first."""
    h = hashlib.sha256()
    left = size
    while left > 0 and (chunk := fh.read(min(left, 1 << 20))):
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest() if left == 0 else ""


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
