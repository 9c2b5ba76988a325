"""The build record carried between workers through the store, at the cost of what changed.

A site's incremental state (``<state>/builds/<owner>/<name>/``: the record of
the last complete build and the objects it made) lives on the machine that
built it. So that any worker can build any site incrementally, the record is
also kept in the store, privately beside the site's versions (no manifest
names these keys, so no mirror and no edge ever serves them)::

    sites/<owner>/<name>/private/record/<sha256>       a group of page records (zlib)
    sites/<owner>/<name>/private/build-record.pickle   the site-wide facts; names its groups

The local record is already split into ``record.BUCKETS`` groups, each named
by the sha256 of its bytes (``render.build.record``); the store keeps the same
groups under the same names, so they are immutable and a build that rendered
one page uploads one group and the small main record, not the whole record.
The main record is written last, like ``root.json``: a reader that got it
finds every group it names.

Each worker keeps a note beside its record (``carried.json``: the sha256 of
the main record it last put or fetched, and the groups that one names). So:

- ``save`` after a build puts nothing when the record did not change, else
  the groups the note does not list, then the main record, then deletes the
  groups only the previous record named;
- ``restore`` before a build reads the main record (one small GET): when it
  is the one in the note, the local record is the latest and nothing more is
  read; otherwise (an empty state folder, or another worker built the site
  since) it fetches the groups this folder lacks and the page bytes the
  record names from the site's blobs. The build then renders only what changed.

Both run under the site's lock in Redis. The record is unpickled
(``render.build.record``): like the local state folder, the store is written
only by render, never by a tenant.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import pickle
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from render.build import record
from render.build.objects import Objects
from render.config import HostConfig, SiteConfig
from render.files import replace_atomically
from render.publish.manifest import blob_key
from render.publish.store import Store

CONTENT_TYPE = "application/octet-stream"
CACHE = "private, no-store"
NOTE = "carried.json"  # beside the local record: what the store holds, as this worker last saw it
_NAME = re.compile(r"[0-9a-f]{64}\Z")
T = TypeVar("T")


def record_key(owner: str, name: str) -> str:
    return f"sites/{owner}/{name}/private/build-record.pickle"


def group_key(owner: str, name: str, group: str) -> str:
    return f"sites/{owner}/{name}/private/{record.GROUPS}/{group}"


@dataclass(frozen=True, kw_only=True)
class Restored:
    """A record fetched from the store onto this worker."""

    pages: int  # page records in it
    groups: int  # groups of page records fetched (the others were here already)
    blobs: int  # page bytes fetched from the site's blobs
    missing: int  # page bytes the store did not have: those pages render again


@dataclass(frozen=True, kw_only=True)
class Saved:
    """What ``save`` put into the store."""

    groups: int  # groups uploaded
    removed: int  # groups no longer named, deleted
    record: bool  # the main record was put (False: it was unchanged)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_note(folder: Path) -> tuple[str, frozenset[str]] | None:
    try:
        data = json.loads((folder / NOTE).read_text(encoding="utf-8"))
        return str(data["record"]), frozenset(str(g) for g in data["groups"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_note(folder: Path, digest: str, groups: Iterable[str]) -> None:
    text = json.dumps({"record": digest, "groups": sorted(groups)})
    replace_atomically(folder / NOTE, text.encode("utf-8"))


def _groups(main: bytes) -> list[str] | None:
    """The group names a main record names; None when it is not a record of this format."""
    try:
        data: Any = pickle.loads(main)
    except Exception:  # noqa: BLE001 - a damaged or foreign record is no record
        return None
    if not isinstance(data, dict) or data.get("format") != record.FORMAT:
        return None
    names = data.get("pages")
    if not isinstance(names, list) or not all(isinstance(n, str) and _NAME.match(n) for n in names):
        return None
    return names


def save(store: Store, *, host: HostConfig, site: SiteConfig, concurrency: int = 8) -> Saved | None:
    """Put what changed in this worker's record of ``site``; None when it has no record."""
    folder = record.build_dir(host, site)
    try:
        main = (folder / record.RECORD).read_bytes()
    except FileNotFoundError:
        return None
    digest = _digest(main)
    note = _read_note(folder)
    if note is not None and note[0] == digest:
        return Saved(groups=0, removed=0, record=False)
    names = _groups(main)
    if names is None:
        return None
    owner, name = site.id.owner, site.id.name
    stored = note[1] if note is not None else frozenset()
    new = sorted(set(names) - stored)

    def put(group: str) -> None:
        data = (folder / record.GROUPS / group).read_bytes()
        store.put(
            group_key(owner, name, group),
            zlib.compress(data, 1),
            content_type=CONTENT_TYPE,
            cache_control=CACHE,
        )

    _each(put, new, concurrency)
    store.put(record_key(owner, name), main, content_type=CONTENT_TYPE, cache_control=CACHE)
    gone = sorted(stored - set(names))
    if gone:  # under the site lock, no other worker is reading this record now
        store.delete([group_key(owner, name, g) for g in gone])
    _write_note(folder, digest, names)
    return Saved(groups=len(new), removed=len(gone), record=True)


def restore(
    store: Store, *, host: HostConfig, site: SiteConfig, concurrency: int = 8
) -> Restored | None:
    """Bring the store's record of ``site`` here when it is not the local one; None when it is.

    None too when the store has no record, or not a whole one: the local
    record (if any) stays, and the build renders what it does not cover.
    """
    folder = record.build_dir(host, site)
    owner, name = site.id.owner, site.id.name
    main = store.get(record_key(owner, name))
    if main is None:
        return None
    digest = _digest(main)
    note = _read_note(folder)
    if note is not None and note[0] == digest and (folder / record.RECORD).is_file():
        return None
    names = _groups(main)
    if names is None:
        return None
    groups = folder / record.GROUPS
    groups.mkdir(parents=True, exist_ok=True)
    wanted = [g for g in dict.fromkeys(names) if not (groups / g).is_file()]

    def fetch(group: str) -> bool:
        data = store.get(group_key(owner, name, group))
        if data is None:
            return False
        try:
            raw = zlib.decompress(data)
        except zlib.error:
            return False
        if _digest(raw) != group:
            return False
        replace_atomically(groups / group, raw)
        return True

    if not all(_each(fetch, wanted, concurrency)):
        return None  # a group is gone (a save replaced the record meanwhile): keep what is here
    replace_atomically(folder / record.RECORD, main)  # last: a half restore is no record
    _write_note(folder, digest, names)
    previous = record.load_previous(folder)
    objects = Objects(folder / "objects")
    objects.folder.mkdir(parents=True, exist_ok=True)
    blobs = sorted({page.hash for page in previous.pages.values()} - objects.hashes())

    def fetch_blob(digest: str) -> bool:
        blob = store.get(blob_key(owner, name, digest))
        if blob is None:
            return False
        objects.write(blob, digest)
        return True

    got = _each(fetch_blob, blobs, concurrency)
    return Restored(
        pages=len(previous.pages),
        groups=len(wanted),
        blobs=sum(got),
        missing=len(got) - sum(got),
    )


def _each(function: Callable[[str], T], items: list[str], concurrency: int) -> list[T]:
    """``function`` over ``items`` on up to ``concurrency`` threads (none for one item)."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(function, items))
