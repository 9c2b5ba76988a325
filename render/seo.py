"""The SEO stage: sitemap, robots.txt and 404 for every build, and the lint that gates publishing.

The render workers already parsed each page once (``render.build.pagefacts``) and
left its facts on the ``PageRecord``; this module never parses a page again
unless its facts are missing or from an older format. Rules are a plain table:
each is a small function registered with ``@rule`` (over one page's facts) or
``@site_rule`` (over all pages), with a default level that ``[seo] rules`` in
``site.toml`` can change or turn off.
"""

from __future__ import annotations

import difflib
import json
import operator
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal
from urllib.parse import urlsplit

from render.build.pagefacts import FACTS_VERSION as FACTS_VERSION
from render.build.pagefacts import PageFacts, current, facts_of
from render.build.tree import Build, FileEntry, PageRecord
from render.check import sitemap
from render.config import Route
from render.errors import CheckFailed, ConfigError
from render.paths import quote_url

REPORT_PATH = "seo.json"  # a name in the version's stored reports (render.publish.reports)
TITLE_MAX = 60
_SHOWN = 3  # pages named per rule in the summary and the error


class Level(Enum):
    error = "error"  # blocks the publish (unless block_on_errors = false)
    warning = "warning"  # reported, never blocks


@dataclass(frozen=True, kw_only=True)
class Finding:
    rule: str
    level: Level
    path: str  # the page's URL path (/posts/x/); "" for a finding about the whole site
    message: str

    def to_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "level": self.level.value,
            "path": self.path,
            "message": self.message,
        }


@dataclass(frozen=True, kw_only=True)
class PageView:
    """What a page rule sees: the record and its facts."""

    record: PageRecord
    facts: PageFacts

    @property
    def url(self) -> str:
        return self.record.url


@dataclass(frozen=True, kw_only=True)
class SiteView:
    """What a site rule sees, and what page rules may ask about the site."""

    base_url: str
    host: str
    origin: str  # "https://host/" lowercased, to tell same-host URLs without parsing them
    base_path: str  # the base URL's path without a trailing slash ("" at the host root)
    files: Mapping[str, FileEntry]
    pages: tuple[PageView, ...]
    sitemap: frozenset[str]  # URL paths the build's sitemap(s) list
    sitemap_problem: str | None
    routes: tuple[Route, ...] = ()
    _exists: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)
    # per link or asset target as written: in the build, or not a path of this site
    _fine: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def site_path(self, target: str) -> str | None:
        """``/blog/a/`` -> ``/a/`` under a base URL with a path; None when outside the site."""
        if not self.base_path:
            return target
        if target == self.base_path or target.startswith(self.base_path + "/"):
            return target[len(self.base_path) :] or "/"
        return None

    def exists(self, path: str) -> bool:
        """Whether a site path resolves to a file the way the mirror serves it (pretty URLs)."""
        known = self._exists.get(path)
        if known is None:
            rel = path.lstrip("/")
            if rel == "" or rel.endswith("/"):
                known = rel + "index.html" in self.files
            else:
                known = rel in self.files or rel + "/index.html" in self.files
            self._exists[path] = known
        return known

    def missing(self, page: PageView, key: Literal["links", "assets"]) -> list[str]:
        """The page's ``links`` or ``assets`` (from its facts) of this site that are not in the build."""
        fine = self._fine
        found = []
        for target in page.facts[key]:
            known = fine.get(target)  # most targets repeat from page to page
            if known is None:
                path = self.site_path(target)
                known = fine[target] = path is None or self.exists(path)
            if not known:
                found.append(target)
        return found

    def indexable(self) -> Iterator[PageView]:
        """Pages that belong in search results: not noindex, not the 404 page."""
        for page in self.pages:
            if not page.facts["noindex"] and page.record.path != sitemap.NOT_FOUND:
                yield page


PageCheck = Callable[[PageView, SiteView], Iterable[str]]
SiteCheck = Callable[[SiteView], Iterable[tuple[str, str]]]


@dataclass(frozen=True, kw_only=True)
class Rule:
    id: str
    level: Level
    doc: str
    page: PageCheck | None = None
    site: SiteCheck | None = None


RULES: dict[str, Rule] = {}
"""Every rule by id, in the order they are defined."""


