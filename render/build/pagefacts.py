"""Per-page SEO work, done in the render worker while the page is still in memory.

``finish_page`` adds the defaults a template left out (``<link rel=canonical>``,
``<html lang>``, ``og:url``; a template's own value always wins) and returns the
final HTML with a small JSON-serializable dict of *facts*: what the site-wide
lint (``render.seo``) needs to know about the page, so that the lint never has
to parse a page again. A page reused by an incremental build carries its
previous facts, so only changed pages are parsed.

Parsing uses lxml's libxml2 HTML parser over the UTF-8 bytes, walking only the
elements the facts need; hrefs are gathered as written and each distinct one is
resolved once, most from a per-process cache or a fast path that gives what
urljoin would. On the ~2.5 KB article pages of bench/seo.py a page costs about
30 microseconds (best of 40 interleaved runs; about 16 of them are libxml2
parsing and freeing the tree), and bench/seo.py itself reports about 40
(``finish_page_us``, median of 8 runs). A regular-expression scan (~70) and
selectolax (~75) were slower when last compared. libxml2 recovers from any
input: unclosed tags, stray bytes, NULs and an empty page all give facts, never
an exception. Defaults are inserted by slicing the original text, so the bytes
the template wrote are kept as written.
"""

from __future__ import annotations

import html as _html
import json
import posixpath
import re
import threading
import unicodedata
from collections.abc import Mapping
from typing import TypedDict, TypeGuard
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from lxml import etree

FACTS_VERSION = 1
"""Bumped when the facts change shape; the lint re-reads pages with older facts."""


class PageFacts(TypedDict):
    """What the SEO lint knows about one page; a plain dict, stored as JSON in the build record.

    Every key is always present in the facts this version makes.
    """

    v: int  # FACTS_VERSION of the code that made them
    empty: bool  # the page has no HTML at all
    title: str | None  # the first <title> outside <svg>, whitespace collapsed; None: no <title>
    description: str | None  # <meta name=description> content; None: no such meta
    h1: int  # how many <h1>
    img_no_alt: list[str]  # srcs of the first _MAX_LISTED <img> without alt ("" for no src)
    img_no_alt_count: int  # all of them
    links: list[str]  # sorted same-origin paths the page links to
    assets: list[str]  # sorted same-origin paths the page loads
    canonical: str | None  # absolute; None: no <link rel=canonical> (finish_page fills it in)
    noindex: bool  # <meta name=robots|googlebot> says noindex or none
    ldjson: int  # <script type=application/ld+json> elements
    ldjson_errors: list[str]  # one message per such script that is not valid JSON
    viewport: bool  # a non-empty <meta name=viewport>
    lang: str | None  # <html lang>; None: none (finish_page fills in the site's)


def current(facts: Mapping[str, object]) -> TypeGuard[PageFacts]:
    """Whether facts a ``PageRecord`` carries are this version's ``PageFacts``.

    A record may hold ``{}`` (a page that is not HTML, or written before facts
    existed) or facts of an older ``FACTS_VERSION`` (a record from older code):
    their keys cannot be trusted, hence ``.get``; such a page is read again.
    """
    return facts.get("v") == FACTS_VERSION


_MAX_LISTED = 20  # images without alt listed per page (the count is kept whole)

_TAGS = (
    "html",
    "title",
    "meta",
    "link",
    "h1",
    "a",
    "area",
    "img",
    "source",
    "script",
    "iframe",
    "video",
    "audio",
    "embed",
    "object",
    "input",
    "svg",
    "base",
)
_SKIP_LINK_RELS = frozenset({"preconnect", "dns-prefetch"})
_PAGE_LINK_RELS = frozenset({"canonical", "alternate", "next", "prev", "author", "help", "license"})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_HEAD_END = re.compile(r"</head\s*>", re.I)
_BODY_START = re.compile(r"<body[\s/>]", re.I)
_HEAD_START = re.compile(r"<head(?:\s[^>]*)?>", re.I)
_HTML_START = re.compile(r"<html(?=[\s/>])", re.I)
_DOCTYPE = re.compile(r"\s*<!doctype[^>]*>", re.I)
_local = threading.local()


def _parser() -> etree.HTMLParser:
    parser: etree.HTMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.HTMLParser(encoding="utf-8", no_network=True, remove_blank_text=True)
        _local.parser = parser
    return parser


