"""Every published site's live version, as a resolver for ``render.check.loopback``.

``render serve`` shows what the store holds, exactly as a reader of the
bucket would see it: ``root.json`` -> the live version's tree -> blobs. A
request is routed to a site by its ``Host`` header (the host of the site's
``base_url``, or ``<name>.<owner>.localhost``), or by a ``/<owner>/<name>/``
path prefix for a browser on 127.0.0.1. With one site published, paths
without a prefix go to it as well. Roots are re-read every few seconds, so a
publish or a rollback shows without a restart.

A site whose ``root.json`` or version tree cannot be read fails alone: it
answers 503 with the problem, every other site keeps serving, and the problem
is reported once (through ``report``), not per request. The next refresh
tries again, so fixing the file brings the site back. When the store cannot
be listed at all, the sites listed last keep serving (the first listing's
error is raised: there is nothing to serve yet).
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from render.build.tree import FileEntry
from render.check.loopback import Response, resolve_in_tree
from render.errors import RenderError
from render.files import replace_atomically
from render.publish import hosts
from render.publish.history import version_ids
from render.publish.hosts import host_of
from render.publish.manifest import VersionTree, blob_key, delta_key, version_key
from render.publish.packs import StoredBlobs
from render.publish.store import Store
from render.publish.versions import read_root, read_tree
from render.serve import versioned
from render.serve.versioned import Kept


@dataclass(frozen=True, kw_only=True)
class LiveSite:
    owner: str
    name: str
    version: str
    base_host: str
    files: Mapping[str, FileEntry]
    objects: Path  # where blobs are (the local store's folder) or get cached
    parent: str | None = None
    tree_hash: str = ""
    kept: frozenset[str] = frozenset()  # every version the store holds: answered under /_v/
    tree: VersionTree | None = None  # the live tree: where its blobs are (packs or loose keys)

    @property
    def prefix(self) -> str:
        return f"/{self.owner}/{self.name}"


@dataclass(frozen=True, kw_only=True)
class BrokenSite:
    """A published site whose root or tree cannot be read: it answers 503 until fixed."""

    owner: str
    name: str
    base_host: str  # "" when root.json itself cannot be read
    problem: str  # the error's message; it names the store key

    @property
    def prefix(self) -> str:
        return f"/{self.owner}/{self.name}"


_R = TypeVar("_R", Response, Response | None)

Report = Callable[[str], None]
"""Where a site that breaks or comes back is told, one line each time."""


class LiveSites:
    """A ``Resolver`` over the live versions in ``store``; callable as ``(host, path)``."""

    def __init__(
        self,
        store: Store,
        *,
        cache: Path,
        refresh_seconds: float = 2.0,
        report: Report | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.refresh_seconds = refresh_seconds
        self.report = report
        self._sites: dict[tuple[str, str], LiveSite | BrokenSite] = {}
        self._hosts: dict[str, LiveSite | BrokenSite] = {}  # base_url host -> the site holding it
        self._listed = False
        self._listing_problem: str | None = None
        self._checked = -1e9
        self._lock = threading.Lock()
        self._trees: dict[tuple[str, str, str], VersionTree] = {}  # kept versions read so far

    def sites(self) -> list[LiveSite | BrokenSite]:
        self.refresh()
        return sorted(self._sites.values(), key=lambda s: (s.owner, s.name))

    def refresh(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._checked < self.refresh_seconds:
            return  # not due: a request never waits on the lock a refresh under way holds
        with self._lock:
            if not force and time.monotonic() - self._checked < self.refresh_seconds:
                return
            self._checked = time.monotonic()
            try:
                ids = self.store.sites()
            except RenderError as exc:
                if not self._listed:
                    raise
                if exc.message != self._listing_problem:
                    self._tell(f"cannot list the sites: {exc.message}; serving the last listing")
                self._listing_problem = exc.message
                return
            if self._listing_problem is not None:
                self._tell("the sites can be listed again")
            self._listed, self._listing_problem = True, None
            found: dict[tuple[str, str], LiveSite | BrokenSite] = {}
            for owner, name in ids:
                site = self._load(owner, name)
                if site is not None:
                    self._tell_change(self._sites.get((owner, name)), site)
                    found[(owner, name)] = site
            self._hosts = self._by_host(found)
            self._sites = found
            self._trees = {
                key: tree
                for key, tree in self._trees.items()
                if isinstance(site := found.get(key[:2]), LiveSite) and key[2] in site.kept
            }

    def _by_host(
        self, found: Mapping[tuple[str, str], LiveSite | BrokenSite]
    ) -> dict[str, LiveSite | BrokenSite]:
        """Each host to one site: the holder of its claim when two are live with it (``render.publish.hosts``)."""
        by_id = {f"{s.owner}/{s.name}": s for s in found.values()}
        sharing: dict[str, list[str]] = {}
        for site in sorted(found.values(), key=lambda s: (s.owner, s.name)):
            if site.base_host:
                sharing.setdefault(site.base_host, []).append(f"{site.owner}/{site.name}")
        return {
            host: by_id[hosts.winner(self.store, host, sites)] for host, sites in sharing.items()
        }

    def _load(self, owner: str, name: str) -> LiveSite | BrokenSite | None:
        """The site's live version; a ``BrokenSite`` when its root or tree cannot be read."""
        base_host = ""
        try:
            root, _ = read_root(self.store, owner=owner, name=name)
            if root is None:
                return None
            base_host = _host_of(root.base_url)
            # listed on every refresh: after gc the root's bytes (and so its tag) are the same
            # as before it, so nothing cheaper says which versions it took
            kept = frozenset(version_ids(self.store, owner=owner, name=name)) | {root.version}
            old = self._sites.get((owner, name))
            if isinstance(old, LiveSite) and old.version == root.version:
                return old if old.kept == kept else replace(old, kept=kept)
            tree = read_tree(self.store, owner=owner, name=name, version=root.version)
        except RenderError as exc:
            return BrokenSite(owner=owner, name=name, base_host=base_host, problem=exc.message)
        local = self.store.local_path(blob_key(owner, name, "x"))
        objects = local.parent if local is not None else self.cache / owner / name
        return LiveSite(
            owner=owner,
            name=name,
            version=root.version,
            base_host=base_host,
            files=tree.files,
            objects=objects,
            parent=tree.parent,
            tree_hash=root.files_hash,
            kept=kept,
            tree=tree,
        )

    def _tell_change(self, old: LiveSite | BrokenSite | None, new: LiveSite | BrokenSite) -> None:
        site = f"{new.owner}/{new.name}"
        if isinstance(new, BrokenSite):
            if not isinstance(old, BrokenSite) or old.problem != new.problem:
                self._tell(f"{site}: {new.problem}; it answers 503 until this is fixed")
        elif isinstance(old, BrokenSite):
            self._tell(f"{site}: serving {new.version} again")

    def _tell(self, line: str) -> None:
        if self.report is not None:
            self.report(line)

    def __call__(self, host: str, path: str) -> Response:
        found = self.route(host, path)
        if isinstance(found, Response):
            return found
        site, rest, prefix = found
        return self._resolve(site, rest, prefix=prefix)

    def route(self, host: str, path: str) -> tuple[LiveSite | BrokenSite, str, str] | Response:
        """The site a request is for, with its path inside the site and the prefix taken off.

        A ``Response`` when no site is meant (the index of sites, a 404, the
        redirect that adds the slash to a bare ``/<owner>/<name>``).
        """
        self.refresh()
        sites = self._sites
        if host in self._hosts:
            return self._hosts[host], path, ""
        for site in sites.values():
            if host and host == f"{site.name}.{site.owner}.localhost":
                return site, path, ""
        for site in sites.values():
            if path == site.prefix:
                return Response(status=301, body=b"", headers={"Location": f"{site.prefix}/"})
            if path.startswith(f"{site.prefix}/"):
                return site, path[len(site.prefix) :], site.prefix
        if len(sites) == 1:
            (only,) = sites.values()
            return only, path, ""
        if path == "/":
            return Response(body=self._index())
        return Response(status=404, body=self._index(title="Not found"))

    def _resolve(self, site: LiveSite | BrokenSite, path: str, *, prefix: str) -> Response:
        if isinstance(site, BrokenSite):
            return _unavailable(site.prefix[1:], site.problem)
        answer = self.versioned(site, path, prefix=prefix)
        if answer is not None:
            return answer
        blobs = Blobs(self.store, site)
        response = _guarded(site, lambda: resolve_in_tree(site.files, blobs, path, prefix=prefix))
        headers = dict(response.headers)
        headers[versioned.VERSION_HEADER] = site.version
        return Response(
            status=response.status,
            body=response.body,
            content_type=response.content_type,
            headers=headers,
        )

    def versioned(self, site: LiveSite, path: str, *, prefix: str) -> Response | None:
        """The answer when ``path`` is in the versioned URL space (``render.serve.versioned``),
        from the versions the store keeps; None for a path of the live tree. May read the store."""

        def kept_trees() -> list[VersionTree]:
            return [
                t for (o, n, _), t in list(self._trees.items()) if (o, n) == (site.owner, site.name)
            ]

        blobs = Blobs(self.store, site, kept_trees)

        def resolve(files: Mapping[str, FileEntry], rel: str, base: str) -> Response:
            return resolve_in_tree(files, blobs, rel, prefix=base)

        return _guarded(
            site,
            lambda: versioned.respond(_Versions(self, site), path, resolve=resolve, prefix=prefix),
        )

    def tree(self, site: LiveSite, version: str) -> VersionTree | None:
        """A kept version's tree (read once); None when the store does not keep it."""
        if version == site.version:
            return VersionTree(version=version, parent=site.parent, created="", files=site.files)
        if version not in site.kept:
            return None
        key = (site.owner, site.name, version)
        tree = self._trees.get(key)
        if tree is None:
            data = self.store.get(version_key(site.owner, site.name, version))
            if data is None:  # collected since the last listing
                return None
            tree = VersionTree.from_bytes(data, key=version_key(site.owner, site.name, version))
            self._trees[key] = tree
        return tree

    def _index(self, *, title: str = "Published sites") -> bytes:
        items = "".join(
            f'<li><a href="{html.escape(s.prefix)}/">{html.escape(s.owner)}/{html.escape(s.name)}</a>'
            f" <small>{html.escape(_state(s))}</small></li>"
            for s in sorted(self._sites.values(), key=lambda s: s.prefix)
        )
        page = f"<!doctype html><title>{title}</title><h1>{title}</h1><ul>{items}</ul>\n"
        return page.encode()