def rule(rule_id: str, *, level: Level) -> Callable[[PageCheck], PageCheck]:
    """Register a per-page rule: ``check(page, site)`` yields one message per problem."""

    def register(check: PageCheck) -> PageCheck:
        _add_rule(Rule(id=rule_id, level=level, doc=_doc(check), page=check))
        return check

    return register


def site_rule(rule_id: str, *, level: Level) -> Callable[[SiteCheck], SiteCheck]:
    """Register a site-wide rule: ``check(site)`` yields ``(url path, message)`` pairs."""

    def register(check: SiteCheck) -> SiteCheck:
        _add_rule(Rule(id=rule_id, level=level, doc=_doc(check), site=check))
        return check

    return register


def _add_rule(new: Rule) -> None:
    if new.id in RULES:
        raise ValueError(f"SEO rule {new.id!r} is registered twice")
    RULES[new.id] = new


def _doc(check: Callable[..., object]) -> str:
    return (check.__doc__ or "").strip().split("\n")[0]


# --- the stage: generate ----------------------------------------------------


def generate(
    build: Build, *, max_urls: int = sitemap.MAX_URLS, max_bytes: int = sitemap.MAX_BYTES
) -> Build:
    """Add ``sitemap.xml`` (or an index past the limits), ``robots.txt`` and a default ``404.html``.

    A site's own ``sitemap.xml``, ``robots.txt`` or ``404.html`` (a route or a
    static file) is kept as it is.
    """
    site = build.site
    base = site.base_url
    added: dict[str, bytes] = {}
    if sitemap.SITEMAP not in build.files:
        entries = []
        for page in sorted(_html_pages(build), key=_BY_URL):
            if page.path == sitemap.NOT_FOUND or _facts(build, page)["noindex"]:
                continue
            entries.append(sitemap.Entry(loc=base + quote_url(page.url), lastmod=_lastmod(page)[0]))
        added.update(
            sitemap.sitemap_files(entries, base_url=base, max_urls=max_urls, max_bytes=max_bytes)
        )
    if sitemap.ROBOTS not in build.files:
        added[sitemap.ROBOTS] = sitemap.robots_txt(
            site.seo, sitemap_url=f"{base}/{sitemap.SITEMAP}"
        )
    if sitemap.NOT_FOUND not in build.files:
        home = (urlsplit(base).path.rstrip("/") or "") + "/"
        added[sitemap.NOT_FOUND] = sitemap.default_404(lang=site.seo.lang, home=home)
    return build.with_files(added)


_BY_URL = operator.attrgetter("url")


def _html_pages(build: Build) -> list[PageRecord]:
    return [p for p in build.pages if p.path.endswith((".html", ".htm")) and p.path in build.files]


def _facts(build: Build, page: PageRecord) -> PageFacts:
    """The page's facts as its record has them; read from the page when they are older or none."""
    facts = page.facts
    if current(facts):
        return facts
    html = build.read(page.path).decode("utf-8", "replace")
    return facts_of(html, canonical=build.site.base_url + quote_url(page.url))


def _lastmod(page: PageRecord) -> tuple[str | None, bool]:
    """The page's sitemap lastmod, and whether its ``lastmod`` column value was unusable."""
    if page.lastmod is not None and page.lastmod.strip():
        value = sitemap.parse_lastmod(page.lastmod)
        if value is not None:
            return value, False
        return sitemap.parse_lastmod(page.changed or ""), True
    return sitemap.parse_lastmod(page.changed or ""), False


# --- the stage: lint --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SeoReport:
    site: str
    pages: int
    findings: tuple[Finding, ...]
    levels: Mapping[str, str]  # effective level per rule: "error", "warning" or "off"
    block_on_errors: bool
    seconds: float = 0.0  # not in the JSON: the report of an unchanged site is unchanged

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.level is Level.error)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.level is Level.warning)

    @property
    def blocking(self) -> bool:
        """True when errors stop the publish (``[seo] block_on_errors``, the default)."""
        return self.block_on_errors and self.errors > 0

    @property
    def counts(self) -> dict[str, int]:
        """Findings per rule id."""
        return dict(sorted(Counter(f.rule for f in self.findings).items()))

    def first_pages(self, rule_id: str, limit: int = _SHOWN) -> list[str]:
        paths = dict.fromkeys(f.path or "(site)" for f in self.findings if f.rule == rule_id)
        return list(paths)[:limit]