def finish_page(html: str, *, url: str, canonical: str, lang: str) -> tuple[str, PageFacts]:
    """Inject missing defaults into a rendered page and return it with its facts.

    ``url`` is the page's URL path (``/posts/x/``), ``canonical`` its default
    absolute canonical URL (base URL + path), ``lang`` the site's default
    ``<html lang>``. Never raises on bad HTML.
    """
    facts, og_url = _scan(html, canonical=canonical)
    head = ""
    if facts["canonical"] is None:
        facts["canonical"] = canonical
        head = f'<link rel="canonical" href="{_attr(canonical)}">'
    if not og_url:
        head += f'<meta property="og:url" content="{_attr(facts["canonical"] or canonical)}">'
    head_at = _head_position(html) if head else -1
    if facts["lang"] is None and lang:
        facts["lang"] = lang
        match = _HTML_START.search(html)
        if match is not None:
            at, text = match.end(), f' lang="{_attr(lang)}"'
        else:
            at, text = _doctype_end(html), f'<html lang="{_attr(lang)}">'
        # the later edit first, so the earlier position still holds; at one
        # position the lang text ends up before the head elements
        if at <= head_at:
            html, head = html[:head_at] + head + html[head_at:], ""
        html = html[:at] + text + html[at:]
    if head:
        html = html[:head_at] + head + html[head_at:]
    return html, facts


def facts_of(html: str, *, canonical: str) -> PageFacts:
    """The facts of a page as it is, without adding defaults."""
    return _scan(html, canonical=canonical)[0]


def _scan(html: str, *, canonical: str) -> tuple[PageFacts, bool]:
    """The page's facts, and whether it has an ``og:url``.

    ``facts["canonical"]`` and ``facts["lang"]`` are None when the page has no
    ``<link rel=canonical>`` or ``<html lang>``: what finish_page fills in.
    """
    data = html.encode("utf-8", "replace")
    try:
        root = etree.fromstring(data, _parser())
    except (etree.ParserError, etree.XMLSyntaxError):  # pragma: no cover - libxml2 recovers
        root = None
    if root is None:
        return _empty_facts(), False
    # hrefs are gathered as written and resolved once each after the walk
    links: list[str] = []
    assets: list[str] = []
    no_alt: list[str] = []
    no_alt_count = h1 = ld_count = 0
    title = description = lang = canonical_href = base = None
    noindex = viewport = og_url = svg = False
    ld_errors: list[str] = []
    for el in root.iter(_TAGS):  # the most frequent tags first
        tag = el.tag
        if tag == "a":
            if (href := el.get("href")) is not None:
                links.append(href)
        elif tag == "meta":
            name = (el.get("name") or "").lower()
            if name == "description":
                if description is None:
                    description = " ".join((el.get("content") or "").split())
            elif name == "viewport":
                viewport = viewport or bool((el.get("content") or "").strip())
            elif name == "robots" or name == "googlebot":
                words = (el.get("content") or "").lower().replace(",", " ").split()
                noindex = noindex or "noindex" in words or "none" in words
            elif not og_url and (prop := el.get("property")) is not None:
                og_url = prop.lower() == "og:url"
        elif tag == "link":
            rel = el.get("rel")
            is_canonical, into = _LINK_KINDS.get(rel) or _link_kind(rel)
            href = el.get("href")
            if is_canonical and canonical_href is None:
                canonical_href = href or ""
            if href is not None and into:
                (links if into == _LINK else assets).append(href)
        elif tag == "script":
            if (src := el.get("src")) is not None:
                assets.append(src)
            kind = el.get("type")
            if kind and kind.split(";")[0].strip().lower() == "application/ld+json":
                ld_count += 1
                if (problem := _json_problem(el.text or "")) is not None:
                    ld_errors.append(problem)
        elif tag == "img":
            src = el.get("src")
            if el.get("alt") is None:
                no_alt_count += 1
                if len(no_alt) < _MAX_LISTED:
                    no_alt.append(src or "")
            if src is not None:
                assets.append(src)
            if (srcset := el.get("srcset")) is not None:
                assets += _srcset_urls(srcset)
        elif tag == "h1":
            h1 += 1
        elif tag == "title":
            # an <svg> ancestor comes before its <title> in document order
            if title is None and (not svg or next(el.iterancestors("svg"), None) is None):
                title = " ".join((el.text or "").split())
        elif tag == "html":
            if lang is None:
                lang = el.get("lang")
        elif tag == "svg":
            svg = True
        elif tag == "base":
            if base is None:
                base = el.get("href")
        elif tag == "area" or tag == "iframe":
            if (href := el.get("href" if tag == "area" else "src")) is not None:
                links.append(href)
        elif tag == "source":
            if (src := el.get("src")) is not None:
                assets.append(src)
            if (srcset := el.get("srcset")) is not None:
                assets += _srcset_urls(srcset)
        elif tag == "video":
            for src in (el.get("src"), el.get("poster")):
                if src is not None:
                    assets.append(src)
        elif tag == "object":
            if (src := el.get("data")) is not None:
                assets.append(src)
        elif (tag != "input" or (el.get("type") or "").lower() == "image") and (
            src := el.get("src")
        ) is not None:  # audio, embed, input type=image
            assets.append(src)
    resolver = _Resolver(canonical)
    if base is not None and ("<base" in html or "<BASE" in html or "<Base" in html):
        # the first <base href> sets the base of every URL in the page, even earlier ones
        resolver.rebase(base)
    return {
        "v": FACTS_VERSION,
        "empty": False,
        "title": title,
        "description": description,
        "h1": h1,
        "img_no_alt": no_alt,
        "img_no_alt_count": no_alt_count,
        "links": resolver.paths(links),
        "assets": resolver.paths(assets),
        "canonical": None if canonical_href is None else resolver.absolute(canonical_href),
        "noindex": noindex,
        "ldjson": ld_count,
        "ldjson_errors": ld_errors,
        "viewport": viewport,
        "lang": lang,
    }, og_url


