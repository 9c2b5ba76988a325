"""The built tree of a site: files by path, their bytes in a content-addressed folder.

A build never writes a browsable folder of pages. Each file's bytes go once
into the objects folder under their sha256 (the same naming as the store's
``blobs/``; ``render.build.objects`` keeps them loose or in packs), and the tree is
the mapping ``path -> FileEntry``. A rebuild writes only the bytes that are
new, later stages add files by adding entries, and publishing uploads blobs
straight from the objects folder. ``materialize`` writes an ordinary
folder when a person asks for one (``render build --out``).
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

# INCOMPLETE and sha256 are re-exported: the build and its readers use them from here
from render.build.objects import INCOMPLETE as INCOMPLETE
from render.build.objects import Objects
from render.build.objects import sha256 as sha256
from render.build.snapshot import Snapshot
from render.config import SiteConfig
from render.errors import DiskFullError, PathError, is_disk_full

# INCOMPLETE and sha256 are re-exported: the build and its readers use them from here
from render.paths import file_and_folder_of

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".webmanifest": "application/manifest+json",
    ".pdf": "application/pdf",
}


def content_type(path: str) -> str:
    """The Content-Type a file is served with, from its extension."""
    start, dot = path.rfind("/") + 1, path.rfind(".")
    # as os.path.splitext: the leading dots of a name start no extension (".profile")
    ext = path[dot:].lower() if dot > start and path[start:dot].strip(".") else ""
    if ext in _TYPES:
        return _TYPES[ext]
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


def write_object(objects: Path, data: bytes, digest: str | None = None) -> str:
    """Store ``data`` under its hash in the folder ``objects`` (once; atomically); its hash."""
    return Objects(objects).write(data, digest)


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    hash: str
    size: int
    type: str

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "size": self.size, "type": self.type}


@dataclass(frozen=True, kw_only=True)
class PageRecord:
    """One rendered page and what it was made from."""

    path: str  # relative output file: posts/x/index.html
    url: str  # URL path: /posts/x/
    route: int  # index of its [[routes]] entry; -1 for a generated page
    template: str
    fingerprint: str  # of everything the page read
    hash: str  # sha256 of its bytes
    size: int
    reads: tuple[str, ...]  # what it read: templates, row, queries with parameters
    islands: tuple[str, ...]  # components used
    lastmod: str | None  # the route's lastmod column, as stored
    changed: str  # ISO UTC time its bytes last changed, carried by hash across builds
    # per-page SEO facts: a PageFacts (render.build.pagefacts) for an HTML page, {} for
    # another file; a record from older code may hold an older version's (check with
    # pagefacts.current before reading a key)
    facts: Mapping[str, object] = field(default_factory=dict)
    # named queries it called: (name, params JSON, result hash, (table, column) pairs read)
    deps: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = ()
    rendered: bool = True  # False when reused from the previous build

    def as_reused(self) -> PageRecord:
        """This record with ``rendered`` False, as the build record keeps it.

        A plain copy of the attributes: ``dataclasses.replace`` runs the whole
        checked ``__init__``, which costs more than the page's render share on
        a full build of ten thousand pages.
        """
        copy = object.__new__(PageRecord)
        copy.__dict__.update(self.__dict__, rendered=False)
        return copy

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "route": self.route,
            "template": self.template,
            "fingerprint": self.fingerprint,
            "hash": self.hash,
            "size": self.size,
            "reads": list(self.reads),
            "islands": list(self.islands),
            "lastmod": self.lastmod,
            "changed": self.changed,
            "facts": dict(self.facts),
        }


@dataclass(frozen=True, kw_only=True)
class Build:
    """The result of the build stage: a complete tree, ready to check and publish."""

    site: SiteConfig
    snapshot: Snapshot
    input_hash: str
    objects: Path
    files: Mapping[str, FileEntry]
    pages: tuple[PageRecord, ...]
    rendered: int
    reused: int
    seconds: float
    peak_worker_rss_kb: int = 0  # the largest render process's peak memory
    steps: Mapping[str, float] = field(default_factory=dict)  # seconds of each build step
    cpu_seconds: Mapping[str, float] = field(default_factory=dict)  # "parent", "workers"

    @cached_property
    def blobs(self) -> Objects:
        """The objects folder as a reader and writer (its pack index loads once)."""
        return Objects(self.objects)

    def read(self, path: str) -> bytes:
        return self.blobs.read(self.files[path].hash)

    def page(self, path: str) -> PageRecord | None:
        for page in self.pages:
            if page.path == path:
                return page
        return None

    def with_files(self, added: Mapping[str, bytes]) -> Build:
        """A copy of this build with ``added`` files written and entered (replacing same paths).

        A file that would also be a folder of the tree (or one that would sit
        inside a file of it) is refused: a page at ``sitemap.xml/index.html``
        and the sitemap cannot both be published.
        """
        files = dict(self.files)
        for path, data in added.items():
            try:
                digest = self.blobs.write(data)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                raise DiskFullError.of(
                    exc, writing=f"{path} into {self.objects}", folder=self.objects, stage="build"
                ) from exc
            files[path] = FileEntry(hash=digest, size=len(data), type=content_type(path))
        files = dict(sorted(files.items()))
        if (clash := file_and_folder_of(list(files), added)) is not None:

            def who(path: str) -> str:
                if path in added:
                    return writer(self.site, None, path, static=False)
                static = (self.site.static / path).is_file()
                return writer(self.site, self.page(path), path, static=static)

            raise clash_error(clash, who)
        return replace(self, files=types.MappingProxyType(files))


def writer(site: SiteConfig, page: PageRecord | None, path: str, *, static: bool) -> str:
    """Who writes ``path`` of a tree, for an error: a route's page, a static file, or render."""
    if page is not None:
        if page.route < 0:
            return f"templates/{page.template} (the not-found page)"
        return f"routes[{page.route}] ({site.routes[page.route].path}) page {page.url}"
    return f"static/{path}" if static else "render"