def effective_levels(overrides: Mapping[str, str], *, site: str = "") -> dict[str, str]:
    """Each rule's level after ``[seo] rules``; an unknown rule id is a ``ConfigError``."""
    problems = []
    for rule_id, level in overrides.items():
        if rule_id not in RULES:
            close = difflib.get_close_matches(rule_id, list(RULES), n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"site.toml: seo.rules.{rule_id}: unknown SEO rule{suggestion}")
        elif level not in ("error", "warning", "off"):
            problems.append(
                f"site.toml: seo.rules.{rule_id}: expected 'error', 'warning' or 'off', got {level!r}"
            )
    if problems:
        raise ConfigError(problems, site=site or None, hint=f"the rules are: {', '.join(RULES)}")
    return {rule_id: overrides.get(rule_id, r.level.value) for rule_id, r in RULES.items()}


def lint(build: Build) -> SeoReport:
    """Run every rule over the build's pages (after ``generate``); never raises on bad pages."""
    started = time.perf_counter()
    site = build.site
    levels = effective_levels(site.seo.rules, site=str(site.id))
    view = _site_view(build)
    findings: list[Finding] = []
    page_rules = [
        (r, Level(levels[r.id])) for r in RULES.values() if r.page and levels[r.id] != "off"
    ]
    for page in view.pages:
        for r, level in page_rules:
            assert r.page is not None
            for message in r.page(page, view):
                findings.append(Finding(rule=r.id, level=level, path=page.url, message=message))
    for r in RULES.values():
        if r.site is not None and levels[r.id] != "off":
            level = Level(levels[r.id])
            for path, message in r.site(view):
                findings.append(Finding(rule=r.id, level=level, path=path, message=message))
    findings.sort(key=lambda f: (f.path, f.rule, f.message))
    return SeoReport(
        site=str(site.id),
        pages=len(view.pages),
        findings=tuple(findings),
        levels=levels,
        block_on_errors=site.seo.block_on_errors,
        seconds=time.perf_counter() - started,
    )


def _site_view(build: Build) -> SiteView:
    base = build.site.base_url
    parts = urlsplit(base)
    pages = tuple(
        PageView(record=p, facts=_facts(build, p)) for p in sorted(_html_pages(build), key=_BY_URL)
    )
    problem = None
    try:
        listed = sitemap.sitemap_urls(build.read, base_url=base, files=build.files)
    except sitemap.SitemapProblem as exc:
        listed, problem = [], str(exc)
    return SiteView(
        base_url=base,
        host=parts.hostname or "",
        origin=f"{parts.scheme}://{parts.netloc}/".lower(),
        base_path=parts.path.rstrip("/"),
        files=build.files,
        pages=pages,
        sitemap=frozenset(listed),
        sitemap_problem=problem,
        routes=build.site.routes,
    )


# --- reporting ----------------------------------------------------------------