def _empty_facts() -> PageFacts:
    return {
        "v": FACTS_VERSION,
        "empty": True,
        "title": None,
        "description": None,
        "h1": 0,
        "img_no_alt": [],
        "img_no_alt_count": 0,
        "links": [],
        "assets": [],
        "canonical": None,
        "noindex": False,
        "ldjson": 0,
        "ldjson_errors": [],
        "viewport": False,
        "lang": None,
    }


_LINK = 1  # a <link> whose href is a page (rel=next, canonical, ...)
_ASSET = 2  # one whose href is fetched with the page (rel=stylesheet, icon, ...)
_LINK_KINDS: dict[str | None, tuple[bool, int]] = {}  # rel -> (canonical?, 0 | _LINK | _ASSET)


def _link_kind(rel: str | None) -> tuple[bool, int]:
    rels = (rel or "").lower().split()
    if _SKIP_LINK_RELS.intersection(rels):
        into = 0
    else:
        into = _LINK if _PAGE_LINK_RELS.intersection(rels) else _ASSET
    kind = ("canonical" in rels, into)
    if len(_LINK_KINDS) < 1000:  # a handful of values in practice
        _LINK_KINDS[rel] = kind
    return kind


def _srcset_urls(srcset: str) -> list[str]:
    return [parts[0] for candidate in srcset.split(",") if (parts := candidate.split())]


def _json_problem(text: str) -> str | None:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"line {exc.lineno} column {exc.colno}: {exc.msg}"
    except RecursionError:
        return "nested too deeply"
    return None


_MISS = object()
_CACHES: dict[str, dict[str, str | None]] = {}  # per origin: href -> resolved path
_CACHE_MAX = 50_000
# Fast paths that give what urlsplit/urljoin would, for the URLs they read as
# written: an ASCII host without brackets, nothing urlsplit strips or removes
# (spaces, tabs, newlines, controls), no ';' params in the path. Any other URL
# takes the slow path.
_HOST = r"[A-Za-z0-9._~%!$&'()*+,=:@\-]"
_PATH = r"[^\x00-\x20\x7f-\U0010ffff#;?]"
# a page URL's scheme and host
_ORIGIN = re.compile(rf"([A-Za-z][A-Za-z0-9+.\-]*)://({_HOST}*)(?=[/?#]|\Z)")
# an absolute http(s) href: scheme, host and path, which urljoin keeps as they are
_ABSOLUTE = re.compile(rf"(https?)://({_HOST}+)(/{_PATH}*)?(?:[?#][!-~]*)?\Z", re.I | re.A)
# an absolute http(s) URL urljoin returns unchanged, whatever the base
_PLAIN_URL = re.compile(rf"https?://{_HOST}+(?:/{_PATH}*)?\Z")


