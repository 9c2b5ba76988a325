"""Reading and validating ``render.toml`` (the host) and each ``site.toml``.

Every problem in a file is collected and reported at once, each naming the
file and the key. Sections are frozen dataclasses; each field carries a
one-line ``doc`` that the README's configuration table must match (a test
checks it).
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import math
import os
import re
import stat
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from render import cron
from render.errors import ConfigError, UsageError
from render.paths import parse_pattern

HOST_FILE = "render.toml"
SITE_FILE = "site.toml"
MAX_CONFIG_BYTES = 1 << 20  # a larger render.toml or site.toml is refused, not read

T = TypeVar("T")


def _f(default: Any, doc: str, *, between: tuple[float, float] | None = None) -> Any:
    """A config field with its default and its one-line documentation.

    A number (int or float) also declares ``between=(lowest, highest)``, both
    allowed; the loader reports a value outside it, and any float that is not
    finite, as a problem of the file (a test checks every number has a range).
    """
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples and mappings for config defaults")
    metadata: dict[str, object] = {"doc": doc}
    if between is not None:
        low, high = between
        if not low <= default <= high:
            raise ValueError(f"default {default!r} is outside {between}")
        metadata["between"] = between
    return field(default=default, metadata=metadata)


def _required(doc: str) -> Any:
    return field(metadata={"doc": doc, "required": True})


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
    sites: str = _f("sites", "folder holding sites/<owner>/<name>/site.toml")
    state: str = _f(".render", "state folder: ledger, snapshots, builds, local store and mirror")


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    kind: str = _f("local", "'local' (a folder) or 's3' (Cloudflare R2 or any S3-compatible store)")
    path: str = _f("", "local store folder; default <state>/store")
    bucket: str = _f("", "s3: bucket name")
    endpoint_url: str = _f("", "s3: endpoint, e.g. https://<account>.r2.cloudflarestorage.com")
    region: str = _f("auto", "s3: region ('auto' for R2)")
    prefix: str = _f("", "s3: key prefix inside the bucket")
    profile: str = _f("", "s3: named AWS profile for credentials (else the AWS_* variables)")
    concurrency: int = _f(16, "parallel uploads", between=(1, 256))
    multipart_threshold_mb: int = _f(
        16, "files at least this large upload in parts", between=(5, 5120)
    )
    gc_grace_hours: float = _f(48.0, "gc never deletes a blob younger than this", between=(1, 8760))
    max_attempts: int = _f(
        5,
        "s3: attempts per request, with backoff on throttling and 5xx (botocore standard retry mode)",
        between=(1, 20),
    )


@dataclass(frozen=True, kw_only=True)
class MirrorConfig:
    enabled: bool = _f(
        True,
        "sync the local mirror folder after each publish (false when a separate mirror host runs 'render mirror sync')",
    )
    path: str = _f("", "local mirror root; default <state>/mirror")
    keep: int = _f(3, "releases kept per site on the mirror", between=(1, 1000))
    interval: int = _f(60, "seconds between mirror syncs when polling", between=(1, 86400))
    concurrency: int = _f(8, "blobs a mirror sync downloads at the same time", between=(1, 256))


@dataclass(frozen=True, kw_only=True)
class OriginConfig:
    bind: str = _f(
        "127.0.0.1:8100", "render origin: address and port it listens on (nginx in front)"
    )
    workers: int = _f(
        1,
        "render origin: server processes (each keeps its own caches and renders)",
        between=(1, 64),
    )
    max_wait_ms: int = _f(
        2000,
        "a request for a stale page waits this long for its render, then gets the last published page",
        between=(0, 600_000),
    )
    max_pending: int = _f(
        64,
        "renders on request queued per site; past it the last published page is served at once",
        between=(1, 100_000),
    )
    cache_mb: int = _f(
        256, "bytes of pages and files the origin keeps in memory", between=(1, 1 << 20)
    )
    refresh_seconds: float = _f(
        2.0, "how often root.json is re-read (a publish shows within this)", between=(0.1, 3600)
    )


@dataclass(frozen=True, kw_only=True)
class CdnConfig:
    kind: str = _f("none", "'none' or 'cloudflare'")
    zone_id: str = _f("", "cloudflare: zone id")
    token_env: str = _f(
        "CLOUDFLARE_API_TOKEN", "cloudflare: environment variable holding the API token"
    )
    api_url: str = _f("https://api.cloudflare.com/client/v4", "cloudflare: API base URL")
    files_per_request: int = _f(
        100, "cloudflare: URLs per purge request (Cloudflare accepts at most 100)", between=(1, 100)
    )
    max_urls: int = _f(
        1000,
        "cloudflare: above this many changed URLs, purge the site's host or path prefix instead",
        between=(1, 1_000_000),
    )
    min_interval: float = _f(
        0.25, "cloudflare: seconds between two purge requests", between=(0, 60)
    )
    max_attempts: int = _f(
        5, "cloudflare: attempts per purge request on 429, 5xx and network errors", between=(1, 20)
    )
    max_wait: float = _f(
        120.0,
        "cloudflare: most seconds one purge spends waiting on rate limits and retries",
        between=(0, 3600),
    )


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    default: str = _f("0 3 * * *", "cron string (crontab meaning) for sites without their own")
    jitter: int = _f(
        600, "seconds of per-site deterministic spread after the cron time", between=(0, 86400)
    )
    workers: int = _f(1, "builds that run at the same time in the daemon", between=(1, 64))
    poll: int = _f(30, "seconds between checks of auto sites' databases", between=(1, 3600))
    debounce: int = _f(
        120, "quiet seconds after an edit before an auto rebuild", between=(0, 86400)
    )
    misfire_grace: int = _f(
        86400, "seconds a missed run may still start late", between=(1, 31 * 86400)
    )


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    workers: int = _f(2, "render processes per site build (1 for small sites)", between=(1, 64))
    template_cpu_seconds: int = _f(
        10, "CPU seconds one page may take to compile and render", between=(1, 3600)
    )
    template_memory_mb: int = _f(1024, "address space of a render process", between=(64, 1 << 20))
    page_max_bytes: int = _f(10_000_000, "largest rendered page", between=(1024, 1 << 30))
    query_seconds: float = _f(5.0, "time limit of one tenant query", between=(0.01, 3600))
    sql_max_length: int = _f(100_000, "longest tenant SQL statement", between=(1, 10_000_000))
    static_file_max_bytes: int = _f(
        100_000_000, "largest file in a site's static folder", between=(1, 10**12)
    )
    static_site_max_bytes: int = _f(
        2_000_000_000, "most bytes of static files one site may publish", between=(1, 10**13)
    )
    query_max_bytes: int = _f(
        256_000_000,
        "largest result of one tenant query (a site's route queries count together)",
        between=(1024, 10**12),
    )
    row_max_bytes: int = _f(
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
    base_url: str = _required("absolute http(s) URL the site is served at")
    database: str = _f("site.db", "the tenant's SQLite database, relative to the site folder")
    templates: str = _f("templates", "Jinja templates folder")
    static: str = _f("static", "folder copied verbatim into the output")
    schedule: str = _f("", "cron string (crontab meaning); the host default when empty")
    timezone: str = _f("UTC", "time zone of the schedule")
    auto: bool = _f(False, "rebuild automatically after edits to the database")
    owner: str = _f("", "owner id: always the parent folder's name; when given, it must equal it")
    name: str = _f("", "site name: always the folder's name; when given, it must equal it")


@dataclass(frozen=True, kw_only=True)
class Route:
    path: str = _required("URL pattern; {column} is filled from each row")
    template: str = _required("template to render")
    query: str = _f("", "SQL; without {placeholders} the rows go to one page (or a paginated list)")
    paginate: int = _f(0, "rows per page for a list route (0: no pagination)", between=(0, 100_000))
    lastmod: str = _f("", "column holding the page's last-modified date, for the sitemap")
    index: int = _f(0, "position in site.toml (set by the loader)")


@dataclass(frozen=True, kw_only=True)
class RobotsRule:
    user_agent: str = _f("*", "robots.txt User-agent")
    allow: tuple[str, ...] = _f((), "paths allowed")
    disallow: tuple[str, ...] = _f((), "paths disallowed")


@dataclass(frozen=True, kw_only=True)
class SeoConfig:
    lang: str = _f("en", "default <html lang>")
    block_on_errors: bool = _f(True, "SEO lint errors block the publish")
    robots: tuple[RobotsRule, ...] = _f((), "[[seo.robots]] groups; default: allow everything")
    rules: Mapping[str, str] = field(
        default_factory=dict,
        metadata={"doc": "per-rule severity overrides: 'error', 'warning' or 'off'"},
    )


@dataclass(frozen=True, kw_only=True)
class LighthouseConfig:
    enabled: bool = _f(True, "run Lighthouse and the no-JavaScript read before publishing")
    chromium: str = _f("", "Chromium binary; default $RENDER_CHROMIUM or /usr/bin/chromium")
    pages_per_route: int = _f(1, "pages audited per route (plus the home page)", between=(0, 100))
    runs: int = _f(1, "runs per page; the median is kept", between=(1, 10))
    parallel: int = _f(2, "audits at the same time", between=(1, 16))
    timeout: int = _f(120, "seconds one audit may take before it is killed", between=(1, 3600))
    form_factor: str = _f("mobile", "'mobile' or 'desktop'")
    settle_ms: int = _f(
        250,
        "quiet Lighthouse waits for after FCP, load, network and CPU (its own default 1000)",
        # shorter, and Lighthouse ends the trace before paints are reported
        between=(100, 10_000),
    )
    block: bool = _f(False, "a score under budget blocks the publish (else a warning)")
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


# --- parsing ---------------------------------------------------------------


class _Problems:
    def __init__(self, file: Path, base: Path) -> None:
        try:
            self.name = str(file.relative_to(base))
        except ValueError:
            self.name = str(file)
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(
            f"{self.name}: {where}: {message}" if where else f"{self.name}: {message}"
        )


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _convert(value: object, hint: Any, where: str, problems: _Problems) -> object:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.add(where, f"expected a boolean, got {_type_name(value)}")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.add(where, f"expected an integer, got {_type_name(value)}")
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            problems.add(where, f"expected a finite number, got {_number(value)}")
            return None
        problems.add(where, f"expected a number, got {_type_name(value)}")
    elif hint is str:
        if isinstance(value, str):
            return value
        problems.add(where, f"expected a string, got {_type_name(value)}")
    elif origin is tuple:
        (item,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if not isinstance(value, list):
            problems.add(where, f"expected an array, got {_type_name(value)}")
            return ()
        return tuple(_convert(v, item, f"{where}[{i}]", problems) for i, v in enumerate(value))
    elif origin is Mapping:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            problems.add(where, f"expected a table, got {_type_name(value)}")
            return {}
        converted = {k: _convert(v, item, f"{where}.{k}", problems) for k, v in value.items()}
        return types.MappingProxyType({k: v for k, v in converted.items() if v is not None})
    elif isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _parse_table(value, hint, where, problems)
    else:  # pragma: no cover - a new field type without a converter is a bug
        raise TypeError(f"no converter for {hint!r}")
    return None


def _number(value: float) -> str:
    """A number as TOML would write it: ``5``, ``0.25``, ``nan``, ``1e+308``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _check_range(value: object, f: Any, where: str, problems: _Problems) -> None:
    """The one range check: every number field declares ``between`` next to it (``_f``)."""
    between = f.metadata.get("between")
    if between is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = between
    if not low <= value <= high:
        problems.add(
            where, f"must be between {_number(low)} and {_number(high)}, got {_number(value)}"
        )


