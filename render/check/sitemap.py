"""What a build adds for crawlers: sitemap(s), robots.txt and a default 404 page.

Pure functions from page entries and ``[seo]`` settings to bytes; ``render.seo``
decides which pages go in and adds the files to the build. Output depends only
on the pages and the config (never on the time of the build), so an unchanged
site gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from lxml import etree

from render.config import SeoConfig

MAX_URLS = 50_000
"""URLs per sitemap file (sitemaps.org)."""
MAX_BYTES = 50 * 1024 * 1024
"""Uncompressed bytes per sitemap file (sitemaps.org)."""
NAMESPACE = "http://www.sitemaps.org/schemas/sitemap/0.9"
SITEMAP = "sitemap.xml"
ROBOTS = "robots.txt"
NOT_FOUND = "404.html"

_HEAD = f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NAMESPACE}">\n'.encode()
_TAIL = b"</urlset>\n"
_INDEX_HEAD = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns="{NAMESPACE}">\n'.encode()
)
_INDEX_TAIL = b"</sitemapindex>\n"
_EPOCH = re.compile(r"^\d{9,11}$")

ReadFile = Callable[[str], bytes]
"""``read(path) -> bytes``: a Build's ``read``."""


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One sitemap URL: absolute and percent-encoded, with its W3C lastmod or None."""

    loc: str
    lastmod: str | None


def parse_lastmod(value: str) -> str | None:
    """A stored date as a W3C datetime (``2024-05-01`` or ``2024-05-01T10:00:00Z``), or None.

    Accepts ISO 8601 dates and date-times (``T`` or a space; a time without an
    offset is UTC) and Unix seconds. Anything else is not a date.
    """
    text = value.strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        if not _EPOCH.match(text):
            return None
        moment = dt.datetime.fromtimestamp(int(text), dt.UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):
        return None


def _url_xml(entry: Entry) -> bytes:
    lastmod = f"<lastmod>{entry.lastmod}</lastmod>" if entry.lastmod else ""
    return f"<url><loc>{html.escape(entry.loc)}</loc>{lastmod}</url>\n".encode()


def sitemap_files(
    entries: Sequence[Entry],
    *,
    base_url: str,
    max_urls: int = MAX_URLS,
    max_bytes: int = MAX_BYTES,
) -> dict[str, bytes]:
    """``sitemap.xml``, or past either limit an index plus ``sitemap-1.xml`` ... each within both."""
    chunks: list[tuple[list[bytes], str | None]] = []
    current: list[bytes] = []
    size = len(_HEAD) + len(_TAIL)
    newest: str | None = None
    for entry in entries:
        line = _url_xml(entry)
        if current and (len(current) >= max_urls or size + len(line) > max_bytes):
            chunks.append((current, newest))
            current, size, newest = [], len(_HEAD) + len(_TAIL), None
        current.append(line)
        size += len(line)
        if entry.lastmod and (newest is None or entry.lastmod > newest):
            newest = entry.lastmod
    chunks.append((current, newest))
    if len(chunks) == 1:
        return {SITEMAP: _HEAD + b"".join(current) + _TAIL}
    files: dict[str, bytes] = {}
    index = [_INDEX_HEAD]
    for number, (lines, last) in enumerate(chunks, start=1):
        name = f"sitemap-{number}.xml"
        files[name] = _HEAD + b"".join(lines) + _TAIL
        lastmod = f"<lastmod>{last}</lastmod>" if last else ""
        loc = html.escape(f"{base_url}/{name}")
        index.append(f"<sitemap><loc>{loc}</loc>{lastmod}</sitemap>\n".encode())
    index.append(_INDEX_TAIL)
    files[SITEMAP] = b"".join(index)
    return files


def robots_txt(seo: SeoConfig, *, sitemap_url: str) -> bytes:
    """The ``[[seo.robots]]`` groups (default: allow everything) and the ``Sitemap:`` line."""
    lines: list[str] = []
    groups = seo.robots
    if not groups:
        lines += ["User-agent: *", "Disallow:", ""]
    for group in groups:
        lines.append(f"User-agent: {group.user_agent}")
        lines += [f"Allow: {path}" for path in group.allow]
        lines += [f"Disallow: {path}" for path in group.disallow]
        if not group.allow and not group.disallow:
            lines.append("Disallow:")
        lines.append("")
    lines.append(f"Sitemap: {sitemap_url}")
    return ("\n".join(lines) + "\n").encode()


def default_404(*, lang: str, home: str) -> bytes:
    """A plain, valid, noindex ``404.html`` for sites without a template of that name."""
    lang_attr = f' lang="{html.escape(lang)}"' if lang else ""
    return (
        "<!doctype html>\n"
        f"<html{lang_attr}>\n<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        "<title>Page not found</title>\n"
        "</head>\n<body>\n<main>\n<h1>Page not found</h1>\n"
        f'<p>There is no page at this address. <a href="{html.escape(home)}">Go to the home page</a>.</p>\n'
        "</main>\n</body>\n</html>\n"
    ).encode()


class SitemapProblem(Exception):
    """A sitemap in the build that is not well-formed XML."""


def sitemap_urls(read: ReadFile, *, base_url: str, files: Mapping[str, object]) -> list[str]:
    """URL paths (site-relative, decoded) listed by the build's ``sitemap.xml`` and its children.

    Raises ``SitemapProblem`` naming the file when one is not well-formed.
    """
    urls: list[str] = []
    pending = [SITEMAP]
    seen: set[str] = set()
    while pending:
        name = pending.pop(0)
        if name in seen or name not in files:
            continue
        seen.add(name)
        try:
            root = etree.fromstring(
                read(name), etree.XMLParser(resolve_entities=False, no_network=True)
            )
        except etree.XMLSyntaxError as exc:
            raise SitemapProblem(f"{name}: {exc}") from None
        is_index = etree.QName(root).localname == "sitemapindex"
        for loc in root.iter(f"{{{NAMESPACE}}}loc"):
            path = _site_path((loc.text or "").strip(), base_url)
            if path is None:
                continue
            if is_index:
                pending.append(path.lstrip("/"))
            else:
                urls.append(path)
    return urls


def _site_path(loc: str, base_url: str) -> str | None:
    if not loc.startswith(base_url):
        return None
    rest = loc[len(base_url) :] or "/"
    if not rest.startswith("/"):
        return None
    if "?" in rest or "#" in rest:
        rest = urlsplit(rest).path
    if "%" in rest:
        rest = unquote(rest, errors="replace")
    return rest if rest.isascii() else unicodedata.normalize("NFC", rest)
