"""The version tree of a published site, its root pointer, and diffs between versions.

A version is a complete mapping ``path -> FileEntry(hash, size, type)``; its
bytes live in the store in packs (``packs/<sha256>.pack``, located by the
version's ``index``: see ``render.publish.packs``) or, for a blob the index
does not name, as ``blobs/<sha256>``. ``root.json`` names the live
version. Both are JSON with a fixed shape; reading one that does not have that
shape raises ``PublishError`` naming the key, so a corrupt file is reported and
never silently replaced.

Store keys (relative to the store's prefix)::

    sites/<owner>/<site>/blobs/<sha256>
    sites/<owner>/<site>/packs/<sha256>.pack
    sites/<owner>/<site>/versions/<version>.json
    sites/<owner>/<site>/root.json
    sites/<owner>/<site>/deltas/<version>/<older>.json

A delta (``Delta``) is what changed from an older version to ``<version>``:
each publish writes the one from its parent, so a client a version or a few
behind catches up with small documents instead of the whole tree
(``render.serve.versioned`` serves them under ``/_v/<version>/_render/delta/``).

``root.json`` may also carry a ``gc`` record: the lease of a ``render gc`` of
the site that is running, or the last one that finished (see
``render.publish.gc``). Readers that only follow the live version ignore it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from render.build.tree import FileEntry
from render.errors import PublishError
from render.files import utc_stamp

_VERSION_RE = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_STAMP = "%Y%m%dT%H%M%SZ"

BLOB_CACHE = "public, max-age=31536000, immutable"
ROOT_CACHE = "no-cache, no-store, max-age=0"
JSON_TYPE = "application/json"


# --- keys ------------------------------------------------------------------


def site_prefix(owner: str, name: str) -> str:
    return f"sites/{owner}/{name}/"


def blob_key(owner: str, name: str, digest: str) -> str:
    return f"sites/{owner}/{name}/blobs/{digest}"


def version_key(owner: str, name: str, version: str) -> str:
    return f"sites/{owner}/{name}/versions/{version}.json"


def root_key(owner: str, name: str) -> str:
    return f"sites/{owner}/{name}/root.json"


def pack_key(owner: str, name: str, pack: str) -> str:
    return f"sites/{owner}/{name}/packs/{pack}.pack"


def delta_key(owner: str, name: str, version: str, older: str) -> str:
    """Where the delta from ``older`` to ``version`` is kept."""
    return f"sites/{owner}/{name}/deltas/{version}/{older}.json"


# --- version ids -----------------------------------------------------------


def is_version_id(text: str) -> bool:
    return _VERSION_RE.match(text) is not None


def new_version_id(*, now: datetime | None = None, after: str | None = None) -> str:
    """``20261127T030000Z-1a2b3c4d``: sorts by time, unique by its random suffix.

    When ``after`` (the parent) would sort at or after the new id (a clock
    behind, or two publishes in one second), the time is moved one second past
    it, so a site's versions always sort in the order they were made.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    if after is not None and (m := _VERSION_RE.match(after)):
        parent_time = datetime.strptime(m.group(1), _STAMP).replace(tzinfo=UTC)
        if moment <= parent_time:
            moment = parent_time + timedelta(seconds=1)
    return f"{moment.strftime(_STAMP)}-{secrets.token_hex(4)}"


def utc_now_iso(now: datetime | None = None) -> str:
    return utc_stamp(now)


# --- records ---------------------------------------------------------------


