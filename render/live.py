"""Every published site's live version, as a resolver for ``render.serving``.

``render serve`` shows what the store holds, exactly as a reader of the
bucket would see it: ``root.json`` -> the live version's tree -> blobs. A
request is routed to a site by its ``Host`` header (the host of the site's
``base_url``, or ``<name>.<owner>.localhost``), or by a ``/<owner>/<name>/``
path prefix for a browser on 127.0.0.1. With one site published, paths
without a prefix go to it as well. Roots are re-read every few seconds, so a
publish or a rollback shows without a restart.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from render import hosts
from render.hosts import host_of
from render.manifest import blob_key
from render.publish import read_root, read_tree
from render.serving import Response, resolve_in_tree
from render.store import Store
from render.tree import FileEntry


@dataclass(frozen=True, kw_only=True)
class LiveSite:
    owner: str
    name: str
    version: str
    base_host: str
    files: Mapping[str, FileEntry]
    objects: Path  # where blobs are (the local store's folder) or get cached

    @property
    def prefix(self) -> str:
        return f"/{self.owner}/{self.name}"


class LiveSites:
    """A ``Resolver`` over the live versions in ``store``; callable as ``(host, path)``."""

    def __init__(self, store: Store, *, cache: Path, refresh_seconds: float = 2.0) -> None:
        self.store = store
        self.cache = cache
        self.refresh_seconds = refresh_seconds
        self._sites: dict[tuple[str, str], LiveSite] = {}
        self._hosts: dict[str, LiveSite] = {}  # base_url host -> the site that holds it
        self._checked = -1e9
        self._lock = threading.Lock()

    def sites(self) -> list[LiveSite]:
        self.refresh()
        return sorted(self._sites.values(), key=lambda s: (s.owner, s.name))

    def refresh(self, *, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._checked < self.refresh_seconds:
                return
            self._checked = time.monotonic()
            found: dict[tuple[str, str], LiveSite] = {}
            for owner, name in self.store.sites():
                root, _ = read_root(self.store, owner=owner, name=name)
                if root is None:
                    continue
                old = self._sites.get((owner, name))
                if old is not None and old.version == root.version:
                    found[(owner, name)] = old
                    continue
                tree = read_tree(self.store, owner=owner, name=name, version=root.version)
                local = self.store.local_path(blob_key(owner, name, "x"))
                objects = local.parent if local is not None else self.cache / owner / name
                found[(owner, name)] = LiveSite(
                    owner=owner, name=name, version=root.version,
                    base_host=host_of(root.base_url) or "", files=tree.files, objects=objects,
                )  # fmt: skip
            self._hosts = self._by_host(found)
            self._sites = found

    def _by_host(self, found: Mapping[tuple[str, str], LiveSite]) -> dict[str, LiveSite]:
        """Each host to one site: the holder of its claim when two are live with it (``render.hosts``)."""
        by_id = {f"{s.owner}/{s.name}": s for s in found.values()}
        sharing: dict[str, list[str]] = {}
        for site in sorted(found.values(), key=lambda s: (s.owner, s.name)):
            if site.base_host:
                sharing.setdefault(site.base_host, []).append(f"{site.owner}/{site.name}")
        return {
            host: by_id[hosts.winner(self.store, host, sites)] for host, sites in sharing.items()
        }

    def __call__(self, host: str, path: str) -> Response:
        self.refresh()
        sites = self._sites
        if host in self._hosts:
            return self._resolve(self._hosts[host], path, prefix="")
        for site in sites.values():
            if host and host == f"{site.name}.{site.owner}.localhost":
                return self._resolve(site, path, prefix="")
        for site in sites.values():
            if path == site.prefix:
                return Response(status=301, body=b"", headers={"Location": f"{site.prefix}/"})
            if path.startswith(f"{site.prefix}/"):
                return self._resolve(site, path[len(site.prefix) :], prefix=site.prefix)
        if len(sites) == 1:
            (only,) = sites.values()
            return self._resolve(only, path, prefix="")
        if path == "/":
            return Response(body=self._index())
        return Response(status=404, body=self._index(title="Not found"))

    def _resolve(self, site: LiveSite, path: str, *, prefix: str) -> Response:
        try:
            response = resolve_in_tree(site.files, _Blobs(self.store, site), path, prefix=prefix)
        except _BlobMissing:
            return Response(
                status=502, body=b"blob missing from the store\n", content_type="text/plain"
            )
        headers = dict(response.headers)
        headers["X-Render-Version"] = site.version
        return Response(status=response.status, body=response.body,
                        content_type=response.content_type, headers=headers)  # fmt: skip

    def _index(self, *, title: str = "Published sites") -> bytes:
        items = "".join(
            f'<li><a href="{html.escape(s.prefix)}/">{html.escape(s.owner)}/{html.escape(s.name)}</a>'
            f" <small>{html.escape(s.version)}</small></li>"
            for s in sorted(self._sites.values(), key=lambda s: s.prefix)
        )
        page = f"<!doctype html><title>{title}</title><h1>{title}</h1><ul>{items}</ul>\n"
        return page.encode()


class _BlobMissing(Exception):
    """A tree names a blob the store does not have."""


class _Blobs:
    """A live site's blobs: the local store's files, or downloaded once into the cache."""

    def __init__(self, store: Store, site: LiveSite) -> None:
        self.store = store
        self.site = site

    def read(self, digest: str) -> bytes:
        path = self.site.objects / digest
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.store.download(blob_key(self.site.owner, self.site.name, digest), path):
            raise _BlobMissing(digest)
        return path.read_bytes()
