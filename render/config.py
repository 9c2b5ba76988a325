"""Reading and validating ``render.toml`` (the host) and each ``site.toml``.

Every problem in a file is collected and reported at once, each naming the
file and the key. Sections are frozen dataclasses; each field carries a
one-line ``doc`` that the README's configuration table must match (a test
checks it).
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from render import cron, siterules
from render.configfile import (
    Problems,
    parse_table,
    pop_table,
    read_toml,
    required,
    setting,
    type_name,
)
from render.configfile import field_docs as field_docs
from render.errors import ConfigError, UsageError

HOST_FILE = "render.toml"
SITE_FILE = "site.toml"

T = TypeVar("T")


@dataclass(frozen=True)
class Secret:
    """A value that never shows in a repr, a log or a traceback."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


SITE_ID_RULE = (
    "lowercase letters, digits, '-' and '_', starting with a letter or digit, at most 63 characters"
)
_SITE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")


def is_site_id(text: str) -> bool:
    """True for a safe owner or site name (``SITE_ID_RULE``): one path segment, one DNS label."""
    return _SITE_ID_RE.match(text) is not None


@dataclass(frozen=True, kw_only=True)
class SiteId:
    """``owner/name``: the names of the site's two folders, ``sites/<owner>/<name>/``.

    Both parts are checked here, so every path and store key made from a site
    id (``<state>/builds/<owner>/<name>``, locks, snapshots, ``sites/<owner>/<name>/``
    in the store) is one plain segment each and stays where it is put.
    """

    owner: str
    name: str

    def __post_init__(self) -> None:
        for part in (self.owner, self.name):
            if not is_site_id(part):
                raise ValueError(f"not a site id: {part!r} ({SITE_ID_RULE})")

    def __str__(self) -> str:
        return f"{self.owner}/{self.name}"


# --- host sections ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HostSection:
    sites: str = setting("sites", "folder holding sites/<owner>/<name>/site.toml")
    state: str = setting(
        ".render", "state folder: ledger, snapshots, builds, local store and mirror"
    )


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    kind: str = setting(
        "local", "'local' (a folder) or 's3' (Cloudflare R2 or any S3-compatible store)"
    )
    path: str = setting("", "local store folder; default <state>/store")
    bucket: str = setting("", "s3: bucket name")
    endpoint_url: str = setting("", "s3: endpoint, e.g. https://<account>.r2.cloudflarestorage.com")
    region: str = setting("auto", "s3: region ('auto' for R2)")
    prefix: str = setting("", "s3: key prefix inside the bucket")
    profile: str = setting("", "s3: named AWS profile for credentials (else the AWS_* variables)")
    concurrency: int = setting(16, "parallel uploads", between=(1, 256))
    multipart_threshold_mb: int = setting(
        16, "files at least this large upload in parts", between=(5, 5120)
    )
    gc_grace_hours: float = setting(
        48.0, "gc never deletes a blob or pack younger than this", between=(1, 8760)
    )
    layout: str = setting(
        "packs",
        "'packs' (a publish's new blobs in a few pack objects, read by byte range) or 'loose'"
        " (one key per blob, for stores served by something that only knows keys)",
    )
    pack_mb: int = setting(16, "largest pack a publish writes, in MB", between=(1, 1024))

    @property
    def pack_limit(self) -> int | None:
        """The largest pack in bytes; None when blobs go up as loose keys."""
        return self.pack_mb << 20 if self.layout == "packs" else None

    max_attempts: int = setting(
        5,
        "s3: attempts per request, with backoff on throttling and 5xx (botocore standard retry mode)",
        between=(1, 20),
    )


@dataclass(frozen=True, kw_only=True)
class MirrorConfig:
    enabled: bool = setting(
        True,
        "sync the local mirror folder after each publish (false when a separate mirror host runs 'render mirror sync')",
    )
    path: str = setting("", "local mirror root; default <state>/mirror")
    keep: int = setting(3, "releases kept per site on the mirror", between=(1, 1000))
    interval: int = setting(60, "seconds between mirror syncs when polling", between=(1, 86400))
    concurrency: int = setting(
        8, "blobs a mirror sync downloads at the same time", between=(1, 256)
    )


