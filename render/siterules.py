"""What a site.toml may say, beyond types and ranges.

``config.load_site`` parses the sections (``render.configfile`` checks each
value's type and range); these rules check what the values mean together: the
site's id is its folder, the base URL is absolute, the database, templates and
static folders stay inside the site, routes are well-formed and leave
``/_render/`` alone, robots groups are one line each, Lighthouse budgets name
real categories. Each problem goes into the file's one ``ConfigError``.
"""

from __future__ import annotations

import difflib
import zoneinfo
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from render import cron
from render.configfile import Problems, number_text
from render.paths import parse_pattern

if TYPE_CHECKING:
    from render.config import LighthouseConfig, Route, SeoConfig, SiteId, SiteSection


def check_site_id(site: SiteSection, site_id: SiteId, problems: Problems) -> None:
    """``[site] owner`` and ``name`` may only repeat the folders' names: the id is the folder's."""
    for key, folder_value in (("owner", site_id.owner), ("name", site_id.name)):
        value = getattr(site, key)
        if value and value != folder_value:
            problems.add(
                f"site.{key}",
                f"must be the folder's {key} {folder_value!r} (sites/{site_id}/), got {value!r};"
                f" a site's id is its folder",
            )


def check_site(site: SiteSection, folder: Path, problems: Problems) -> None:
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


def check_route(route: Route, where: str, problems: Problems) -> None:
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


def check_seo(seo: SeoConfig, problems: Problems) -> None:
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


def check_lighthouse(lh: LighthouseConfig, problems: Problems) -> None:
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
                f"lighthouse.budgets.{category}",
                f"must be between 0 and 1, got {number_text(score)}",
            )
