"""Hand-made builds for the SEO tests: real objects folder, FileEntry and PageRecord."""

from __future__ import annotations

import types
from collections.abc import Mapping
from pathlib import Path

from render.build import pagefacts
from render.build.snapshot import Snapshot
from render.build.tree import Build, FileEntry, PageRecord, content_type, sha256, write_object
from render.config import (
    LighthouseConfig,
    Route,
    SeoConfig,
    SiteConfig,
    SiteId,
    SiteSection,
)
from render.paths import output_path, quote_url

BASE = "https://www.example.com"
CHANGED = "2026-11-20T03:00:00Z"


def page_html(
    title: str = "A page",
    *,
    description: str | None = "What this page is about.",
    body: str = "<h1>A page</h1><p>Text.</p>",
    head: str = "",
    lang: str | None = None,
) -> str:
    """A realistic page; ``lang=None`` leaves ``<html lang>`` to finish_page."""
    lang_attr = f' lang="{lang}"' if lang is not None else ""
    desc = f'<meta name="description" content="{description}">\n' if description is not None else ""
    return (
        "<!doctype html>\n"
        f'<html{lang_attr}>\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n{desc}"
        '<link rel="stylesheet" href="/static/site.css">\n'
        f'{head}</head>\n<body>\n<nav><a href="/">Home</a></nav>\n<main>\n{body}\n</main>\n</body>\n</html>\n'
    )


def site_config(
    tmp: Path,
    *,
    base_url: str = BASE,
    seo: SeoConfig | None = None,
    routes: tuple[Route, ...] = (),
) -> SiteConfig:
    return SiteConfig(
        id=SiteId(owner="acme", name="blog"),
        root=tmp,
        path=tmp / "site.toml",
        site=SiteSection(base_url=base_url),
        queries=types.MappingProxyType({}),
        routes=routes,
        seo=seo or SeoConfig(),
        lighthouse=LighthouseConfig(enabled=False),
    )


def make_build(
    tmp: Path,
    pages: Mapping[str, str],
    *,
    static: Mapping[str, bytes] | None = None,
    base_url: str = BASE,
    seo: SeoConfig | None = None,
    routes: tuple[Route, ...] = (),
    lastmods: Mapping[str, str] | None = None,
    changed: Mapping[str, str] | None = None,
    finish: bool = True,
) -> Build:
    """A Build of ``{url: html}`` pages (run through finish_page, as the workers do) plus static files."""
    site = site_config(tmp, base_url=base_url, seo=seo, routes=routes)
    objects = tmp / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    files: dict[str, FileEntry] = {}
    records: list[PageRecord] = []
    for url, html in pages.items():
        path = output_path(url)
        facts: Mapping[str, object] = {}
        if finish and path.endswith(".html"):
            html, facts = pagefacts.finish_page(
                html, url=url, canonical=site.base_url + quote_url(url), lang=site.seo.lang
            )
        data = html.encode("utf-8", "surrogateescape")
        digest = write_object(objects, data, sha256(data))
        files[path] = FileEntry(hash=digest, size=len(data), type=content_type(path))
        records.append(
            PageRecord(
                path=path,
                url=url,
                route=0,
                template="page.html",
                fingerprint=digest,
                hash=digest,
                size=len(data),
                reads=(),
                islands=(),
                lastmod=(lastmods or {}).get(url),
                changed=(changed or {}).get(url, CHANGED),
                facts=facts,
            )
        )
    for path, data in (static or {}).items():
        digest = write_object(objects, data)
        files[path] = FileEntry(hash=digest, size=len(data), type=content_type(path))
    return Build(
        site=site,
        snapshot=Snapshot(
            site=site.id, path=tmp / "snapshot.db", content_hash="0" * 64, seconds=0.0, size=0
        ),
        input_hash="0" * 64,
        objects=objects,
        files=types.MappingProxyType(dict(sorted(files.items()))),
        pages=tuple(records),
        rendered=len(records),
        reused=0,
        seconds=0.0,
    )


STATIC = {"static/site.css": b"body { margin: 0 }\n"}