@dataclass(frozen=True, kw_only=True)
class OriginConfig:
    bind: str = setting(
        "127.0.0.1:8100", "render origin: address and port it listens on (nginx in front)"
    )
    workers: int = setting(
        1,
        "render origin: server processes (each keeps its own caches and renders)",
        between=(1, 64),
    )
    server: str = setting(
        "granian", "render origin: the ASGI server, 'granian' or 'uvicorn' (README: The origin)"
    )
    max_wait_ms: int = setting(
        2000,
        "a request for a stale page waits this long for its render, then gets the last published page",
        between=(0, 600_000),
    )
    max_pending: int = setting(
        64,
        "renders on request queued per site; past it the last published page is served at once",
        between=(1, 100_000),
    )
    cache_mb: int = setting(
        256, "bytes of pages and files the origin keeps in memory", between=(1, 1 << 20)
    )
    refresh_seconds: float = setting(
        2.0, "how often root.json is re-read (a publish shows within this)", between=(0.1, 3600)
    )


@dataclass(frozen=True, kw_only=True)
class CdnConfig:
    kind: str = setting("none", "'none' or 'cloudflare'")
    zone_id: str = setting("", "cloudflare: zone id")
    token_env: str = setting(
        "CLOUDFLARE_API_TOKEN", "cloudflare: environment variable holding the API token"
    )
    api_url: str = setting("https://api.cloudflare.com/client/v4", "cloudflare: API base URL")
    files_per_request: int = setting(
        100, "cloudflare: URLs per purge request (Cloudflare accepts at most 100)", between=(1, 100)
    )
    max_urls: int = setting(
        1000,
        "cloudflare: above this many changed URLs, purge the site's host or path prefix instead",
        between=(1, 1_000_000),
    )
    min_interval: float = setting(
        0.25, "cloudflare: seconds between two purge requests", between=(0, 60)
    )
    max_attempts: int = setting(
        5, "cloudflare: attempts per purge request on 429, 5xx and network errors", between=(1, 20)
    )
    max_wait: float = setting(
        120.0,
        "cloudflare: most seconds one purge spends waiting on rate limits and retries",
        between=(0, 3600),
    )


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    default: str = setting("0 3 * * *", "cron string (crontab meaning) for sites without their own")
    jitter: int = setting(
        600, "seconds of per-site deterministic spread after the cron time", between=(0, 86400)
    )
    workers: int = setting(1, "builds that run at the same time in the daemon", between=(1, 64))
    poll: int = setting(30, "seconds between checks of auto sites' databases", between=(1, 3600))
    debounce: int = setting(
        120, "quiet seconds after an edit before an auto rebuild", between=(0, 86400)
    )
    misfire_grace: int = setting(
        86400, "seconds a missed run may still start late", between=(1, 31 * 86400)
    )
    executor: str = setting(
        "local",
        "'local' (this machine's process pool) or 'celery' (Celery workers through a Redis broker)",
    )
    broker_url: str = field(
        default="",
        repr=False,  # a password may be in it: never in a repr, a log or a traceback
        metadata={
            "doc": "celery: redis:// URL of the broker and result backend; $RENDER_BROKER_URL wins"
        },
    )
    build_timeout: int = setting(
        3600,
        "celery: longest allowed site build in seconds (the broker's visibility timeout)",
        between=(10, 7 * 86400),
    )
    lock_lease: int = setting(
        60, "celery: seconds a site's lock in Redis lives unless renewed", between=(2, 3600)
    )
    audits: str = setting(
        "inline",
        "celery: 'inline' (a build audits its own tree) or 'queue' (the build stages the version"
        " and a task on the 'audits' queue audits it, then switches the root)",
    )


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    workers: int = setting(
        2, "render processes per site build (1 for small sites)", between=(1, 64)
    )
    template_cpu_seconds: int = setting(
        10, "CPU seconds one page may take to compile and render", between=(1, 3600)
    )
    template_memory_mb: int = setting(
        1024, "address space of a render process", between=(64, 1 << 20)
    )
    page_max_bytes: int = setting(10_000_000, "largest rendered page", between=(1024, 1 << 30))
    query_seconds: float = setting(5.0, "time limit of one tenant query", between=(0.01, 3600))
    sql_max_length: int = setting(100_000, "longest tenant SQL statement", between=(1, 10_000_000))
    static_file_max_bytes: int = setting(
        100_000_000, "largest file in a site's static folder", between=(1, 10**12)
    )
    static_site_max_bytes: int = setting(
        2_000_000_000, "most bytes of static files one site may publish", between=(1, 10**13)
    )
    query_max_bytes: int = setting(
        256_000_000,
        "largest result of one tenant query (a site's route queries count together)",
        between=(1024, 10**12),
    )
    row_max_bytes: int = setting(
        64_000_000, "largest row, string or blob a tenant query may return", between=(1024, 10**12)
    )


