"""The build record carried between workers through the store, at the cost of what changed.

A site's incremental state (``<state>/builds/<owner>/<name>/``: the record of
the last complete build and the objects it made) lives on the machine that
built it. So that any worker can build any site incrementally, the record is
also kept in the store, privately beside the site's versions (no manifest
names these keys, so no mirror and no edge ever serves them)::

    sites/<owner>/<name>/private/build-record            names its packs, then the main record
    sites/<owner>/<name>/private/record/<sha256>.pack    groups of page records (zlib)

The local record is already split into ``record.BUCKETS`` groups of page
records, each named by the sha256 of its bytes (``render.build.record``), so
a rebuild that rendered one page changes one group. A save puts the groups
the store does not have yet in one pack (one upload, whether it is the first
build's 64 groups or a night's one), then the stored record, last, like
``root.json``: a reader that got it finds every pack it names. Packs left
with no live group are deleted; when the kept ones are mostly dead groups,
or more than ``MAX_PACKS``, the next save puts every live group in one new
pack instead (the record's size, once in a while).

Each worker keeps a note beside its record (``carried.json``: the digests
of its main record and of the stored record it last put or fetched, and the
packs that one names). So:

- ``save`` after a build puts nothing when the record did not change, else
  one pack of the new groups and the stored record;
- ``restore`` before a build reads the stored record (one small GET): when
  it is the one in the note, the local record is the latest and nothing more
  is read; otherwise (an empty state folder, or another worker built the
  site since) it fetches the packs holding groups this folder lacks and the
  page bytes the record names from the site's blobs. The build then renders
  only what changed.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from render.build import record
from render.build.objects import Objects
from render.config import HostConfig, SiteConfig
from render.files import replace_atomically
from render.publish.packs import StoredBlobs
from render.publish.store import Store
from render.publish.versions import read_root, read_tree

CONTENT_TYPE = "application/octet-stream"
CACHE = "private, no-store"
MAX_PACKS = 8  # past this many packs, a save puts every live group in one
NOTE = "carried.json"  # beside the local record: what the store holds, as this worker last saw it
_NAME = re.compile(r"[0-9a-f]{64}\Z")
T = TypeVar("T")


def record_key(owner: str, name: str) -> str:
    return f"sites/{owner}/{name}/private/build-record"


def pack_key(owner: str, name: str, pack: str) -> str:
    return f"sites/{owner}/{name}/private/{record.GROUPS}/{pack}.pack"


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

    groups: int  # groups of page records uploaded (in one pack)
    removed: int  # packs no longer needed, deleted
    record: bool  # the main record was put (False: it was unchanged)


@dataclass(frozen=True, kw_only=True)
class _Note:
    """What this worker last put or fetched: the store's record, as far as it knows."""

    main: str  # sha256 of the local main record it matches
    stored: str  # sha256 of the stored object
    packs: dict[str, list[str]]  # pack -> the groups in it

    @classmethod
    def read(cls, folder: Path) -> _Note | None:
        try:
            data = json.loads((folder / NOTE).read_text(encoding="utf-8"))
            packs = {str(k): [str(g) for g in v] for k, v in data["packs"].items()}
            return cls(main=str(data["main"]), stored=str(data["stored"]), packs=packs)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def write(self, folder: Path) -> None:
        text = json.dumps({"main": self.main, "stored": self.stored, "packs": self.packs})
        replace_atomically(folder / NOTE, text.encode("utf-8"))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _stored(packs: dict[str, list[str]], main: bytes) -> bytes:
    """The stored object: one JSON line naming the packs, then the main record."""
    return json.dumps({"packs": packs}, sort_keys=True).encode("utf-8") + b"\n" + main