def clash_error(clash: tuple[str, str], who: Callable[[str], str]) -> PathError:
    """The error for a path that is both a file and a folder (``paths.file_and_folder``)."""
    file, inside = clash
    return PathError(
        f"{who(inside)} writes {inside}, inside {file}, which {who(file)} writes as a file",
        hint="a path cannot be both a file and a folder: change a route's path or a row's "
        "value, or rename the static file",
    )


def materialize(
    files: Mapping[str, FileEntry],
    objects: Objects,
    dest: Path,
    *,
    linked: Callable[[str], Path | None] | None = None,
) -> None:
    """Write the tree as ordinary files in ``dest``, replacing it whole when complete.

    ``linked(hash)`` may name an immutable file holding the bytes (a local
    store's blob): the tree's file is then a hard link to it, not a second copy
    (a copy where the link cannot be made, on another file system). The
    build's own objects are never linked: nothing outside render's state folder
    shares an inode with what the next build reuses.
    """
    dest = dest.absolute()
    staging = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    can_link = linked is not None
    folders: set[str] = set()
    try:
        base = str(staging)
        for path, entry in files.items():  # plain strings and os calls: 10,000s of files
            target = os.path.join(base, path)
            folder = os.path.dirname(target)
            if folder not in folders:
                os.makedirs(folder, exist_ok=True)
                folders.add(folder)
            source = linked(entry.hash) if can_link and linked is not None else None
            if source is not None:
                try:
                    os.link(source, target)
                    continue
                except FileNotFoundError:
                    pass
                except OSError:  # another file system: copies from here on
                    can_link = False
            loose = objects.loose(entry.hash)
            if loose is not None:
                shutil.copyfile(loose, target)
            else:
                with open(target, "xb") as fh:
                    fh.write(objects.read(entry.hash))
        _swap_in(staging, dest)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(exc):
            raise DiskFullError.of(
                exc, writing=f"the tree into {dest}", folder=dest.parent, stage=None
            ) from exc
        raise


def _swap_in(staging: Path, dest: Path) -> None:
    """``staging`` renamed to ``dest``; an old ``dest`` moved aside first, then removed."""
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.rename(dest, old)
        os.rename(staging, dest)
        shutil.rmtree(old)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, dest)