@dataclass(frozen=True, kw_only=True)
class HostConfig:
    """The parsed ``render.toml``; paths are absolute."""

    path: Path
    root: Path
    host: HostSection
    store: StoreConfig
    mirror: MirrorConfig
    origin: OriginConfig
    cdn: CdnConfig
    schedule: ScheduleConfig
    limits: LimitsConfig

    @property
    def sites_dir(self) -> Path:
        return self.root / self.host.sites

    @property
    def state_dir(self) -> Path:
        return self.root / self.host.state

    @property
    def store_path(self) -> Path:
        return self.root / self.store.path if self.store.path else self.state_dir / "store"

    @property
    def mirror_path(self) -> Path:
        return self.root / self.mirror.path if self.mirror.path else self.state_dir / "mirror"

    def site_state(self, kind: str, site: SiteId) -> Path:
        """``<state>/<kind>/<owner>/<name>``: a site's records, where no tenant can write.

        ``load_host`` keeps the state folder out of the sites folder, and a
        ``SiteId`` is two plain folder names, so the path stays under the state
        folder; the check below says so where the records are read and written.
        """
        path = self.state_dir / kind / site.owner / site.name
        if path.parent.parent.parent != self.state_dir or not is_site_id(path.name):
            raise ValueError(f"{kind} folder of {site} leaves the state folder: {path}")
        return path


# --- site sections ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SiteSection:
    base_url: str = required("absolute http(s) URL the site is served at")
    database: str = setting("site.db", "the tenant's SQLite database, relative to the site folder")
    templates: str = setting("templates", "Jinja templates folder")
    static: str = setting("static", "folder copied verbatim into the output")
    schedule: str = setting("", "cron string (crontab meaning); the host default when empty")
    timezone: str = setting("UTC", "time zone of the schedule")
    auto: bool = setting(False, "rebuild automatically after edits to the database")
    service_worker: bool = setting(
        True, "ship /sw.js, which keeps each visit on one version (README: a site changes)"
    )
    owner: str = setting(
        "", "owner id: always the parent folder's name; when given, it must equal it"
    )
    name: str = setting("", "site name: always the folder's name; when given, it must equal it")


@dataclass(frozen=True, kw_only=True)
class Route:
    path: str = required("URL pattern; {column} is filled from each row")
    template: str = required("template to render")
    query: str = setting(
        "", "SQL; without {placeholders} the rows go to one page (or a paginated list)"
    )
    paginate: int = setting(
        0, "rows per page for a list route (0: no pagination)", between=(0, 100_000)
    )
    lastmod: str = setting("", "column holding the page's last-modified date, for the sitemap")
    index: int = setting(0, "position in site.toml (set by the loader)")


@dataclass(frozen=True, kw_only=True)
class RobotsRule:
    user_agent: str = setting("*", "robots.txt User-agent")
    allow: tuple[str, ...] = setting((), "paths allowed")
    disallow: tuple[str, ...] = setting((), "paths disallowed")


@dataclass(frozen=True, kw_only=True)
class SeoConfig:
    lang: str = setting("en", "default <html lang>")
    block_on_errors: bool = setting(True, "SEO lint errors block the publish")
    robots: tuple[RobotsRule, ...] = setting((), "[[seo.robots]] groups; default: allow everything")
    rules: Mapping[str, str] = field(
        default_factory=dict,
        metadata={"doc": "per-rule severity overrides: 'error', 'warning' or 'off'"},
    )


@dataclass(frozen=True, kw_only=True)
class LighthouseConfig:
    enabled: bool = setting(True, "run Lighthouse and the no-JavaScript read before publishing")
    chromium: str = setting("", "Chromium binary; default $RENDER_CHROMIUM or /usr/bin/chromium")
    pages_per_route: int = setting(
        1, "pages audited per route (plus the home page)", between=(0, 100)
    )
    runs: int = setting(1, "runs per page; the median is kept", between=(1, 10))
    parallel: int = setting(2, "audits at the same time", between=(1, 16))
    timeout: int = setting(120, "seconds one audit may take before it is killed", between=(1, 3600))
    form_factor: str = setting("mobile", "'mobile' or 'desktop'")
    settle_ms: int = setting(
        250,
        "quiet Lighthouse waits for after FCP, load, network and CPU (its own default 1000)",
        # shorter, and Lighthouse ends the trace before paints are reported
        between=(100, 10_000),
    )
    block: bool = setting(False, "a score under budget blocks the publish (else a warning)")
    budgets: Mapping[str, float] = field(
        default_factory=dict,
        metadata={"doc": "minimum score per category, e.g. seo = 1.0"},
    )


