"""A site's templates and static files: hashed through a stat cache, read without following links."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from render.build.record import FORMAT, Previous
from render.build.sitefiles import SiteFolder, static_files
from render.build.snapshot import Snapshot
from render.build.tree import sha256
from render.config import LimitsConfig, SiteConfig


@dataclass(frozen=True, kw_only=True)
class SourceState:
    """Hashes of a site's templates and static files, with the stat cache that made them."""

    templates: Mapping[str, str]  # name -> sha256 of the source
    static: Mapping[str, tuple[int, int, str]]  # rel path (NFC) -> (size, mtime_ns, sha256)
    config: str  # sha256 of site.toml
    static_names: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict
    )  # NFC rel -> as on disk

    def input_hash(self, snapshot: Snapshot) -> str:
        parts = [
            FORMAT,
            snapshot.content_hash,
            self.config,
            repr(sorted(self.templates.items())),
            repr(sorted((k, v[2]) for k, v in self.static.items())),
        ]
        return sha256("\n".join(parts).encode())


def scan_sources(site: SiteConfig, previous: Previous, *, limits: LimitsConfig) -> SourceState:
    """Hash templates (always: they are small) and static files (through a stat cache).

    Both folders are read through ``render.build.sitefiles``: no link out of the
    site is followed, static files are checked against ``limits`` before
    they are read, and hashed a chunk at a time.
    """
    templates: dict[str, str] = {}
    with SiteFolder(site.templates, inside=site.root, label=site.site.templates) as folder:
        for file in folder.files(links=True):
            templates[file.rel] = folder.hash(file, max_bytes=None)[2]
    static: dict[str, tuple[int, int, str]] = {}
    names: dict[str, tuple[str, ...]] = {}
    with SiteFolder(site.static, inside=site.root, label=site.site.static) as folder:
        found = static_files(
            folder, file_max=limits.static_file_max_bytes, site_max=limits.static_site_max_bytes
        )
        for file in found:
            cached = previous.static.get(file.nfc)
            if cached and cached[0] == file.size and cached[1] == file.mtime_ns:
                static[file.nfc] = cached
            else:
                static[file.nfc] = folder.hash(file, max_bytes=limits.static_file_max_bytes)
            if file.rel != file.nfc:
                names[file.nfc] = file.names
    return SourceState(
        templates=dict(sorted(templates.items())),
        static=static,
        static_names=names,
        config=site.source_hash,
    )