class _Versions:
    """A live site's kept versions, as ``render.serve.versioned`` asks for them."""

    def __init__(self, sites: LiveSites, site: LiveSite) -> None:
        self.sites, self.site = sites, site

    def live(self) -> Kept:
        return Kept(version=self.site.version, parent=self.site.parent, files=self.site.files)

    def live_tree_hash(self) -> str:
        return self.site.tree_hash

    def kept(self, version: str) -> Kept | None:
        tree = self.sites.tree(self.site, version)
        return None if tree is None else Kept(version=version, parent=tree.parent, files=tree.files)

    def stored_delta(self, version: str, older: str) -> bytes | None:
        return self.sites.store.get(delta_key(self.site.owner, self.site.name, version, older))


def _state(site: LiveSite | BrokenSite) -> str:
    return "unavailable" if isinstance(site, BrokenSite) else site.version


def _host_of(url: str) -> str:
    """ "" for a base_url with no usable host: the site answers under its path and .localhost name."""
    return host_of(url) or ""


def _unavailable(site: str, problem: str) -> Response:
    body = f"{site} is unavailable: {problem}\n".encode()
    return Response(status=503, body=body, content_type="text/plain; charset=utf-8")


def _guarded(site: LiveSite, answer: Callable[[], _R]) -> _R | Response:
    """``answer()``, or the 502 or 503 a missing blob or an unreadable store gives."""
    try:
        return answer()
    except BlobMissing:
        return Response(
            status=502, body=b"blob missing from the store\n", content_type="text/plain"
        )
    except RenderError as exc:  # the store cannot be read just now
        return _unavailable(site.prefix[1:], exc.message)


class BlobMissing(Exception):
    """A tree names a blob the store does not have."""


class Blobs:
    """A live site's blobs: the local store's own files and packs, or read once into the cache.

    The live tree (and then ``trees``, kept versions served under ``/_v/``)
    says where a blob is: a range of a pack, or a loose key. What comes from
    another machine is checked against its hash and kept in ``site.objects``.
    """

    def __init__(
        self,
        store: Store,
        site: LiveSite,
        trees: Callable[[], Iterable[VersionTree]] = tuple,
    ) -> None:
        self.store = store
        self.site = site
        self.trees = trees

    def read(self, digest: str) -> bytes:
        path = self.site.objects / digest
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        local = self.store.local_path(blob_key(self.site.owner, self.site.name, digest))
        for tree in (self.site.tree, *self.trees()):
            if tree is None or digest not in tree.sizes:
                continue
            data = StoredBlobs(
                self.store, owner=self.site.owner, name=self.site.name, tree=tree
            ).read(digest)
            if data is None:
                break
            if local is None:  # not the store's own folder: keep a copy for the next read
                path.parent.mkdir(parents=True, exist_ok=True)
                replace_atomically(path, data)
            return data
        raise BlobMissing(digest)
