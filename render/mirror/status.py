"""``render mirror status``: what the store has live, what the mirror serves, how far behind.

Reads one ``root.json`` per site from the store and only local files on the
mirror; it never takes the sync lock and never writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from render.errors import RenderError
from render.mirror.sync import STATUS_FILE, Layout, MirrorStore
from render.publish.manifest import Root, root_key

_STAMP = "%Y%m%dT%H%M%SZ"


class MirrorState(Enum):
    current = "current"  # serving the store's live version
    behind = "behind"  # serving an older version; the next sync catches up
    rolled_back = "rolled back"  # the store went back to an older version; the next sync follows
    not_served = "not served"  # in the store, not on the mirror yet
    not_in_store = "not in store"  # on the mirror, no root.json in the store (still served)
    unreadable = "unreadable"  # the store's root.json could not be read


@dataclass(frozen=True, kw_only=True)
class SiteStatus:
    site: str
    state: MirrorState
    live: str | None  # the version root.json names
    served: str | None  # the version current points at
    behind_seconds: int | None  # live version's time minus served version's time
    waiting_seconds: int | None  # how long the live version has been published and not served
    last_sync: str | None  # when the last sync ran (UTC)
    last_error: str | None  # the last sync's error for this site, if any


def mirror_status(
    store: MirrorStore, root: Path, *, now: datetime | None = None
) -> list[SiteStatus]:
    """One row per site in the store or on the mirror, sorted by site."""
    moment = now or datetime.now(UTC)
    last = _last_sync(root)
    names = set(store.sites())
    names |= {(p.parent.name, p.name) for p in (root / "sites").glob("*/*") if p.is_dir()}
    rows: list[SiteStatus] = []
    for owner, name in sorted(names):
        site = f"{owner}/{name}"
        try:
            served = Layout(root, owner, name).served()
        except RenderError:
            continue
        live_root: Root | None = None
        error = _last_error(last, site)
        try:
            raw = store.get(root_key(owner, name))
            live_root = Root.from_bytes(raw, key=root_key(owner, name)) if raw is not None else None
        except RenderError as exc:
            state = MirrorState.unreadable
            error = exc.message
        else:
            state = _state(live_root.version if live_root else None, served)
        live = live_root.version if live_root else None
        behind = waiting = None
        if live and served and live != served:
            behind = _seconds_between(served, live)
        if live_root and live != served:
            waiting = _since(live_root.published, moment)
        rows.append(
            SiteStatus(
                site=site,
                state=state,
                live=live,
                served=served,
                behind_seconds=behind,
                waiting_seconds=waiting,
                last_sync=str(last.get("synced")) if last else None,
                last_error=error,
            )
        )
    return rows


def _last_error(last: dict[str, Any] | None, site: str) -> str | None:
    entry = last["sites"].get(site) if last else None
    error = entry.get("error") if isinstance(entry, dict) else None
    return error if isinstance(error, str) else None


def _state(live: str | None, served: str | None) -> MirrorState:
    if live is None:
        return MirrorState.not_in_store
    if served is None:
        return MirrorState.not_served
    if live == served:
        return MirrorState.current
    return MirrorState.behind if live > served else MirrorState.rolled_back


def _seconds_between(older: str, newer: str) -> int | None:
    try:
        a = datetime.strptime(older.split("-")[0], _STAMP)
        b = datetime.strptime(newer.split("-")[0], _STAMP)
    except ValueError:
        return None
    return int((b - a).total_seconds())


def _since(stamp: str, now: datetime) -> int | None:
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0, int((now - then).total_seconds()))


def _last_sync(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / STATUS_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("sites"), dict) else None


def human_seconds(seconds: int | None) -> str:
    """``2 d 3 h``, ``5 min``, ``40 s``; an empty string for None."""
    if seconds is None:
        return ""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            smaller = {"d": ("h", 3600), "h": ("min", 60), "min": ("s", 1)}[unit]
            part = rest // smaller[1]
            return f"{whole} {unit} {part} {smaller[0]}" if part else f"{whole} {unit}"
    return f"{seconds} s"
