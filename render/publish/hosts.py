"""Host names belong to sites: the first site to publish a host keeps it.

A site's host is the host name of its ``base_url``. The store records who
holds each one, so every publisher of the store, the mirror and ``render
serve`` see the same answer::

    hosts/<host>.json   {"host", "site": "owner/name" or null when released, "version", "claimed"}

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
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

from render.errors import PublishError
from render.publish.manifest import JSON_TYPE, ROOT_CACHE, Root, root_key, utc_now_iso
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
class Claim:
    """``hosts/<host>.json``: which site holds a host name."""

    host: str
    site: str | None  # "owner/name"; None once released
    version: str  # the version whose publish wrote the claim: every write differs
    claimed: str  # UTC, when it was written

    def to_bytes(self) -> bytes:
        data = {
            "host": self.host,
            "site": self.site,
            "version": self.version,
            "claimed": self.claimed,
        }
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
        ):
            raise PublishError(
                f"{key} in the store is corrupt",
                hint=f"it was left as it is; delete {key} to release the host {host}",
            )
        return cls(host=host, site=data["site"], version=data["version"], claimed=data["claimed"])

    def age(self, now: datetime) -> timedelta:
        claimed = _parse_time(self.claimed)
        return now - claimed if claimed is not None else timedelta(0)


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
