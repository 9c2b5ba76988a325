"""The build record: what the last complete build made and read, kept for the next one.

It lives in the host's state folder (``<state>/builds/<owner>/<name>/``), which
no tenant can write (``config.load_host`` keeps it apart from the sites folder):
``build.pickle`` holds the site-wide facts and names ``BUCKETS`` pickled groups
of page records in ``record/``, each named by its hash, so that a rebuild that
rendered one page writes one group. A record of another format, or one that
cannot be read (damaged, or written by an older layout whose classes moved),
is no record: the next build renders everything. The record is replaced only
when a build is complete, with an atomic rename.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from render import __version__
from render.build.sandbox import Read
from render.build.tree import PageRecord, write_object
from render.config import HostConfig, SiteConfig
from render.files import replace_atomically

FORMAT = f"render-build-11/{__version__}"  # 11: classes moved into stage packages


RECORD = "build.pickle"  # written and read only by render, in the state folder


GROUPS = "record"  # beside it: the page records in BUCKETS pickled groups, named by their hash


BUCKETS = 64  # an unchanged group is neither pickled nor written again


@dataclass(frozen=True, kw_only=True)
class Previous:
    """What the last complete build recorded."""

    pages: Mapping[str, PageRecord] = field(default_factory=dict)  # as recorded: not rendered
    static: Mapping[str, tuple[int, int, str]] = field(default_factory=dict)
    input_hash: str | None = None
    tables: Mapping[str, str] = field(default_factory=dict)  # the snapshot's table hashes
    queries: Mapping[str, str] = field(default_factory=dict)  # [queries] as they were
    columns: Mapping[str, Mapping[str, str]] = field(
        default_factory=dict
    )  # see render.build.changes
    routes: Mapping[int, tuple[str, tuple[Read, ...]]] = field(default_factory=dict)  # key, reads
    buckets: tuple[tuple[Mapping[str, PageRecord], str], ...] = ()  # page groups and file names


def build_dir(host: HostConfig, site: SiteConfig) -> Path:
    return host.site_state("builds", site.id)


UNREADABLE = (
    OSError,
    ValueError,
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    TypeError,
    ImportError,  # a record written by an older layout names classes that moved
)
"""What reading one of render's own pickles (a missing, damaged or older file) can raise."""


def load_previous(folder: Path) -> Previous:
    try:
        with open(folder / RECORD, "rb") as fh:
            data = pickle.load(fh)
    except UNREADABLE:
        return Previous()
    if not isinstance(data, dict):
        return Previous()
    if data.get("format") != FORMAT:
        return Previous()
    try:
        buckets = tuple(
            (pickle.loads((folder / GROUPS / name).read_bytes()), name) for name in data["pages"]
        )
        merged: dict[str, PageRecord] = {}
        for group, _blob in buckets:
            merged.update(group)
        pages = {path: merged[path] for path in data["order"]}
    except (
        OSError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        ImportError,
        pickle.UnpicklingError,
        EOFError,
    ):
        return (
            Previous()
        )  # damaged, or written by an older layout: the next build renders everything
    return Previous(
        pages=pages,
        buckets=buckets,
        static={k: (v[0], v[1], v[2]) for k, v in data["static"].items()},
        input_hash=data.get("input_hash"),
        tables=data.get("tables", {}),
        queries=data.get("queries", {}),
        columns=data.get("columns", {}),
        routes=data.get("routes", {}),
    )


def _bucket(path: str) -> int:
    return zlib.crc32(path.encode("utf-8", "surrogatepass")) % BUCKETS


def _save_groups(where: Path, recorded: Mapping[str, PageRecord], previous: Previous) -> list[str]:
    """Write the page records in ``BUCKETS`` pickled groups; return their file names in order.

    A group whose records are the very ones loaded from the last build keeps
    its file: a rebuild that rendered one page writes one group, not ten
    thousand records.
    """
    where.mkdir(exist_ok=True)
    groups: list[dict[str, PageRecord]] = [{} for _ in range(BUCKETS)]
    for path, page in recorded.items():
        groups[_bucket(path)][path] = page
    names = []
    for number, group in enumerate(groups):
        if number < len(previous.buckets):
            old, name = previous.buckets[number]
            if old.keys() == group.keys() and all(group[p] is old[p] for p in group):
                names.append(name)
                continue
        names.append(write_object(where, pickle.dumps(group, protocol=pickle.HIGHEST_PROTOCOL)))
    return names


def save_record(
    folder: Path, facts: Mapping[str, Any], recorded: Mapping[str, PageRecord], previous: Previous
) -> list[str]:
    """Write the record of a complete build: its page groups, then ``build.pickle``.

    ``facts`` are the site-wide entries (format, hashes, routes, static files);
    returns the names of the page groups, which the caller keeps and prunes around.
    """
    groups = _save_groups(folder / GROUPS, recorded, previous)
    record = {**facts, "format": FORMAT, "order": list(recorded), "pages": groups}
    replace_atomically(folder / RECORD, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
    return groups
