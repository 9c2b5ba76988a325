"""Builds made by hand for the Lighthouse tests: tiny pages, a real objects folder."""

from __future__ import annotations

import types
from collections.abc import Mapping
from pathlib import Path

from render.build.snapshot import Snapshot
from render.build.tree import Build, FileEntry, PageRecord, content_type, sha256, write_object
from render.config import LighthouseConfig, SeoConfig, SiteConfig, SiteId, SiteSection
from render.paths import output_path

HEAD = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<link rel="icon" href="data:,">'
)


def page(title: str, body: str, *, description: str = "A small page the tests build.") -> bytes:
    """A complete page: lang, viewport, title, description, icon, then ``body``."""
    return (
        f'{HEAD}<title>{title}</title><meta name="description" content="{description}">'
        f"</head><body>{body}</body></html>\n"
    ).encode()


FAST = page(
    "A fast and accessible page",
    "<main><h1>A fast page</h1><p>Plain text, good contrast and nothing to wait for.</p>"
    '<p><a href="/about/">Read about this small site</a></p></main>',
)


def make_build(
    root: Path,
    pages: Mapping[str, tuple[int, bytes]],
    *,
    files: Mapping[str, bytes] | None = None,
    lighthouse: LighthouseConfig | None = None,
) -> Build:
    """A Build of ``{url: (route, html)}`` plus other ``files`` (robots.txt, images)."""
    objects = root / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    site = SiteConfig(
        id=SiteId(owner="tests", name="lighthouse"),
        root=root,
        path=root / "site.toml",
        site=SiteSection(base_url="https://lighthouse.example"),
        queries={},
        routes=(),
        seo=SeoConfig(),
        lighthouse=lighthouse or LighthouseConfig(),
    )
    entries: dict[str, FileEntry] = {}
    records = []
    robots = {"robots.txt": b"User-agent: *\nAllow: /\n"}
    for path, data in {**robots, **(files or {})}.items():
        entries[path] = FileEntry(
            hash=write_object(objects, data), size=len(data), type=content_type(path)
        )
    for url, (route, html) in pages.items():
        path = output_path(url)
        digest = write_object(objects, html)
        entries[path] = FileEntry(hash=digest, size=len(html), type=content_type(path))
        records.append(
            PageRecord(
                path=path,
                url=url,
                route=route,
                template="page.html",
                fingerprint=sha256(html),
                hash=digest,
                size=len(html),
                reads=(),
                islands=(),
                lastmod=None,
                changed="2026-01-01T00:00:00Z",
            )
        )
    snapshot = Snapshot(
        site=site.id, path=root / "snapshot.db", content_hash="0" * 64, seconds=0.0, size=0
    )
    return Build(
        site=site,
        snapshot=snapshot,
        input_hash="0" * 64,
        objects=objects,
        files=types.MappingProxyType(dict(sorted(entries.items()))),
        pages=tuple(records),
        rendered=len(records),
        reused=0,
        seconds=0.0,
    )
