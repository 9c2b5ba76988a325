"""Host names belong to sites: the first site to publish a host keeps it.

A site's host is the host name of its ``base_url``. The store records who
holds each one, so every publisher of the store, the mirror and ``render
serve`` see the same answer::

    hosts/<host>.json   {"host", "site": "owner/name" or null when released, "version", "claimed",
                         "live": {"version", "files_hash"}, "nonce" (when a pointer was written)}

A publish whose base_url names a host its live version does not have yet
claims it before uploading anything (``claim``): it fails, naming the holder,
when another site holds the host, or, for a host no claim names, when
another site is live with it (sites published before claims existed keep
their hosts). After the root switch, a site whose base_url moved releases
its old host (``release``). Every write of a claim is a conditional put on
the tag just read, so two publishers racing for one host cannot both win.

A claim whose site's live version no longer uses the host (a publish that
stopped before its root switch, or a crash before the release) is free again
after the grace period of gc: a publish in flight renews its claim first, so
nothing can take a host from under it.

The claim is also the edge Worker's pointer to the live version (``live``),
so a cold page view reads the claim, the tree and the blob, not root.json
too. After every root switch (publish, rollback) the writer points the claim
of the root's host at the version it made live (``point``); ``root.json``
stays the truth, and the pointer only ever names a version that was live
at that host. A claim without ``live`` (written by ``claim``, by older code,
or cleared) sends the Worker back to ``root.json``. The write is a
conditional put on the claim's tag read *before* the root it names was read
(or switched), so of two racing writers the last to write saw the newest
root: they converge on it. A crash between the switch and the pointer leaves
the claim naming the previous version, which gc keeps and the Worker serves
whole; the next publish or ``render repair`` points it again. A site whose
base_url moves clears its old host's pointer before the switch (``unpoint``).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Protocol
from urllib.parse import urlsplit

from render.errors import PublishError
from render.publish.manifest import (
    JSON_TYPE,
    ROOT_CACHE,
    Root,
    is_version_id,
    root_key,
    utc_now_iso,
)
from render.publish.store import Store

HOST_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_STAMP = "%Y-%m-%dT%H:%M:%SZ"
_ATTEMPTS = 5  # a lost race re-reads the claim and decides again


def host_of(base_url: str) -> str | None:
    """The host name a site's base_url is served at (IDNA-encoded, lowercase), or None."""
    try:
        host = urlsplit(base_url).hostname or ""
        host = host.encode("idna").decode("ascii").lower()
    except (ValueError, UnicodeError):
        return None
    return host if HOST_RE.match(host) else None


def claim_key(host: str) -> str:
    return f"hosts/{host}.json"


@dataclass(frozen=True, kw_only=True)
class Live:
    """A claim's ``live``: the version its site made live at the host (what the edge serves)."""

    version: str
    files_hash: str  # root.json's files_hash of that version (the Worker's live.json "tree")

    @classmethod
    def of(cls, root: Root) -> Live:
        return cls(version=root.version, files_hash=root.files_hash)

    def names(self, root: Root) -> bool:
        return self.version == root.version and self.files_hash == root.files_hash


@dataclass(frozen=True, kw_only=True)
class Claim:
    """``hosts/<host>.json``: which site holds a host name, and its live version there."""

    host: str
    site: str | None  # "owner/name"; None once released
    version: str  # the version whose publish wrote the claim: every write differs
    claimed: str  # UTC, when it was written
    live: Live | None = None  # the site's live version at this host; None: read root.json
    nonce: str = ""  # random, from each pointer write: its bytes are its own, no tag comes back

    def to_bytes(self) -> bytes:
        data: dict[str, object] = {
            "host": self.host,
            "site": self.site,
            "version": self.version,
            "claimed": self.claimed,
        }
        if self.live is not None:
            data["live"] = {"version": self.live.version, "files_hash": self.live.files_hash}
        if self.nonce:
            data["nonce"] = self.nonce
        return json.dumps(data, sort_keys=True, indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes, *, host: str) -> Claim:
        key = claim_key(host)
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if (
            not isinstance(data, dict)
            or data.get("host") != host
            or not isinstance(data.get("site"), (str, type(None)))
            or not isinstance(data.get("version"), str)
            or not isinstance(data.get("claimed"), str)
            or _parse_time(data["claimed"]) is None
            or (data.get("live") is not None and _live(data["live"]) is None)
            or not isinstance(data.get("nonce", ""), str)
        ):
            raise PublishError(
                f"{key} in the store is corrupt",
                hint=f"it was left as it is; delete {key} to release the host {host}",
            )
        return cls(
            host=host,
            site=data["site"],
            version=data["version"],
            claimed=data["claimed"],
            live=_live(data.get("live")),
            nonce=data.get("nonce", ""),
        )

    def age(self, now: datetime) -> timedelta:
        claimed = _parse_time(self.claimed)
        return now - claimed if claimed is not None else timedelta(0)


