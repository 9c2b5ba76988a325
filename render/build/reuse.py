"""What the last build's record lets this one keep without rendering.

A page is kept when its bytes are still stored and every named query it called
returns what it returned then; a whole route is kept (not even planned) when
its settings, template and query columns are unchanged and all its pages are.
Changes are read down to the column (``render.build.changes``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping

from render.build.changes import Changes
from render.build.record import Previous
from render.build.sandbox import QueryRunner, Read
from render.build.tree import PageRecord
from render.config import SiteConfig


def query_results(
    previous: Previous, site: SiteConfig, runner: QueryRunner, changes: Changes
) -> tuple[dict[tuple[str, str], str | None], set[tuple[Read, ...]]]:
    """The current result hash of every named-query call the last build's pages made.

    A call whose SQL is the same and whose columns hold the same values
    returns what it returned before, so it is not run again; any other call
    runs once here (None when it fails: the render reports it with its
    template and line). Also returns the distinct column sets those calls read.
    """
    calls: dict[tuple[str, str], str | None] = {}
    verdicts: dict[tuple[Read, ...], bool] = {}
    rerun: list[tuple[str, str]] = []
    for old in previous.pages.values():
        for name, params, digest, reads in old.deps:
            key = (name, params)
            if key in calls:
                continue
            same = verdicts.get(reads)
            if same is None:
                same = verdicts[reads] = changes.unchanged(reads)
            if same and previous.queries.get(name) == site.queries.get(name):
                calls[key] = digest
            else:
                calls[key] = None
                rerun.append(key)
    for name, params in rerun:
        sql = site.queries.get(name)
        if sql is None:
            continue
        with contextlib.suppress(Exception):
            calls[(name, params)] = runner.hash(sql, json.loads(params), what=f"[queries] {name}")
    return calls, set(verdicts)


def is_current(
    old: PageRecord, calls: Mapping[tuple[str, str], str | None], stored: set[str]
) -> bool:
    """The recorded page's bytes are still there and every query it called returns the same."""
    if old.hash not in stored:
        return False
    for name, params, digest, _reads in old.deps:  # noqa: SIM110 - all() over a generator costs more
        if calls.get((name, params)) != digest:
            return False
    return True


def kept_routes(
    site: SiteConfig,
    previous: Previous,
    route_keys: Mapping[int, str],
    changes: Changes,
    calls: Mapping[tuple[str, str], str | None],
    stored: set[str],
) -> dict[int, list[str]]:
    """Routes whose every page is as last built, with their pages' paths in order.

    A route whose settings and template are the same, whose query's columns
    hold the same values, and whose pages' named queries return the same,
    makes the same pages: it is not planned again (no query, no fingerprints).
    """
    by_route: dict[int, list[str]] = {}
    for path, old in previous.pages.items():
        by_route.setdefault(old.route, []).append(path)
    kept: dict[int, list[str]] = {}
    for route in site.routes:
        was = previous.routes.get(route.index)
        if was is None or was[0] != route_keys[route.index] or not changes.unchanged(was[1]):
            continue
        paths = by_route.get(route.index, [])
        if all(is_current(previous.pages[path], calls, stored) for path in paths):
            kept[route.index] = paths
    return kept
