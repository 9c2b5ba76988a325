"""Pages rendered on request since the last build, kept for the next one.

``render origin`` renders a page whose data changed since the last build when a
visitor asks for it (``render.origin.fresh``). Its bytes go into the build's
objects folder under their hash and its page record into ``onrequest.pickle``
beside the build record, tagged with the record it was rendered against and
the database state it was rendered from (another origin process serving the
same state takes it instead of rendering it again: ``rendered``). The
next build merges those records into the last build's before it decides what to
reuse, so a page the origin rendered is reused like any page of the last build
(same fingerprint, same query results, bytes stored): it is not rendered again,
and it is published with the build, through its checks.

Records made against another build record (a build ran since) are ignored; a
complete build removes the file.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from render.build.record import FORMAT, RECORD, UNREADABLE, Previous
from render.build.tree import PageRecord
from render.files import flocked, replace_atomically

OVERLAY = "onrequest.pickle"
_LOCK = ".onrequest.lock"


def record_id(folder: Path) -> tuple[int, int, int] | None:
    """Which build record is in ``folder`` (it is replaced by rename, so a new one differs)."""
    try:
        st = os.stat(folder / RECORD)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read(folder: Path) -> dict[str, object]:
    try:
        data = pickle.loads((folder / OVERLAY).read_bytes())
    except UNREADABLE:
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}
    return data


def _mapping(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def load(folder: Path) -> dict[str, PageRecord]:
    """The pages rendered on request against the build record now in ``folder``."""
    data = _read(folder)
    if data.get("record") != record_id(folder):
        return {}
    pages = data.get("pages")
    return dict(pages) if isinstance(pages, dict) else {}


def add(
    folder: Path,
    pages: Mapping[str, PageRecord],
    *,
    against: tuple[int, int, int] | None,
    state: object = None,
) -> bool:
    """Keep ``pages`` (rendered against the record ``against``, from the database state
    ``state``); False when a build replaced the record."""
    with flocked(folder / _LOCK):
        if record_id(folder) != against:
            return False
        data = _read(folder)
        same = data.get("record") == against
        kept = _mapping(data.get("pages")) if same else {}
        states = _mapping(data.get("states")) if same else {}
        for path, page in pages.items():
            kept[path] = page.as_reused()
            states[path] = state
        data = {"format": FORMAT, "record": against, "pages": kept, "states": states}
        replace_atomically(folder / OVERLAY, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return True


def rendered(folder: Path, path: str, *, state: object) -> PageRecord | None:
    """The page rendered on request for ``path`` from the database state ``state``, if any."""
    data = _read(folder)
    if data.get("record") != record_id(folder) or state is None:
        return None
    states, pages = data.get("states"), data.get("pages")
    if not isinstance(states, dict) or not isinstance(pages, dict) or states.get(path) != state:
        return None
    page = pages.get(path)
    return page if isinstance(page, PageRecord) else None


def merged(previous: Previous, folder: Path) -> Previous:
    """The last build's record with the pages rendered on request since put in."""
    return merge(previous, load(folder))


def merge(previous: Previous, pages: Mapping[str, PageRecord]) -> Previous:
    """``previous`` with ``pages`` (rendered on request against it) put in."""
    if not pages or not previous.pages:
        return previous
    return dataclasses.replace(previous, pages={**previous.pages, **pages})


def clear(folder: Path) -> None:
    """A complete build took the pages in: forget them."""
    with flocked(folder / _LOCK):
        (folder / OVERLAY).unlink(missing_ok=True)
