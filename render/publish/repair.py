"""``render repair``: read back every blob the live version names; upload the bad ones again.

A publish trusts the store: a blob the live tree names is never uploaded
again, so a blob that was lost, or whose bytes rotted (the mirror refuses it:
its bytes do not match its hash), would stay broken through every later
publish. Repair reads each blob of the live version back from the store and
hashes it (a local store's file in place; an S3 object downloaded into a
scratch folder), then uploads the missing and corrupt ones again from the
site's last build on this host, whose bytes are checked against their hash
first. What that build does not hold is named in the error, with what to do.

It also points the host claim at the live version again (``hosts.point``):
after a crash between a root switch and its pointer write, the edge Worker
keeps serving the version before until a publish or a repair does that.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from render.build.objects import Objects, sha256
from render.errors import PublishError
from render.publish import hosts
from render.publish.hosts import host_of
from render.publish.manifest import blob_key
from render.publish.store import Store
from render.publish.versions import read_root, read_tree, upload_blobs


@dataclass(frozen=True, kw_only=True)
class BadBlob:
    hash: str
    path: str  # the first path of the live version with these bytes
    problem: str  # "missing" or "corrupt"


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


def repair(
    store: Store,
    *,
    owner: str,
    name: str,
    objects: Path,
    scratch: Path,
    concurrency: int | None = None,
) -> Repair:
    """Make every blob of the live version whole again from the build's ``objects`` folder.

    ``scratch`` holds downloads while they are hashed and is removed after.
    Raises ``PublishError`` naming the blobs the build does not have (the
    others are uploaded first).
    """
    site = f"{owner}/{name}"
    started, requests_before = time.monotonic(), store.request_count()
    workers = max(1, concurrency or store.concurrency)
    try:
        root, _ = read_root(store, owner=owner, name=name)
        if root is None:
            raise PublishError(
                "nothing is published yet; there is nothing to repair",
                hint="publish with 'render force SITE'",
            )
        tree = read_tree(store, owner=owner, name=name, version=root.version)
        first_path: dict[str, str] = {}
        for path in sorted(tree.files):
            first_path.setdefault(tree.files[path].hash, path)
        scratch.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render-verify") as pool:
            problems = list(
                pool.map(
                    lambda digest: _problem(store, blob_key(owner, name, digest), digest, scratch),
                    first_path,
                )
            )
        bad = [
            BadBlob(hash=d, path=first_path[d], problem=p)
            for d, p in zip(first_path, problems, strict=True)
            if p is not None
        ]
        build = Objects(objects)
        good = {b.hash: tree.files[b.path] for b in bad if _good_copy(build, b.hash)}
        upload_blobs(  # replace: the store's copy is there, but corrupt
            store,
            good,
            objects,
            owner=owner,
            name=name,
            concurrency=workers,
            progress=None,
            replace=True,
        )
        host = host_of(root.base_url)
        pointer = None if host is None else hosts.point(store, host=host, site=site)
        lost = [b for b in bad if b.hash not in good]
        if lost:
            named = ", ".join(f"{b.path} ({b.problem})" for b in lost[:5])
            raise PublishError(
                f"{len(lost)} of the {len(bad)} missing or corrupt blobs of the live version"
                f" {root.version} are not in this host's last build: {named}"
                + (", ..." if len(lost) > 5 else ""),
                hint="'render force SITE' builds every file again; then run 'render repair SITE'"
                " again",
            )
    except PublishError as exc:
        raise exc.with_site(site) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Repair(
        site=site,
        version=root.version,
        checked=len(first_path),
        repaired=tuple(bad),
        host=host,
        pointer=pointer,
        requests=store.request_count() - requests_before,
        seconds=time.monotonic() - started,
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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
