"""The mirror's folders on disk: where a site's releases and links live, and how they are written.

``Layout`` names the paths of one site under the mirror root; the helpers
write the mirror's own files durably (nginx reads them), hold the one-sync-at-
a-time lock, and flush a whole release with one ``syncfs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from render.errors import LockedError, MirrorError
from render.files import flocked, replace_durably
from render.files import syncfs as syncfs  # re-exported: the mirror's callers use it from here
from render.publish.manifest import Root, VersionTree, is_version_id
from render.serve.versioned import live_document, tree_document

MAP_FILE = "hosts.map"
STATUS_FILE = "status.json"
LOCK_FILE = ".sync.lock"
POOL = ".d"  # releases/<owner>/<site>/.d/<h>/: the folders kept releases share (render.mirror.pool)

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Layout:
    """Where one site's releases and links live under the mirror root."""

    root: Path
    owner: str
    name: str

    def __post_init__(self) -> None:
        for part in (self.owner, self.name):
            if not NAME_RE.match(part):
                raise MirrorError(
                    f"refusing the site name {self.owner}/{self.name!s}: {part!r} is not a safe folder name",
                    hint="site owners and names are letters, digits, '.', '_' and '-'",
                )

    @property
    def site(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def releases(self) -> Path:
        return self.root / "releases" / self.owner / self.name

    @property
    def site_dir(self) -> Path:
        return self.root / "sites" / self.owner / self.name

    @property
    def current(self) -> Path:
        return self.site_dir / "current"

    @property
    def previous(self) -> Path:
        return self.site_dir / "previous"

    @property
    def incoming(self) -> Path:
        return self.releases / ".incoming"

    @property
    def pool(self) -> Path:
        """The site's shared folders, each named by its content: ``.d/<h>/``."""
        return self.releases / POOL

    def release(self, version: str) -> Path:
        return self.releases / version

    def partial(self, version: str) -> Path:
        return self.releases / f".partial-{version}"

    def staging(self, version: str) -> Path:
        """Where a release's new pool folders wait, whole, for their names."""
        return self.releases / f".pool-{version}"

    def meta(self, version: str) -> Path:
        """``/_v/<version>/_render/``'s files: tree.json and delta/<parent>.json."""
        return self.releases / ".meta" / version

    def tree_file(self, version: str) -> Path:
        return self.releases / ".trees" / f"{version}.json"

    def link_target(self, version: str) -> str:
        """Relative, so the mirror root can move: sites/o/n/current -> ../../../releases/o/n/v."""
        return f"../../../releases/{self.owner}/{self.name}/{version}"

    def linked_version(self, link: Path) -> str | None:
        try:
            name = os.path.basename(os.readlink(link))
        except (FileNotFoundError, OSError):
            return None
        return name if is_version_id(name) and self.release(name).is_dir() else None

    def served(self) -> str | None:
        return self.linked_version(self.current)

    def kept(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        return sorted(
            p.name for p in self.releases.iterdir() if is_version_id(p.name) and p.is_dir()
        )


@contextlib.contextmanager
def sync_lock(root: Path) -> Iterator[None]:
    try:
        with flocked(root / LOCK_FILE, wait=False):
            yield
    except BlockingIOError:
        raise LockedError(
            f"another 'render mirror sync' is running on {root}",
            stage="mirror",
            hint="wait for it to finish (or stop the render-mirror service) and run again",
        ) from None


@contextlib.contextmanager
def site_lock(lay: Layout) -> Iterator[None]:
    """One sync of a site at a time, waiting for the other.

    ``sync`` holds the mirror's lock, but the pipeline's embedded mirror syncs
    one site without it; two syncs of one site must not prune the shared
    folders (``render.mirror.pool``) the other is about to name a release with.
    """
    lay.releases.mkdir(parents=True, exist_ok=True)
    with flocked(lay.releases / LOCK_FILE, wait=True):
        yield


def write_file(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_durably(target, data, mode=0o644)  # nginx reads it


def write_versioned(lay: Layout, live: Root) -> None:
    """The ``tree.json`` of each kept release that lacks one, and ``live.json``.

    A sync with nothing new reads no tree: each file is there and names the
    served version.
    """
    parents: dict[str, str | None] = {}
    for version in lay.kept():
        target = lay.meta(version) / "tree.json"
        if target.exists():
            continue
        try:
            raw = lay.tree_file(version).read_bytes()
        except FileNotFoundError:  # a release from before .trees: served, but not under /_v/
            continue
        tree = VersionTree.from_bytes(raw, key=str(lay.tree_file(version)))
        parents[version] = tree.parent
        write_file(target, tree_document(version=version, parent=tree.parent, files=tree.files))
    live_file = lay.site_dir / "live.json"
    try:
        old = json.loads(live_file.read_bytes())
    except (FileNotFoundError, ValueError):
        old = {}
    if old.get("version") == live.version and old.get("tree") == live.files_hash:
        return
    if live.version not in parents:
        with contextlib.suppress(FileNotFoundError, ValueError):
            parents[live.version] = json.loads((lay.meta(live.version) / "tree.json").read_bytes())[
                "parent"
            ]
    data = live_document(
        version=live.version, parent=parents.get(live.version), tree=live.files_hash
    )
    write_file(live_file, data)
