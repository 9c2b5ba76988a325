"""The versioned URL space every server of a site answers, beside the live tree.

::

    /_render/live.json                      {"version", "parent", "tree"}   no-cache
    /_v/<version>/<path>                    that version's file             immutable
    /_v/<version>/_render/tree.json         {"version", "parent", "files": {path: hash}}
    /_v/<version>/_render/delta/<older>.json  the ``Delta`` from older to version

A version the server no longer keeps answers 404 under ``/_v/`` (never the
live file under an old version's name): that is how the service worker
(``render/assets/sw.js``) learns its pinned version was collected. Every other
path is the live tree's, as before; ``/sw.js`` carries ``no-cache`` so a new
worker is picked up on the next navigation.

A server plugs in a ``VersionSource`` (what it keeps) and a file resolver;
``respond`` does the rest. ``render serve`` (``render.serve.live``) reads the
store; the mirror's nginx serves the same paths from its kept release folders,
which ``render.mirror.sync`` fills with ``_render/tree.json`` and the delta.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from render.build.tree import FileEntry
from render.check.loopback import Response
from render.publish.manifest import BLOB_CACHE, JSON_TYPE, Delta, is_version_id

PREFIX = "/_v/"
LIVE = "/_render/live.json"
WORKER = "/sw.js"
TREE = "/_render/tree.json"  # under /_v/<version>
DELTA = "/_render/delta/"  # under /_v/<version>: <older>.json
IMMUTABLE = BLOB_CACHE  # a version's file never changes
NO_CACHE = "no-cache"
VERSION_HEADER = "X-Render-Version"
JSON = JSON_TYPE


@dataclass(frozen=True, kw_only=True)
class Versioned:
    """A path under ``/_v/``: its version and the path inside it (starting with ``/``)."""

    version: str
    path: str


def split(path: str) -> Versioned | None:
    """``/_v/<version>/<rest>`` -> ``Versioned``; None for a path outside ``/_v/``."""
    if not path.startswith(PREFIX):
        return None
    version, slash, rest = path[len(PREFIX) :].partition("/")
    return Versioned(version=version, path="/" + rest if slash else "/")


def claims(path: str) -> bool:
    """Whether ``path`` is in the versioned URL space (``respond`` answers it, not the live tree)."""
    return path in (LIVE, WORKER) or path.startswith(PREFIX)


def live_document(*, version: str, parent: str | None, tree: str) -> bytes:
    """``/_render/live.json``: the live version, its parent and its tree's hash."""
    return json.dumps({"version": version, "parent": parent, "tree": tree}).encode()


def tree_document(*, version: str, parent: str | None, files: Mapping[str, FileEntry]) -> bytes:
    """``/_v/<version>/_render/tree.json``: path -> content hash, in the worker's shape."""
    data = {
        "version": version,
        "parent": parent,
        "files": {p: files[p].hash for p in sorted(files)},
    }
    return json.dumps(data, separators=(",", ":")).encode()


def delta_document(
    old: Mapping[str, FileEntry],
    new: Mapping[str, FileEntry],
    *,
    version: str,
    older: str,
    older_parent: str | None,
) -> bytes:
    """A delta computed from two trees, for a server whose store has none written."""
    return Delta.between(
        old, new, version=version, older=older, older_parent=older_parent
    ).to_bytes()


@dataclass(frozen=True, kw_only=True)
class Kept:
    """One version a server keeps: its tree and its parent."""

    version: str
    parent: str | None
    files: Mapping[str, FileEntry]


class VersionSource(Protocol):
    """What a server keeps of one site."""

    def live(self) -> Kept: ...

    def live_tree_hash(self) -> str: ...

    def kept(self, version: str) -> Kept | None:
        """The version, or None when it is not kept (any more)."""
        ...

    def stored_delta(self, version: str, older: str) -> bytes | None:
        """The delta the publish wrote, or None (``respond`` then computes it if it can)."""
        ...


FileResolver = Callable[[Mapping[str, FileEntry], str, str], Response]
"""``(files, path, prefix for redirects) -> Response`` (``render.check.loopback.resolve_in_tree``)."""


def respond(
    source: VersionSource, path: str, *, resolve: FileResolver, prefix: str = ""
) -> Response | None:
    """The answer to ``path`` when it is in the versioned URL space; None for a live-tree path."""
    if path == LIVE:
        live = source.live()
        body = live_document(version=live.version, parent=live.parent, tree=source.live_tree_hash())
        return _json(body, cache=NO_CACHE, version=live.version)
    if path == WORKER:
        live = source.live()
        answer = resolve(live.files, path, prefix)
        return _with(answer, cache=NO_CACHE, version=live.version)
    where = split(path)
    if where is None:
        return None
    kept = source.kept(where.version) if is_version_id(where.version) else None
    if kept is None:
        return Response(
            status=404,
            body=f"version {where.version} is not kept here\n".encode(),
            content_type="text/plain; charset=utf-8",
            headers={"Cache-Control": NO_CACHE},
        )
    if where.path == TREE:
        body = tree_document(version=kept.version, parent=kept.parent, files=kept.files)
        return _json(body, cache=IMMUTABLE, version=kept.version)
    if where.path.startswith(DELTA) and where.path.endswith(".json"):
        older = where.path[len(DELTA) : -len(".json")]
        delta = source.stored_delta(kept.version, older) if is_version_id(older) else None
        if delta is None and (old := source.kept(older) if is_version_id(older) else None):
            delta = delta_document(
                old.files, kept.files, version=kept.version, older=older, older_parent=old.parent
            )
        if delta is not None:
            return _json(delta, cache=IMMUTABLE, version=kept.version)
    answer = resolve(kept.files, where.path, f"{prefix}{PREFIX}{kept.version}")
    return _with(
        answer, cache=IMMUTABLE if answer.status == 200 else NO_CACHE, version=kept.version
    )


def _json(body: bytes, *, cache: str, version: str) -> Response:
    return Response(
        body=body, content_type=JSON, headers={"Cache-Control": cache, VERSION_HEADER: version}
    )


def _with(response: Response, *, cache: str, version: str) -> Response:
    headers = {**response.headers, "Cache-Control": cache, VERSION_HEADER: version}
    return Response(
        status=response.status,
        body=response.body,
        content_type=response.content_type,
        headers=headers,
    )