def _live(data: object) -> Live | None:
    if not isinstance(data, dict):
        return None
    version, files_hash = data.get("version"), data.get("files_hash")
    if not (isinstance(version, str) and is_version_id(version) and isinstance(files_hash, str)):
        return None
    return Live(version=version, files_hash=files_hash)


class ClaimReader(Protocol):
    """What the mirror and ``render serve`` read (``render.mirror.sync.MirrorStore`` has it)."""

    def get(self, key: str) -> bytes | None: ...


def holder(store: ClaimReader, host: str) -> str | None:
    """The site holding ``host``; None when no claim names one (or the claim is unreadable)."""
    raw = store.get(claim_key(host))
    if raw is None:
        return None
    try:
        return Claim.from_bytes(raw, host=host).site
    except PublishError:
        return None


def winner(store: ClaimReader, host: str, sites: Sequence[str]) -> str:
    """Which of ``sites`` (sorted, all live with ``host``) serves it: the holder, else the first."""
    if len(sites) == 1:
        return sites[0]
    held = holder(store, host)
    return held if held is not None and held in sites else sites[0]


def claim(
    store: Store,
    *,
    host: str,
    site: str,
    version: str,
    grace_hours: float,
    now: datetime | None = None,
) -> None:
    """Make ``site`` the holder of ``host``, or raise ``PublishError`` naming the holder."""
    moment = now or datetime.now(UTC)
    key = claim_key(host)
    checked_live = False  # the other sites' roots are read once: a racing claim shows in the tag
    for _ in range(_ATTEMPTS):
        got = store.get_tagged(key)
        current, tag = (Claim.from_bytes(got[0], host=host), got[1]) if got else (None, None)
        held_by = current.site if current is not None else None
        if held_by not in (None, site) and _still_held(store, current, moment, grace_hours):
            raise _taken(host, held_by)
        if held_by != site and not checked_live:
            live = _live_elsewhere(store, host, site, store.sites())
            if live is not None:
                raise _taken(host, live)
            checked_live = True
        mine = Claim(host=host, site=site, version=version, claimed=utc_now_iso(moment))
        if store.put_if(
            key, mine.to_bytes(), tag=tag, content_type=JSON_TYPE, cache_control=ROOT_CACHE
        ):
            return
    raise PublishError(
        f"the claim on the host {host} kept changing while this publish tried to take it",
        hint="another publisher is claiming the same host; run the publish again",
    )


def release(
    store: Store, *, host: str, site: str, version: str, now: datetime | None = None
) -> None:
    """Give ``host`` up when ``site`` holds it (its base_url moved); a lost race changes nothing."""
    key = claim_key(host)
    got = store.get_tagged(key)
    if got is None or Claim.from_bytes(got[0], host=host).site != site:
        return
    freed = Claim(host=host, site=None, version=version, claimed=utc_now_iso(now))
    store.put_if(
        key, freed.to_bytes(), tag=got[1], content_type=JSON_TYPE, cache_control=ROOT_CACHE
    )


class Pointed(Enum):
    pointed = "pointed"  # the claim now names the live version (it named another, or none)
    current = "current"  # it already named it (or, off its host, named none)
    cleared = "cleared"  # the live version is not at this host any more: the pointer is gone
    not_held = "not_held"  # no claim, a released one or another site's: left as it is


@dataclass(frozen=True, kw_only=True)
class HeldClaim:
    """A claim as read, with the tag a conditional write of it needs."""

    claim: Claim
    tag: str


def read_claim(store: Store, host: str) -> HeldClaim | None:
    got = store.get_tagged(claim_key(host))
    return None if got is None else HeldClaim(claim=Claim.from_bytes(got[0], host=host), tag=got[1])