def files_digest(files: Mapping[str, FileEntry]) -> str:
    """sha256 of the canonical JSON of a files mapping: equal digests, equal trees."""
    canonical = json.dumps(
        {p: files[p].to_json() for p in sorted(files)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class VersionTree:
    """``versions/<version>.json``: one whole published tree, and where its blobs are packed.

    ``packs`` lists every pack holding a blob of the tree; ``index`` maps a
    blob's hash to (its pack's position in ``packs``, its byte offset there).
    A blob the index does not name is the loose key ``blobs/<sha256>``. Both
    are left out of the JSON when empty, so a loose version reads as before.

    ``repack_of`` names the version whose files this one repeats with its
    blobs in fewer packs (``render.publish.repack``): not a content change.
    """

    version: str
    parent: str | None
    created: str
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    packs: tuple[str, ...] = ()
    index: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    repack_of: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files.values())

    def hashes(self) -> set[str]:
        return {e.hash for e in self.files.values()}

    @functools.cached_property
    def sizes(self) -> Mapping[str, int]:
        """hash -> size, one entry per blob (worked out once per tree)."""
        return {e.hash: e.size for e in self.files.values()}

    def locate(self, digest: str) -> tuple[str, int] | None:
        """(pack id, offset) of a packed blob; None for a loose one."""
        at = self.index.get(digest)
        return None if at is None else (self.packs[at[0]], at[1])

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "version": self.version,
            "parent": self.parent,
            "created": self.created,
            "files": {p: self.files[p].to_json() for p in sorted(self.files)},
        }
        if self.packs:
            data["packs"] = list(self.packs)
            data["index"] = {h: list(self.index[h]) for h in sorted(self.index)}
        if self.repack_of is not None:
            data["repack_of"] = self.repack_of
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, *, key: str) -> VersionTree:
        data = _load_object(raw, key=key)
        problem = None
        files: dict[str, FileEntry] = {}
        raw_files = data.get("files")
        if not isinstance(data.get("version"), str) or not is_version_id(data["version"]):
            problem = "'version' is missing or not a version id"
        elif data.get("parent") is not None and not isinstance(data.get("parent"), str):
            problem = "'parent' is not a string"
        elif not isinstance(data.get("created"), str):
            problem = "'created' is missing"
        elif not isinstance(raw_files, dict):
            problem = "'files' is missing or not an object"
        elif data.get("repack_of") is not None and not (
            isinstance(data["repack_of"], str) and is_version_id(data["repack_of"])
        ):
            problem = "'repack_of' is not a version id"
        else:
            for path, entry in raw_files.items():
                if not (
                    isinstance(entry, dict)
                    and isinstance(entry.get("hash"), str)
                    and _HASH_RE.match(entry["hash"])
                    and isinstance(entry.get("size"), int)
                    and isinstance(entry.get("type"), str)
                ):
                    problem = f"files[{path!r}] is not {{hash, size, type}}"
                    break
                files[path] = FileEntry(hash=entry["hash"], size=entry["size"], type=entry["type"])
        if problem is None:
            packs, index, problem = _packs_and_index(data, files)
        if problem is not None:
            raise _corrupt(key, problem)
        return cls(
            version=data["version"],
            parent=data.get("parent"),
            created=data["created"],
            files=types.MappingProxyType(files),
            packs=packs,
            index=types.MappingProxyType(index),
            repack_of=data.get("repack_of"),
        )


def _packs_and_index(
    data: dict[str, Any], files: Mapping[str, FileEntry]
) -> tuple[tuple[str, ...], dict[str, tuple[int, int]], str | None]:
    """A version file's ``packs`` and ``index``, checked; or the problem with them."""
    raw_packs, raw_index = data.get("packs", []), data.get("index", {})
    if not isinstance(raw_packs, list) or not all(
        isinstance(p, str) and _HASH_RE.match(p) for p in raw_packs
    ):
        return (), {}, "'packs' is not a list of sha256 hex digests"
    if not isinstance(raw_index, dict):
        return (), {}, "'index' is not an object"
    hashes = {e.hash for e in files.values()}
    index: dict[str, tuple[int, int]] = {}
    for digest, at in raw_index.items():
        if not (
            digest in hashes
            and isinstance(at, list)
            and len(at) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in at)
            and 0 <= at[0] < len(raw_packs)
            and at[1] >= 0
        ):
            return (), {}, f"index[{digest!r}] is not [pack, offset] of a blob of the tree"
        index[digest] = (at[0], at[1])
    return tuple(raw_packs), index, None


@dataclass(frozen=True, kw_only=True)
class GcLease:
    """``root.json``'s ``gc`` record: a gc of the site holds it while it may delete."""

    id: str  # random: two leases never write the same bytes, so a tag never comes back
    host: str
    pid: int
    started: str  # UTC, ``2026-11-27T03:00:00Z``
    expires: str  # the gc deletes nothing after this (by its own clock)
    done: bool = False  # the gc finished (or gave up): it deletes nothing more

    def running(self, now: float) -> bool:
        """True while this gc may still delete: not done, and ``now`` (epoch seconds) before expiry.

        ``LEASE_SKEW_SECONDS`` past the expiry count too: for a clock that runs
        behind the gc's machine, and for a delete request still in flight.
        """
        return not self.done and now < _epoch(self.expires) + LEASE_SKEW_SECONDS

    def describe(self) -> str:
        """``pid 4242 on web1 since 2026-11-27 03:00:07 UTC``."""
        return f"pid {self.pid} on {self.host} since {self.started.replace('T', ' ')[:-1]} UTC"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "started": self.started,
            "expires": self.expires,
            "done": self.done,
        }

    @classmethod
    def from_json(cls, data: object, *, key: str) -> GcLease:
        if not isinstance(data, dict):
            raise _corrupt(key, "'gc' is not an object")
        texts = ("id", "host", "started", "expires")
        if not all(isinstance(data.get(n), str) for n in texts) or not all(
            _STAMP_RE.match(data[n]) for n in ("started", "expires")
        ):
            raise _corrupt(key, "'gc' is not {id, host, pid, started, expires, done}")
        pid, done = data.get("pid"), data.get("done", False)
        if not isinstance(pid, int) or not isinstance(done, bool):
            raise _corrupt(key, "'gc' is not {id, host, pid, started, expires, done}")
        return cls(
            id=data["id"],
            host=data["host"],
            pid=pid,
            started=data["started"],
            expires=data["expires"],
            done=done,
        )