class _Resolver:
    """Turns an href into a same-origin absolute path, or None when it leaves the site.

    Hrefs that do not depend on the page (``/x``, ``https://...``, ``mailto:``)
    repeat from page to page (navigation, assets), so their answers are kept
    per origin for the life of the process.
    """

    __slots__ = ("base", "origin", "root_relative_ok", "cache", "plain_base")

    def __init__(self, page: str) -> None:
        self.base = page
        origin = _origin(page)
        # urljoin can read this base: a plain absolute href resolves to itself
        self.plain_base = origin is not None
        if origin is None:
            parts = _split(page)
            origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        self.origin = origin
        self.root_relative_ok = True  # a <base> on another host turns '/x' external
        cache = _CACHES.get(self.origin)
        if cache is None or len(cache) > _CACHE_MAX:
            cache = _CACHES[self.origin] = {}
        self.cache = cache

    def rebase(self, href: str) -> None:
        try:
            self.base = urljoin(self.base, href.strip())
        except ValueError:  # an invalid URL (an unclosed IPv6 bracket): ignored, as browsers do
            return
        parts = _split(self.base)
        self.root_relative_ok = f"{parts.scheme.lower()}://{parts.netloc.lower()}" == self.origin
        self.plain_base = False
        self.cache = {}  # answers under this <base> are this page's own

    def absolute(self, href: str) -> str:
        if _PLAIN_URL.match(href) is not None:
            return href  # what urljoin gives back for it, under any base
        try:
            return urljoin(self.base, href.strip())
        except ValueError:
            return href

    def paths(self, hrefs: list[str]) -> list[str]:
        """The sorted distinct paths the hrefs resolve to."""
        get = self.cache.get
        found: set[object] = {get(href, _MISS) for href in hrefs}
        if _MISS in found:  # not all known yet
            found = {self.resolve(href) for href in set(hrefs)}
        found.discard(None)
        return sorted(found)  # type: ignore[arg-type]

    def resolve(self, href: str) -> str | None:
        found = self.cache.get(href, _MISS)
        if found is not _MISS:
            return found  # type: ignore[return-value]
        result = self._resolve(href.strip())
        if href[:1] == "/" or _SCHEME.match(href):
            self.cache[href] = result
        return result

    def _resolve(self, href: str) -> str | None:
        if not href or href[0] == "#":
            return None
        if href[0] == "/" and (len(href) == 1 or href[1] != "/"):
            return _clean_path(href) if self.root_relative_ok else None
        if _SCHEME.match(href) and href[:5].lower() not in ("http:", "https"):
            return None  # mailto:, tel:, javascript:, data: ...
        if self.plain_base and (match := _ABSOLUTE.match(href)) is not None:
            # urljoin would keep this href's scheme, host and path: skip it and urlsplit
            if f"{match[1].lower()}://{match[2].lower()}" != self.origin:
                return None
            return _clean_path(match[3] or "/")
        try:
            parts = urlsplit(urljoin(self.base, href))
        except ValueError:  # not a URL a browser could follow either
            return None
        if f"{parts.scheme.lower()}://{parts.netloc.lower()}" != self.origin:
            return None
        return _clean_path(parts.path or "/")


_last_host = ("", "")  # the last page's "scheme://host" as written, and its origin


def _origin(page: str) -> str | None:
    """The page URL's origin, where ``_ORIGIN`` can read it."""
    global _last_host
    written, origin = _last_host
    size = len(written)
    if size and page.startswith(written) and page[size : size + 1] in ("/", "", "?", "#"):
        return origin  # pages of one site share it
    match = _ORIGIN.match(page)
    if match is None:
        return None
    origin = f"{match[1].lower()}://{match[2].lower()}"
    _last_host = (match[0], origin)
    return origin


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:
        return SplitResult("", "", url, "", "")


def _clean_path(path: str) -> str:
    for mark in ("#", "?"):
        cut = path.find(mark)
        if cut >= 0:
            path = path[:cut]
    if "%" in path:
        path = unquote(path, errors="replace")
    if "/." in path:
        trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
        path = posixpath.normpath(path)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        if trailing and not path.endswith("/"):
            path += "/"
    if not path.isascii():
        path = unicodedata.normalize("NFC", path)
    return path or "/"


def _attr(value: str) -> str:
    return _html.escape(value, quote=True)


def _doctype_end(html: str) -> int:
    match = _DOCTYPE.match(html)
    return match.end() if match is not None else 0


def _head_position(html: str) -> int:
    """Where the injected head elements go: before ``</head>``, else as early as is safe."""
    at = html.find("</head>")
    if at >= 0:
        return at
    match = _HEAD_END.search(html) or _BODY_START.search(html)
    if match is not None:
        return match.start()
    match = _HEAD_START.search(html)
    if match is not None:
        return match.end()
    match = _HTML_START.search(html)
    if match is not None:
        end = html.find(">", match.end())
        return end + 1 if end >= 0 else len(html)
    return _doctype_end(html)