def _parse_table(data: object, cls: type[T], where: str, problems: _Problems) -> T:
    if not isinstance(data, dict):
        problems.add(where, f"expected a table, got {_type_name(data)}")
        data = {}
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, object] = {}
    prefix = f"{where}." if where else ""
    for key, value in data.items():
        if key not in known or key == "index":
            close = difflib.get_close_matches(key, [k for k in known if k != "index"], n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            problems.add("", f"unknown key '{prefix}{key}'{suggestion}")
            continue
        converted = _convert(value, hints[key], f"{prefix}{key}", problems)
        if converted is not None:
            _check_range(converted, known[key], f"{prefix}{key}", problems)
            values[key] = converted
    for name, f in known.items():
        if f.metadata.get("required") and name not in values and name not in data:
            problems.add("", f"missing required key '{prefix}{name}'")
    try:
        return cls(**values)
    except TypeError:
        # required keys missing (already reported): build with placeholders
        for name, f in known.items():
            if name not in values and f.default is MISSING and f.default_factory is MISSING:
                values[name] = ""
        return cls(**values)


class _Unreadable(Exception):
    """A config file that is not a small regular file (the message says what it is)."""


def _read_regular(path: Path, *, follow_links: bool) -> bytes:
    """The bytes of a regular file of at most ``MAX_CONFIG_BYTES``; never blocks.

    ``O_NONBLOCK`` makes opening a FIFO return at once (and ``fstat`` then
    refuses it); ``O_NOFOLLOW`` refuses a symbolic link where the file must be
    the tenant's own.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise _Unreadable("is a symbolic link; it must be a regular file") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _Unreadable(f"is {_file_kind(mode)}, not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise _Unreadable(f"is larger than {MAX_CONFIG_BYTES >> 10} KiB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a device or socket"


def _not_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    at = exc.start
    line = data.count(b"\n", 0, at) + 1
    column = at - (data.rfind(b"\n", 0, at) + 1) + 1
    return (
        f"line {line}, column {column}: byte 0x{data[at]:02x} (offset {at}) is not UTF-8;"
        " save the file as UTF-8"
    )


def _read_toml(
    path: Path,
    base: Path,
    error_cls: type[ConfigError] = ConfigError,
    *,
    follow_links: bool = True,
) -> tuple[dict[str, Any], str]:
    """The parsed file and the sha256 of its bytes; one ``error_cls`` when it cannot be read."""
    problems = _Problems(path, base)
    data = b""
    try:
        data = _read_regular(path, follow_links=follow_links)
        return tomllib.loads(data.decode("utf-8")), hashlib.sha256(data).hexdigest()
    except FileNotFoundError:
        problems.add("", "file not found")
    except _Unreadable as exc:
        problems.add("", str(exc))
    except UnicodeDecodeError as exc:
        problems.add("", _not_utf8(data, exc))
    except tomllib.TOMLDecodeError as exc:
        problems.add("", f"invalid TOML: {exc}")
    except OSError as exc:
        problems.add("", f"cannot read: {exc.strerror}")
    raise error_cls(problems.items)


def _pop_table(data: dict[str, Any], key: str) -> Any:
    return data.pop(key, {})


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
    data, _ = _read_toml(file, file.parent)
    problems = _Problems(file, file.parent)
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
        sections[key] = _parse_table(_pop_table(data, key), cls, key, problems)
    for key in data:
        close = difflib.get_close_matches(key, list(sections), n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        problems.add("", f"unknown key '{key}'{suggestion}")
    store: StoreConfig = sections["store"]
    if store.kind not in ("local", "s3"):
        problems.add("store.kind", f"expected 'local' or 's3', got {store.kind!r}")
    if store.kind == "s3" and not store.bucket:
        problems.add("store.bucket", "required when store.kind = 's3'")
    if sections["cdn"].kind not in ("none", "cloudflare"):
        problems.add("cdn.kind", f"expected 'none' or 'cloudflare', got {sections['cdn'].kind!r}")
    _check_cdn(sections["cdn"], problems)
    _check_tenant_free(file.parent, sections, problems)
    sched: ScheduleConfig = sections["schedule"]
    if (why := cron.problem(sched.default)) is not None:
        problems.add("schedule.default", why)
    if problems.items:
        raise ConfigError(problems.items)
    return HostConfig(path=file, root=file.parent, **sections)


def _check_tenant_free(root: Path, sections: Mapping[str, Any], problems: _Problems) -> None:
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


def _check_cdn(cdn: CdnConfig, problems: _Problems) -> None:
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
            problems = _Problems(file, host.root)
            problems.add("", f"the folder name {part!r} is not a site id: use {SITE_ID_RULE}")
            raise ConfigError(problems.items, site=default_id, hint="rename the folder")
    site_id = SiteId(owner=folder.parent.name, name=folder.name)
    try:
        data, source_hash = _read_toml(file, host.root, follow_links=False)
    except ConfigError as exc:
        raise exc.with_site(default_id) from None
    problems = _Problems(file, host.root)
    site = _parse_table(_pop_table(data, "site"), SiteSection, "site", problems)
    raw_queries = _pop_table(data, "queries")
    queries: dict[str, str] = {}
    if not isinstance(raw_queries, dict):
        problems.add("queries", f"expected a table, got {_type_name(raw_queries)}")
    else:
        for name, sql in raw_queries.items():
            if not isinstance(sql, str):
                problems.add(f"queries.{name}", f"expected a string, got {_type_name(sql)}")
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
        route = _parse_table(raw, Route, where, problems)
        route = Route(**{**{f.name: getattr(route, f.name) for f in fields(Route)}, "index": i})
        _check_route(route, where, problems)
        routes.append(route)
    seo = _parse_table(_pop_table(data, "seo"), SeoConfig, "seo", problems)
    lighthouse = _parse_table(
        _pop_table(data, "lighthouse"), LighthouseConfig, "lighthouse", problems
    )
    for key in data:
        known = ["site", "queries", "routes", "seo", "lighthouse"]
        close = difflib.get_close_matches(key, known, n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        problems.add("", f"unknown key '{key}'{suggestion}")
    _check_site(site, folder, problems)
    _check_seo(seo, problems)
    _check_lighthouse(lighthouse, problems)
    _check_site_id(site, site_id, problems)
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


def _check_site_id(site: SiteSection, site_id: SiteId, problems: _Problems) -> None:
    """``[site] owner`` and ``name`` may only repeat the folders' names: the id is the folder's."""
    for key, folder_value in (("owner", site_id.owner), ("name", site_id.name)):
        value = getattr(site, key)
        if value and value != folder_value:
            problems.add(
                f"site.{key}",
                f"must be the folder's {key} {folder_value!r} (sites/{site_id}/), got {value!r};"
                f" a site's id is its folder",
            )


def _check_site(site: SiteSection, folder: Path, problems: _Problems) -> None:
    if site.base_url:
        parts = urlsplit(site.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.add("site.base_url", f"must be an absolute http(s) URL, got {site.base_url!r}")
    root = folder.resolve()
    for key in ("database", "templates", "static"):
        value = getattr(site, key)
        target = (root / value).resolve()
        if Path(value).is_absolute() or not target.is_relative_to(root):
            problems.add(f"site.{key}", f"must stay inside the site folder, got {value!r}")
    if site.schedule and (why := cron.problem(site.schedule)) is not None:
        problems.add("site.schedule", why)
    try:
        zoneinfo.ZoneInfo(site.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.add("site.timezone", f"unknown time zone {site.timezone!r}")


def _check_route(route: Route, where: str, problems: _Problems) -> None:
    if route.path:
        try:
            pattern = parse_pattern(route.path)
        except ValueError as exc:
            problems.add(f"{where}.path", str(exc))
            return
        if route.path == "/_render" or route.path.startswith("/_render/"):
            problems.add(f"{where}.path", "/_render/ is reserved for render's own files")
        if pattern.placeholders and not route.query:
            problems.add(f"{where}.query", f"required: path {route.path!r} has placeholders")
        if pattern.placeholders and route.paginate:
            problems.add(f"{where}.paginate", "a path with {placeholders} cannot be paginated")
        if route.paginate and pattern.is_file:
            problems.add(f"{where}.paginate", "a file path cannot be paginated")
    if route.template and (route.template.startswith("/") or ".." in route.template.split("/")):
        problems.add(
            f"{where}.template",
            f"must be a path inside the templates folder, got {route.template!r}",
        )


def _check_seo(seo: SeoConfig, problems: _Problems) -> None:
    for rule, level in seo.rules.items():
        if level not in ("error", "warning", "off"):
            problems.add(
                f"seo.rules.{rule}", f"expected 'error', 'warning' or 'off', got {level!r}"
            )
    for i, group in enumerate(seo.robots):
        where = f"seo.robots[{i}]"
        if not group.user_agent.strip() or any(c in group.user_agent for c in "\r\n#"):
            problems.add(
                f"{where}.user_agent", f"must be one non-empty line, got {group.user_agent!r}"
            )
        for key in ("allow", "disallow"):
            for j, path in enumerate(getattr(group, key)):
                if not path.startswith(("/", "*")) or any(c.isspace() or c == "#" for c in path):
                    problems.add(
                        f"{where}.{key}[{j}]",
                        f"must be a URL path starting with '/' or '*', without spaces, got {path!r}",
                    )


def _check_lighthouse(lh: LighthouseConfig, problems: _Problems) -> None:
    if lh.form_factor not in ("mobile", "desktop"):
        problems.add(
            "lighthouse.form_factor", f"expected 'mobile' or 'desktop', got {lh.form_factor!r}"
        )
    known = ("performance", "accessibility", "best-practices", "seo")
    for category, score in lh.budgets.items():
        if category not in known:
            close = difflib.get_close_matches(category, known, n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            problems.add(f"lighthouse.budgets.{category}", f"unknown category{suggestion}")
        elif not 0 <= score <= 1:
            problems.add(
                f"lighthouse.budgets.{category}", f"must be between 0 and 1, got {_number(score)}"
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


def field_docs(cls: type) -> dict[str, str]:
    """``{key: doc}`` for a config section, a number's range appended: the README table's text."""
    docs = {}
    for f in fields(cls):
        if "doc" not in f.metadata or f.name == "index":
            continue
        doc = f.metadata["doc"]
        if (between := f.metadata.get("between")) is not None:
            doc += f" ({_number(between[0])} to {_number(between[1])})"
        docs[f.name] = doc
    return docs
