"""Pages rendered on request since the last build, kept for the next one.

``render origin`` renders a page whose data changed since the last build when a
visitor asks for it (``render.origin.fresh``). Its bytes go into the build's
objects folder under their hash and its page record into ``onrequest.pickle``
beside the build record, tagged with the record it was rendered against. The
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

from render.build.record import FORMAT, RECORD, Previous
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


def load(folder: Path) -> dict[str, PageRecord]:
    """The pages rendered on request against the build record now in ``folder``."""
    try:
        data = pickle.loads((folder / OVERLAY).read_bytes())
    except (
        OSError,
        ValueError,
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        TypeError,
    ):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}
    if data.get("record") != record_id(folder):
        return {}
    pages = data.get("pages")
    return dict(pages) if isinstance(pages, dict) else {}


def add(
    folder: Path, pages: Mapping[str, PageRecord], *, against: tuple[int, int, int] | None
) -> bool:
    """Keep ``pages`` (rendered against the record ``against``); False when a build replaced it."""
    with flocked(folder / _LOCK):
        if record_id(folder) != against:
            return False
        kept = load(folder)
        kept.update({path: page.as_reused() for path, page in pages.items()})
        data = {"format": FORMAT, "record": against, "pages": kept}
        replace_atomically(folder / OVERLAY, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return True


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