@dataclass(frozen=True, kw_only=True)
class SiteConfig:
    """The parsed ``site.toml`` of one site; paths are absolute."""

    id: SiteId
    root: Path
    path: Path
    site: SiteSection
    queries: Mapping[str, str]
    routes: tuple[Route, ...]
    seo: SeoConfig
    lighthouse: LighthouseConfig
    source_hash: str = ""  # sha256 of the site.toml bytes read: the file is never read twice

    @property
    def base_url(self) -> str:
        return self.site.base_url.rstrip("/")

    @property
    def database(self) -> Path:
        return self.root / self.site.database

    @property
    def templates(self) -> Path:
        return self.root / self.site.templates

    @property
    def static(self) -> Path:
        return self.root / self.site.static


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``$RENDER_CONFIG``, else ``./render.toml``."""
    chosen = explicit or os.environ.get("RENDER_CONFIG") or HOST_FILE
    return Path(chosen).absolute()


def load_host(path: str | os.PathLike[str] | None = None) -> HostConfig:
    """Read and validate ``render.toml``; raise one ``ConfigError`` with every problem."""
    file = config_path(path)
    if not file.exists():
        raise ConfigError(
            f"{file}: file not found",
            hint="run 'render init --demo' to create a host here, or pass --config PATH",
        )
    data, _ = read_toml(file, file.parent)
    problems = Problems(file, file.parent)
    sections: dict[str, Any] = {}
    for key, cls in (
        ("host", HostSection),
        ("store", StoreConfig),
        ("mirror", MirrorConfig),
        ("origin", OriginConfig),
        ("cdn", CdnConfig),
        ("schedule", ScheduleConfig),
        ("limits", LimitsConfig),
    ):
        sections[key] = parse_table(pop_table(data, key), cls, key, problems)
    for key in data:
        close = difflib.get_close_matches(key, list(sections), n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        problems.add("", f"unknown key '{key}'{suggestion}")
    store: StoreConfig = sections["store"]
    if store.kind not in ("local", "s3"):
        problems.add("store.kind", f"expected 'local' or 's3', got {store.kind!r}")
    if store.layout not in ("packs", "loose"):
        problems.add("store.layout", f"expected 'packs' or 'loose', got {store.layout!r}")
    if store.kind == "s3" and not store.bucket:
        problems.add("store.bucket", "required when store.kind = 's3'")
    if sections["cdn"].kind not in ("none", "cloudflare"):
        problems.add("cdn.kind", f"expected 'none' or 'cloudflare', got {sections['cdn'].kind!r}")
    _check_cdn(sections["cdn"], problems)
    _check_tenant_free(file.parent, sections, problems)
    sched: ScheduleConfig = sections["schedule"]
    if (why := cron.problem(sched.default)) is not None:
        problems.add("schedule.default", why)
    if sections["origin"].server not in ("granian", "uvicorn"):
        problems.add(
            "origin.server", f"expected 'granian' or 'uvicorn', got {sections['origin'].server!r}"
        )
    if sched.executor not in ("local", "celery"):
        problems.add("schedule.executor", f"expected 'local' or 'celery', got {sched.executor!r}")
    if sched.audits not in ("inline", "queue"):
        problems.add("schedule.audits", f"expected 'inline' or 'queue', got {sched.audits!r}")
    if problems.items:
        raise ConfigError(problems.items)
    return HostConfig(path=file, root=file.parent, **sections)


def _check_tenant_free(root: Path, sections: Mapping[str, Any], problems: Problems) -> None:
    """The folders render reads back (state, local store, mirror) and the sites folder never overlap.

    Tenants write under the sites folder; render unpickles its build records
    from the state folder and trusts what the store and the mirror hold.
    """
    host: HostSection = sections["host"]
    sites = (root / host.sites).resolve()
    owned = [("host.state", host.state)]
    if sections["store"].kind == "local" and sections["store"].path:
        owned.append(("store.path", sections["store"].path))
    if sections["mirror"].path:
        owned.append(("mirror.path", sections["mirror"].path))
    for key, value in owned:
        folder = (root / value).resolve()
        if folder.is_relative_to(sites) or sites.is_relative_to(folder):
            problems.add(
                key, f"{value!r} overlaps the sites folder {host.sites!r}, which tenants write"
            )


def _check_cdn(cdn: CdnConfig, problems: Problems) -> None:
    if cdn.kind == "cloudflare" and not cdn.zone_id:
        problems.add("cdn.zone_id", "required when cdn.kind = 'cloudflare'")
    if cdn.kind == "cloudflare" and not cdn.token_env:
        problems.add("cdn.token_env", "required when cdn.kind = 'cloudflare'")
    if urlsplit(cdn.api_url).scheme not in ("http", "https"):
        problems.add("cdn.api_url", f"must be an http(s) URL, got {cdn.api_url!r}")


def site_dirs(host: HostConfig) -> list[Path]:
    """Every ``sites/<owner>/<name>`` folder that holds a ``site.toml``, sorted."""
    if not host.sites_dir.is_dir():
        return []
    return sorted(p.parent for p in host.sites_dir.glob(f"*/*/{SITE_FILE}"))


def load_site(folder: Path, *, host: HostConfig) -> SiteConfig:
    """Read and validate one ``site.toml``; raise one ``ConfigError`` with every problem."""
    file = folder / SITE_FILE
    default_id = f"{folder.parent.name}/{folder.name}"
    for part in (folder.parent.name, folder.name):
        if not is_site_id(part):
            problems = Problems(file, host.root)
            problems.add("", f"the folder name {part!r} is not a site id: use {SITE_ID_RULE}")
            raise ConfigError(problems.items, site=default_id, hint="rename the folder")
    site_id = SiteId(owner=folder.parent.name, name=folder.name)
    try:
        data, source_hash = read_toml(file, host.root, follow_links=False)
    except ConfigError as exc:
        raise exc.with_site(default_id) from None
    problems = Problems(file, host.root)
    site = parse_table(pop_table(data, "site"), SiteSection, "site", problems)
    raw_queries = pop_table(data, "queries")
    queries: dict[str, str] = {}
    if not isinstance(raw_queries, dict):
        problems.add("queries", f"expected a table, got {type_name(raw_queries)}")
    else:
        for name, sql in raw_queries.items():
            if not isinstance(sql, str):
                problems.add(f"queries.{name}", f"expected a string, got {type_name(sql)}")
            elif not name.isidentifier():
                problems.add(f"queries.{name}", "a query name must be an identifier")
            else:
                queries[name] = sql
    raw_routes = data.pop("routes", [])
    routes: list[Route] = []
    if not isinstance(raw_routes, list):
        problems.add("routes", "expected an array of tables ([[routes]])")
        raw_routes = []
    for i, raw in enumerate(raw_routes):
        where = f"routes[{i}]"
        if isinstance(raw, dict) and "index" in raw:
            problems.add(where, "unknown key 'index'")
            raw = {k: v for k, v in raw.items() if k != "index"}
        route = parse_table(raw, Route, where, problems)
        route = Route(**{**{f.name: getattr(route, f.name) for f in fields(Route)}, "index": i})
        siterules.check_route(route, where, problems)
        routes.append(route)
    seo = parse_table(pop_table(data, "seo"), SeoConfig, "seo", problems)
    lighthouse = parse_table(
        pop_table(data, "lighthouse"), LighthouseConfig, "lighthouse", problems
    )
    for key in data:
        known = ["site", "queries", "routes", "seo", "lighthouse"]
        close = difflib.get_close_matches(key, known, n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        problems.add("", f"unknown key '{key}'{suggestion}")
    siterules.check_site(site, folder, problems)
    siterules.check_seo(seo, problems)
    siterules.check_lighthouse(lighthouse, problems)
    siterules.check_site_id(site, site_id, problems)
    if problems.items:
        raise ConfigError(problems.items, site=str(site_id))
    return SiteConfig(
        id=site_id,
        root=folder.resolve(),
        path=file,
        site=site,
        queries=types.MappingProxyType(queries),
        routes=tuple(routes),
        seo=seo,
        lighthouse=lighthouse,
        source_hash=source_hash,
    )


def find_site(host: HostConfig, name: str) -> Path:
    """The folder of ``owner/name``, or of ``name`` where it is unique."""
    dirs = site_dirs(host)
    if "/" in name:
        owner, _, site = name.partition("/")
        folder = host.sites_dir / owner / site
        if folder in dirs:  # a site.toml that is no regular file is load_site's to report
            return folder
        raise UsageError(
            f"no site {name!r} under {host.sites_dir}", hint="'render status' lists the sites"
        )
    matches = [d for d in dirs if d.name == name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(
            f"no site {name!r} under {host.sites_dir}", hint="'render status' lists the sites"
        )
    owners = ", ".join(f"{d.parent.name}/{d.name}" for d in matches)
    raise UsageError(f"site name {name!r} is ambiguous: {owners}", hint="use owner/name")