def report_json(report: SeoReport) -> bytes:
    """The full findings as JSON (the stored ``seo.json``): same findings, same bytes."""
    data = {
        "site": report.site,
        "pages": report.pages,
        "errors": report.errors,
        "warnings": report.warnings,
        "blocking": report.blocking,
        "counts": report.counts,
        "rules": dict(sorted(report.levels.items())),
        "findings": [f.to_json() for f in report.findings],
    }
    return (json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode()


def summary_rows(report: SeoReport) -> list[tuple[str, str, int, str]]:
    """``(level, rule, count, first pages)`` per rule with findings, errors first: a table's rows."""
    levels: dict[str, Level] = {f.rule: f.level for f in report.findings}
    rows = []
    for rule_id, count in report.counts.items():
        pages = report.first_pages(rule_id)
        more = count - len(pages)
        shown = ", ".join(pages) + (f" (+{more} more)" if more > 0 else "")
        rows.append((levels[rule_id].value, rule_id, count, shown))
    rows.sort(key=lambda r: (r[0] != "error", r[1]))
    return rows


def summary_lines(report: SeoReport) -> list[str]:
    """A plain-text summary: one headline, then one line per rule with findings."""
    head = (
        f"SEO: {report.pages} pages, {report.errors} error{'s' * (report.errors != 1)}, "
        f"{report.warnings} warning{'s' * (report.warnings != 1)}"
    )
    rows = summary_rows(report)
    width = max((len(r[1]) for r in rows), default=0)
    return [head] + [f"  {lvl:<7}  {rid:<{width}}  {n:>5}  {pages}" for lvl, rid, n, pages in rows]


def blocking_error(report: SeoReport) -> CheckFailed:
    """The error that stops the publish: the first pages per failing rule, and where the rest are."""
    lines = []
    for level, rule_id, count, pages in summary_rows(report):
        if level == Level.error.value:
            lines.append(f"  {rule_id} ({count}): {pages}")
            first = next(f for f in report.findings if f.rule == rule_id)
            lines.append(f"    {first.path or '(site)'}: {first.message}")
    return CheckFailed(
        f"SEO lint found {report.errors} error{'s' * (report.errors != 1)} on {report.pages} pages",
        site=report.site,
        detail="\n".join(lines) + "\n  'render report SITE' lists every finding",
        hint="fix the pages, turn a rule down with [seo] rules in site.toml, "
        "set [seo] block_on_errors = false, or pass --allow-seo-errors",
    )


def ledger_rows(report: SeoReport) -> list[dict[str, str]]:
    """Findings in the shape ``Ledger.record_seo`` stores."""
    return [f.to_json() for f in report.findings]


# --- the rules ------------------------------------------------------------------
# Adding a rule is adding a function here.


@rule("page-empty", level=Level.error)
def _page_empty(page: PageView, site: SiteView) -> Iterator[str]:
    """The page has no HTML at all."""
    if page.facts["empty"]:
        yield "the page is empty: the template rendered no HTML"


@rule("title-missing", level=Level.error)
def _title_missing(page: PageView, site: SiteView) -> Iterator[str]:
    """No <title>, or an empty one."""
    title = page.facts["title"]
    if title is None and not page.facts["empty"]:
        yield "no <title>: add one in the template's <head>"
    elif title == "":
        yield "the <title> is empty"


@rule("title-too-long", level=Level.warning)
def _title_too_long(page: PageView, site: SiteView) -> Iterator[str]:
    """A title over 60 characters (search results cut it)."""
    title = page.facts["title"] or ""
    if len(title) > TITLE_MAX:
        yield f"the title is {len(title)} characters (over {TITLE_MAX}): {title!r}"


@rule("description-missing", level=Level.error)
def _description_missing(page: PageView, site: SiteView) -> Iterator[str]:
    """No <meta name="description">, or an empty one."""
    description = page.facts["description"]
    if description is None and not page.facts["empty"]:
        yield 'no <meta name="description" content="...">'
    elif description == "":
        yield "the meta description is empty"


@rule("h1-missing", level=Level.warning)
def _h1_missing(page: PageView, site: SiteView) -> Iterator[str]:
    """A page without an <h1>."""
    if page.facts["h1"] == 0 and not page.facts["empty"]:
        yield "no <h1>: give the page one main heading"


@rule("h1-multiple", level=Level.warning)
def _h1_multiple(page: PageView, site: SiteView) -> Iterator[str]:
    """More than one <h1>."""
    count = page.facts["h1"]
    if count > 1:
        yield f"{count} <h1> elements: keep one main heading"


@rule("img-alt-missing", level=Level.error)
def _img_alt(page: PageView, site: SiteView) -> Iterator[str]:
    """An <img> without an alt attribute (alt="" is fine for decoration)."""
    count = page.facts["img_no_alt_count"]
    if count:
        srcs = ", ".join(s or "(no src)" for s in page.facts["img_no_alt"][:_SHOWN])
        more = f" and {count - _SHOWN} more" if count > _SHOWN else ""
        yield f"{count} <img> without alt: {srcs}{more}"


@rule("broken-link", level=Level.error)
def _broken_link(page: PageView, site: SiteView) -> Iterator[str]:
    """A link to a page of this site that is not in the build."""
    yield from (f"links to {t}, which is not in the build" for t in site.missing(page, "links"))


@rule("broken-asset", level=Level.error)
def _broken_asset(page: PageView, site: SiteView) -> Iterator[str]:
    """A stylesheet, script, image or other asset of this site that is not in the build."""
    yield from (f"uses {t}, which is not in the build" for t in site.missing(page, "assets"))


@rule("canonical-other-host", level=Level.error)
def _canonical_host(page: PageView, site: SiteView) -> Iterator[str]:
    """A canonical URL on another host than the site's base URL."""
    canonical = page.facts["canonical"]
    if canonical and not canonical.lower().startswith(site.origin):
        host = urlsplit(canonical).hostname or ""
        if host != site.host:
            yield f"the canonical URL {canonical} is on {host or 'no host'}, not {site.host}"


@rule("jsonld-invalid", level=Level.error)
def _jsonld(page: PageView, site: SiteView) -> Iterator[str]:
    """Invalid JSON in <script type="application/ld+json">."""
    for problem in page.facts["ldjson_errors"]:
        yield f'invalid JSON in <script type="application/ld+json">: {problem}'


@rule("noindex-in-sitemap", level=Level.error)
def _noindex_listed(page: PageView, site: SiteView) -> Iterator[str]:
    """A page marked noindex that the sitemap lists."""
    if page.facts["noindex"] and page.url in site.sitemap:
        yield "the page is marked noindex but sitemap.xml lists it"


@rule("viewport-missing", level=Level.error)
def _viewport(page: PageView, site: SiteView) -> Iterator[str]:
    """No <meta name="viewport">."""
    if not page.facts["viewport"] and not page.facts["empty"]:
        yield 'no <meta name="viewport" content="width=device-width, initial-scale=1">'


@rule("lang-missing", level=Level.error)
def _lang(page: PageView, site: SiteView) -> Iterator[str]:
    """No <html lang>, or an empty one."""
    if not (page.facts["lang"] or "").strip() and not page.facts["empty"]:
        yield "no lang on <html>: set [seo] lang in site.toml or lang in the template"


@rule("lastmod-invalid", level=Level.warning)
def _lastmod_invalid(page: PageView, site: SiteView) -> Iterator[str]:
    """The route's lastmod column holds something that is not a date."""
    if _lastmod(page.record)[1]:
        number = page.record.route
        route = site.routes[number] if 0 <= number < len(site.routes) else None
        where = f"routes[{number}]" + (f" ({route.path})" if route else "")
        column = f" {route.lastmod!r}" if route and route.lastmod else ""
        yield (
            f"{where}, the row of {page.url}: lastmod column{column} value "
            f"{page.record.lastmod!r} is not a date (use ISO 8601 or Unix seconds); "
            "the sitemap uses the time the page last changed"
        )


@site_rule("title-duplicate", level=Level.error)
def _title_duplicate(site: SiteView) -> Iterator[tuple[str, str]]:
    """A title shared by several indexable pages."""
    yield from _duplicates(site, "title", "title")


@site_rule("description-duplicate", level=Level.warning)
def _description_duplicate(site: SiteView) -> Iterator[tuple[str, str]]:
    """A meta description shared by several indexable pages."""
    yield from _duplicates(site, "description", "description")


@site_rule("sitemap-invalid", level=Level.error)
def _sitemap_invalid(site: SiteView) -> Iterator[tuple[str, str]]:
    """A sitemap in the build that is not well-formed XML."""
    if site.sitemap_problem is not None:
        yield "", f"the sitemap is not well-formed XML: {site.sitemap_problem}"


def _duplicates(
    site: SiteView, key: Literal["title", "description"], what: str
) -> Iterator[tuple[str, str]]:
    groups: defaultdict[str, list[str]] = defaultdict(list)
    for page in site.indexable():
        value = page.facts[key]
        if value:
            groups[value].append(page.url)
    for value, urls in groups.items():
        if len(urls) < 2:
            continue
        for url in urls:
            others = [u for u in urls[: _SHOWN + 1] if u != url][:_SHOWN]
            more = len(urls) - 1 - len(others)
            shown = ", ".join(others) + (f" and {more} more" if more > 0 else "")
            yield url, f"the {what} {value!r} is also on {shown}"
