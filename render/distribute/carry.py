"""The build record carried between workers through the store.

A site's incremental state (``<state>/builds/<owner>/<name>/``: the record of
the last complete build and the objects it made) lives on the machine that
built it. So that any worker can build any site incrementally, each build a
worker completes also stores the record in the store, privately beside the
site's versions (``sites/<owner>/<name>/private/build-record.tar.gz``: no
manifest names it, so no mirror and no edge ever serves it). A worker whose
state folder has no record for the site fetches it, and the page bytes the
record names from the site's blobs, before it builds: the build then renders
only what changed. The local folder stays the cache; the store's copy is used
only when it is missing.

The record is unpickled (``render.build.record``): like the local state
folder, the store is written only by render, never by a tenant.
"""

from __future__ import annotations

import concurrent.futures
import io
import re
import tarfile
from dataclasses import dataclass

from render.build import record
from render.build.objects import Objects
from render.config import HostConfig, SiteConfig
from render.files import replace_atomically
from render.publish.manifest import blob_key
from render.publish.store import Store

CONTENT_TYPE = "application/gzip"
CACHE = "private, no-store"
_GROUP = re.compile(rf"{record.GROUPS}/[0-9a-f]{{64}}\Z")


def record_key(owner: str, name: str) -> str:
    return f"sites/{owner}/{name}/private/build-record.tar.gz"


@dataclass(frozen=True, kw_only=True)
class Restored:
    """A record fetched from the store onto this worker."""

    pages: int  # page records in it
    blobs: int  # page bytes fetched from the site's blobs
    missing: int  # page bytes the store did not have: those pages render again


def save(store: Store, *, host: HostConfig, site: SiteConfig) -> bool:
    """Store this worker's record of ``site``; False when it has none (nothing built yet)."""
    folder = record.build_dir(host, site)
    main = folder / record.RECORD
    if not main.is_file():
        return False
    groups = (
        sorted(p.name for p in (folder / record.GROUPS).iterdir() if len(p.name) == 64)
        if (folder / record.GROUPS).is_dir()
        else []
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        tar.add(main, arcname=record.RECORD, recursive=False)
        for name in groups:
            tar.add(
                folder / record.GROUPS / name, arcname=f"{record.GROUPS}/{name}", recursive=False
            )
    store.put(
        record_key(site.id.owner, site.id.name),
        buffer.getvalue(),
        content_type=CONTENT_TYPE,
        cache_control=CACHE,
    )
    return True


def restore(
    store: Store, *, host: HostConfig, site: SiteConfig, concurrency: int = 8
) -> Restored | None:
    """Fetch ``site``'s record into an empty local state; None when there is a local one or none stored."""
    folder = record.build_dir(host, site)
    if (folder / record.RECORD).is_file():
        return None
    data = store.get(record_key(site.id.owner, site.id.name))
    if data is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / record.GROUPS).mkdir(exist_ok=True)
    main: bytes | None = None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar:
            # only the names render writes, as regular files: nothing else leaves the archive
            if not member.isreg():
                continue
            if member.name != record.RECORD and not _GROUP.match(member.name):
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            if member.name == record.RECORD:
                main = fh.read()  # written last, so a half restore is no record
            else:
                replace_atomically(folder / member.name, fh.read())
    if main is None:
        return None
    objects = Objects(folder / "objects")
    objects.folder.mkdir(parents=True, exist_ok=True)
    replace_atomically(folder / record.RECORD, main)
    previous = record.load_previous(folder)
    wanted = sorted({page.hash for page in previous.pages.values()} - objects.hashes())
    owner, name = site.id.owner, site.id.name

    def fetch(digest: str) -> bool:
        blob = store.get(blob_key(owner, name, digest))
        if blob is None:
            return False
        objects.write(blob, digest)
        return True

    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        got = list(pool.map(fetch, wanted))
    return Restored(pages=len(previous.pages), blobs=sum(got), missing=len(got) - sum(got))