def _parse(data: bytes) -> tuple[dict[str, list[str]], bytes, list[str]] | None:
    """Packs, main record and its groups of a stored object; None when it is not whole."""
    head, _, main = data.partition(b"\n")
    try:
        packs = {str(k): [str(g) for g in v] for k, v in json.loads(head)["packs"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    names = _groups(main)
    if names is None or not set(names) <= {g for gs in packs.values() for g in gs}:
        return None
    return packs, main, names


def _plan(previous: dict[str, list[str]], live: set[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The packs to keep and the groups to put in a new one.

    A pack with no live group goes; when the kept packs are mostly dead
    groups, or more than ``MAX_PACKS`` would be named, every live group goes
    into one new pack (the record's size, once in a while).
    """
    keep = {p: gs for p, gs in previous.items() if live & set(gs)}
    covered = {g for gs in keep.values() for g in gs}
    total = sum(len(set(gs)) for gs in keep.values())
    new = sorted(live - covered)
    if len(keep) + bool(new) > MAX_PACKS or 2 * len(covered & live) < total:
        return {}, sorted(live)
    return keep, new


def save(store: Store, *, host: HostConfig, site: SiteConfig, concurrency: int = 8) -> Saved | None:
    """Put what changed in this worker's record of ``site``; None when it has no record."""
    folder = record.build_dir(host, site)
    try:
        main = (folder / record.RECORD).read_bytes()
    except FileNotFoundError:
        return None
    digest = _digest(main)
    note = _Note.read(folder)
    if note is not None and note.main == digest:
        return Saved(groups=0, removed=0, record=False)
    names = _groups(main)
    if names is None:
        return None
    owner, name = site.id.owner, site.id.name
    previous = note.packs if note is not None else {}
    keep, new = _plan(previous, set(names))
    if new:
        groups = {g: (folder / record.GROUPS / g).read_bytes() for g in new}
        pack = zlib.compress(pickle.dumps(groups, protocol=pickle.HIGHEST_PROTOCOL), 1)
        pack_name = _digest(pack)
        store.put(
            pack_key(owner, name, pack_name), pack, content_type=CONTENT_TYPE, cache_control=CACHE
        )
        keep = {**keep, pack_name: new}
    stored = _stored(keep, main)
    store.put(record_key(owner, name), stored, content_type=CONTENT_TYPE, cache_control=CACHE)
    gone = sorted(set(previous) - set(keep))
    if gone:  # under the site lock: no other worker is reading this record now
        store.delete([pack_key(owner, name, p) for p in gone])
    _Note(main=digest, stored=_digest(stored), packs=keep).write(folder)
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
    data = store.get(record_key(owner, name))
    if data is None:
        return None
    stored = _digest(data)
    note = _Note.read(folder)
    if note is not None and note.stored == stored and (folder / record.RECORD).is_file():
        return None
    parsed = _parse(data)
    if parsed is None:
        return None
    packs, main, names = parsed
    groups = folder / record.GROUPS
    groups.mkdir(parents=True, exist_ok=True)
    wanted = {g for g in names if not (groups / g).is_file()}
    needed = sorted(p for p, gs in packs.items() if wanted & set(gs))

    def fetch(pack: str) -> bool:
        data = store.get(pack_key(owner, name, pack))
        if data is None:
            return False
        try:
            content = pickle.loads(zlib.decompress(data))
        except Exception:  # noqa: BLE001 - a damaged pack restores nothing
            return False
        for group in wanted & set(packs[pack]):
            raw = content.get(group) if isinstance(content, dict) else None
            if not isinstance(raw, bytes) or _digest(raw) != group:
                return False
            replace_atomically(groups / group, raw)
        return True

    if not all(_each(fetch, needed, concurrency)):
        return None  # a pack is gone (a save replaced the record meanwhile): keep what is here
    replace_atomically(folder / record.RECORD, main)  # last: a half restore is no record
    _Note(main=_digest(main), stored=stored, packs=packs).write(folder)
    previous = record.load_previous(folder)
    objects = Objects(folder / "objects")
    objects.folder.mkdir(parents=True, exist_ok=True)
    blobs = sorted({page.hash for page in previous.pages.values()} - objects.hashes())

    got = _fetch_blobs(store, owner, name, blobs, objects, concurrency)
    return Restored(
        pages=len(previous.pages),
        groups=len(wanted),
        blobs=got,
        missing=len(blobs) - got,
    )


def _fetch_blobs(
    store: Store, owner: str, name: str, blobs: list[str], objects: Objects, concurrency: int
) -> int:
    """The record's page blobs that the live version has, into ``objects``; how many came.

    A blob the live version does not name (or the store lost) is left out: the
    build renders that page again."""
    if not blobs:
        return 0
    root, _ = read_root(store, owner=owner, name=name)
    if root is None:
        return 0
    tree = read_tree(store, owner=owner, name=name, version=root.version)
    got = 0

    def keep(digest: str, data: bytes) -> None:
        nonlocal got
        objects.write(data, digest)
        got += 1

    StoredBlobs(store, owner=owner, name=name, tree=tree).fetch(
        [d for d in blobs if d in tree.sizes],
        keep,
        concurrency=concurrency,
        missing=lambda digest, key: None,
    )
    return got


def _each(function: Callable[[str], T], items: list[str], concurrency: int) -> list[T]:
    """``function`` over ``items`` on up to ``concurrency`` threads (none for one item)."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(function, items))