def point(
    store: Store,
    *,
    host: str,
    site: str,
    switched: Root | None = None,
    before: HeldClaim | None = None,
) -> Pointed:
    """Make ``site``'s claim on ``host`` name the site's live version (its ``root.json``'s).

    Only a claim ``site`` holds is written, and only with a version whose root
    uses ``host``: else its pointer is cleared. ``switched`` is a root this
    writer just switched to, and ``before`` the claim as it read it before that
    switch (None: there was none): the first try writes on that tag without
    reading anything again, since the switch came after the claim was read.
    A lost race reads the claim, then the root, and decides again.
    """
    owner, _, name = site.partition("/")
    held, root = before, switched
    fresh = switched is None
    for _ in range(_ATTEMPTS):
        if fresh:
            held = read_claim(store, host)
            root = _read_root(store, owner, name) if held and held.claim.site == site else None
        fresh = True
        if held is None or held.claim.site != site:
            return Pointed.not_held
        now_live = held.claim.live
        if root is None or host_of(root.base_url) != host:
            if now_live is None:
                return Pointed.current
            if _put(store, held, None):
                return Pointed.cleared
            continue
        if now_live is not None and now_live.names(root):
            return Pointed.current
        if _put(store, held, Live.of(root)):
            return Pointed.pointed
    raise PublishError(
        f"the claim on the host {host} kept changing while it was pointed at {site}'s live version",
        hint=f"the edge serves the version it named before; run 'render repair {site}'",
    )


def unpoint(store: Store, *, host: str, site: str) -> Pointed:
    """Clear ``site``'s pointer on ``host`` before a switch that moves its base_url away.

    The Worker then reads ``root.json`` for the host (which names the old host
    until the switch, and another after it), so a crash before the release
    serves nothing there rather than the version left behind.
    """
    for _ in range(_ATTEMPTS):
        held = read_claim(store, host)
        if held is None or held.claim.site != site:
            return Pointed.not_held
        if held.claim.live is None:
            return Pointed.current
        if _put(store, held, None):
            return Pointed.cleared
    raise PublishError(
        f"the claim on the host {host} kept changing while this publish moved {site} away from it",
        hint="another publisher is writing the same claim; run the publish again",
    )


def _put(store: Store, held: HeldClaim, live: Live | None) -> bool:
    """Write ``held``'s claim with ``live`` if it still carries its tag."""
    new = replace(held.claim, live=live, nonce=secrets.token_hex(8))
    return store.put_if(
        claim_key(new.host),
        new.to_bytes(),
        tag=held.tag,
        content_type=JSON_TYPE,
        cache_control=ROOT_CACHE,
    )


def _read_root(store: Store, owner: str, name: str) -> Root | None:
    raw = store.get(root_key(owner, name))
    return None if raw is None else Root.from_bytes(raw, key=root_key(owner, name))


def _taken(host: str, holder_site: str) -> PublishError:
    return PublishError(
        f"the host {host} (base_url) belongs to {holder_site}, which published it first",
        hint=f"change [site] base_url in site.toml, or release the host: {holder_site} releases"
        " it when it publishes with another base_url",
    )


def _still_held(store: Store, current: Claim | None, now: datetime, grace_hours: float) -> bool:
    """True while the holder's live version uses the host, or its claim is younger than the grace."""
    if current is None or current.site is None:
        return False
    owner, _, name = current.site.partition("/")
    raw = store.get(root_key(owner, name))
    if raw is not None:
        try:
            live = Root.from_bytes(raw, key=root_key(owner, name))
        except PublishError:
            return True  # cannot tell: the holder keeps its host
        if host_of(live.base_url) == current.host:
            return True
    return current.age(now) < timedelta(hours=grace_hours)


def _live_elsewhere(
    store: Store, host: str, site: str, sites: Iterable[tuple[str, str]]
) -> str | None:
    """Another site whose live version uses ``host`` (published before claims existed)."""
    for owner, name in sites:
        if f"{owner}/{name}" == site:
            continue
        raw = store.get(root_key(owner, name))
        if raw is None:
            continue
        try:
            live = Root.from_bytes(raw, key=root_key(owner, name))
        except PublishError:
            continue  # a broken site does not block every new claim
        if host_of(live.base_url) == host:
            return f"{owner}/{name}"
    return None


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None