LEASE_SKEW_SECONDS = 300.0
"""How far behind another machine's clock may run (plus a delete still in flight)."""

_STAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True, kw_only=True)
class Root:
    """``root.json``: which version is live. Written last, in one write."""

    version: str
    site: str
    base_url: str
    previous: str | None
    published: str
    files_hash: str = ""  # files_digest of the live tree: an unchanged publish reads only this
    gc: GcLease | None = None  # a publish or rollback writes none; gc writes its lease here

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "version": self.version,
            "site": self.site,
            "base_url": self.base_url,
            "previous": self.previous,
            "published": self.published,
            "files_hash": self.files_hash,
        }
        if self.gc is not None:
            data["gc"] = self.gc.to_json()
        return json.dumps(data, sort_keys=True, indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes, *, key: str) -> Root:
        data = _load_object(raw, key=key)
        version = data.get("version")
        if not isinstance(version, str) or not is_version_id(version):
            raise _corrupt(key, "'version' is missing or not a version id")
        for name in ("site", "base_url", "published"):
            if not isinstance(data.get(name, ""), str):
                raise _corrupt(key, f"{name!r} is not a string")
        previous = data.get("previous")
        if previous is not None and not isinstance(previous, str):
            raise _corrupt(key, "'previous' is not a string")
        files_hash = data.get("files_hash", "")
        gc = GcLease.from_json(data["gc"], key=key) if data.get("gc") is not None else None
        return cls(
            version=version,
            site=data.get("site", ""),
            base_url=data.get("base_url", ""),
            previous=previous,
            published=data.get("published", ""),
            files_hash=files_hash if isinstance(files_hash, str) else "",
            gc=gc,
        )


def _load_object(raw: bytes, *, key: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(key, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _corrupt(key, "not a JSON object")
    return data


def _corrupt(key: str, problem: str) -> PublishError:
    return PublishError(
        f"{key} in the store is corrupt: {problem}",
        hint="it was left as it is; restore it from a backup, or 'render rollback' to a good version",
    )


# --- diffs -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Diff:
    """What changed between two trees, by path."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path whose response differs: what a CDN purge must cover."""
        return tuple(sorted((*self.added, *self.changed, *self.removed)))

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff(old: Mapping[str, FileEntry], new: Mapping[str, FileEntry]) -> Diff:
    added = tuple(sorted(p for p in new if p not in old))
    removed = tuple(sorted(p for p in old if p not in new))
    changed = tuple(sorted(p for p in new if p in old and old[p] != new[p]))
    return Diff(added=added, changed=changed, removed=removed)


def new_blobs(new: Mapping[str, FileEntry], old_hashes: Iterable[str]) -> dict[str, FileEntry]:
    """One entry per blob in ``new`` whose hash is not in ``old_hashes`` (hash -> an entry)."""
    known = set(old_hashes)
    out: dict[str, FileEntry] = {}
    for path in sorted(new):
        entry = new[path]
        if entry.hash not in known and entry.hash not in out:
            out[entry.hash] = entry
    return out


@dataclass(frozen=True, kw_only=True)
class Delta:
    """``deltas/<version>/<older>.json``: the paths whose hash changed from ``older`` to ``version``.

    ``older_parent`` is the version ``older`` was published on top of, so a
    client further behind can fetch the next delta back without the whole tree.
    """

    version: str
    older: str
    older_parent: str | None
    added: Mapping[str, str]  # path -> content hash
    changed: Mapping[str, str]
    removed: tuple[str, ...]

    @classmethod
    def between(
        cls,
        old: Mapping[str, FileEntry],
        new: Mapping[str, FileEntry],
        *,
        version: str,
        older: str,
        older_parent: str | None,
    ) -> Delta:
        d = diff(old, new)
        return cls(
            version=version,
            older=older,
            older_parent=older_parent,
            added={p: new[p].hash for p in d.added},
            changed={p: new[p].hash for p in d.changed if new[p].hash != old[p].hash},
            removed=d.removed,
        )

    def to_bytes(self) -> bytes:
        data = {
            "version": self.version,
            "from": self.older,
            "from_parent": self.older_parent,
            "added": dict(sorted(self.added.items())),
            "changed": dict(sorted(self.changed.items())),
            "removed": list(self.removed),
        }
        return json.dumps(data, separators=(",", ":")).encode()
