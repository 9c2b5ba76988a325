"""Routes -> page specs: every page of a site with a checked, unique path, and its fingerprint.

``plan`` runs each route's query on the snapshot (bounded in time and bytes)
and fills the route's pattern from each row; ``fingerprint`` hashes what a page
is made from before it renders; ``template_closures`` hashes each template with
everything it can load, so that editing a partial changes the pages that use it.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from jinja2 import TemplateNotFound, TemplateSyntaxError, meta

from render import islands
from render.build.renderer import PageSpec
from render.build.sandbox import QueryRunner, SiteLoader, make_environment
from render.build.tree import sha256
from render.config import Route, SiteConfig
from render.errors import PathError, TemplateError
from render.paths import normalize_url, output_path, parse_pattern


def _row_name(route: Route, number: int, row: Mapping[str, Any]) -> str:
    ident = next((f"{k}={row[k]!r}" for k in ("id", "rowid", "slug") if k in row), "")
    return f"routes[{route.index}] ({route.path}) row {number}" + (f" ({ident})" if ident else "")


class Known(NamedTuple):
    """A per-row page whose row fingerprint is a reusable page of the last build."""

    path: str
    route: int


def plan(
    site: SiteConfig,
    runner: QueryRunner,
    templates: Mapping[str, str],
    *,
    skip: Collection[int] = (),
    taken: Mapping[str, str] | None = None,
    route_keys: Mapping[int, str] | None = None,
    known: Callable[[str], str | None] | None = None,
) -> list[PageSpec | Known]:
    """Every page of the site's routes but ``skip``, in route order, with checked unique paths.

    ``taken`` maps the paths of the skipped routes' pages to who writes them.
    With ``route_keys`` and ``known`` (a row fingerprint -> the path of the
    last build's page with that fingerprint, if it can be reused), a row that
    did not change becomes ``Known`` at the cost of hashing it: its path is
    the one it had, since the path is made from the route and the row alone.
    """
    specs: list[PageSpec | Known] = []
    owners: dict[str, str | Callable[[], str]] = dict(taken or {})
    held = 0  # bytes of the route queries' results planned so far: they count together

    def add(spec: PageSpec | Known, who: str | Callable[[], str]) -> None:
        other = owners.get(spec.path)
        if other is not None:
            name, other_name = (w if isinstance(w, str) else w() for w in (who, other))
            raise PathError(
                f"{name} and {other_name} both write {spec.path}",
                hint="make the paths unique (paths equal after Unicode normalization count as the same)",
            )
        owners[spec.path] = who
        specs.append(spec)

    for route in site.routes:
        if route.index in skip:
            continue
        pattern = parse_pattern(route.path)
        where = f"routes[{route.index}] ({route.path})"
        names: list[str] = []
        values: list[tuple[Any, ...]] = []
        if route.query:
            names, values, size = runner.fetch_counted(route.query, what=where, held=held)
            held += size
            if route.lastmod and values and route.lastmod not in names:
                raise PathError(
                    f"{where}: lastmod column {route.lastmod!r} is not in the query's columns",
                    hint=f"columns: {', '.join(names)}",
                )
        if pattern.placeholders:
            key = route_keys.get(route.index) if route_keys is not None else None
            head = _row_head(key, names) if key is not None else b""
            for number, tup in enumerate(values, 1):
                if key is not None and known is not None:
                    path = known(_row_fingerprint(head, tup))
                    if path is not None:
                        add(Known(path, route.index), _Who(route, number, names, tup))
                        continue
                row = dict(zip(names, tup, strict=True))
                who = functools.partial(_row_name, route, number, row)  # named only in errors
                url = normalize_url(pattern.fill(row, where=who))
                lastmod = row.get(route.lastmod) if route.lastmod else None
                add(
                    PageSpec(
                        path=output_path(url),
                        url=url,
                        route=route.index,
                        template=route.template,
                        row=row,
                        lastmod=None if lastmod is None else str(lastmod),
                    ),
                    who,
                )
            continue
        rows = [dict(zip(names, tup, strict=True)) for tup in values]
        url = normalize_url(route.path)
        if not route.query:
            add(
                PageSpec(
                    path=output_path(url), url=url, route=route.index, template=route.template
                ),
                where,
            )
            continue
        size = route.paginate or max(len(rows), 1)
        count = max(1, -(-len(rows) // size))
        base = url
        for number in range(1, count + 1):
            page_url = base if number == 1 else f"{base}page/{number}/"
            chunk = rows[(number - 1) * size : number * size]
            pagination = {
                "number": number,
                "count": count,
                "prev_url": None
                if number == 1
                else (base if number == 2 else f"{base}page/{number - 1}/"),
                "next_url": None if number == count else f"{base}page/{number + 1}/",
                "total": len(rows),
            }
            lastmods = [
                str(r[route.lastmod])
                for r in chunk
                if route.lastmod and r.get(route.lastmod) is not None
            ]
            add(
                PageSpec(
                    path=output_path(page_url),
                    url=page_url,
                    route=route.index,
                    template=route.template,
                    rows=chunk,
                    pagination=pagination,
                    lastmod=max(lastmods) if lastmods else None,
                ),
                f"{where} page {number}",
            )
    if "404.html" in templates and "404.html" not in owners:
        specs.append(PageSpec(path="404.html", url="/404.html", route=-1, template="404.html"))
    return specs


def template_closures(site: SiteConfig, templates: Mapping[str, str]) -> dict[str, str]:
    """For each template, a hash over it and every template it can load."""
    env = make_environment(site.templates, extensions=[islands.IslandExtension])
    loader = env.loader
    assert isinstance(loader, SiteLoader)
    refs: dict[str, set[str] | None] = {}
    for name in templates:
        if not name.endswith(
            (".html", ".htm", ".xml", ".txt", ".j2", ".jinja", ".json", ".css", ".js")
        ):
            refs[name] = set()
            continue
        try:
            source = loader.read(name).decode("utf-8")
            found = meta.find_referenced_templates(env.parse(source, name=name))
            names: set[str] | None = set()
            for ref in found:
                if ref is None:
                    names = None
                    break
                assert names is not None
                names.add(ref)
            refs[name] = names
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"syntax error: {exc.message}",
                template=name,
                line=exc.lineno,
                source_line=_line(source, exc.lineno),
            ) from None
        except UnicodeDecodeError as exc:
            raise TemplateError(f"not UTF-8 text: {exc.reason}", template=name) from None
        except TemplateNotFound:  # the loader cannot load it by this name: it loads nothing
            refs[name] = set()
    closures: dict[str, str] = {}
    everything = sha256(repr(sorted(templates.items())).encode())
    for name in templates:
        seen: set[str] = set()
        stack = [name]
        dynamic = False
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            targets = refs.get(current, set())
            if targets is None:
                dynamic = True
                break
            stack.extend(targets)
        closures[name] = (
            everything
            if dynamic
            else sha256(repr(sorted((n, templates.get(n, "missing")) for n in seen)).encode())
        )
    return closures


def _line(source: str, lineno: int | None) -> str | None:
    lines = source.splitlines()
    return lines[lineno - 1] if lineno and 0 < lineno <= len(lines) else None


def _row_text(items: Iterable[tuple[str, Any]]) -> str:
    # str values as they are (no repr copy), anything else by repr so 1 and "1" differ
    return "\x1f".join([f"{k}\x1e{v}" if type(v) is str else f"{k}\x1d{v!r}" for k, v in items])


def _row_head(route_key: str, names: Sequence[str]) -> bytes:
    return f"{route_key}\x00row\x1c{tuple(names)!r}\x00".encode("utf-8", "surrogatepass")


def _row_fingerprint(head: bytes, values: tuple[Any, ...]) -> str:
    """A per-row page's fingerprint: its route and its row make its URL, path and lastmod.

    The row's values are pickled (SQLite gives str, int, float, bytes or None:
    types kept apart, same values same bytes), which is cheaper than text.
    """
    return sha256(head + pickle.dumps(values, protocol=5))


def _row_dict(names: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(names, values, strict=True))


class _Who:
    """Names a row in an error message, made only when one is shown."""

    __slots__ = ("route", "number", "names", "values")

    def __init__(
        self, route: Route, number: int, names: list[str], values: tuple[Any, ...]
    ) -> None:
        self.route, self.number, self.names, self.values = route, number, names, values

    def __call__(self) -> str:
        return _row_name(self.route, self.number, _row_dict(self.names, self.values))


def fingerprint(spec: PageSpec, *, route_key: str) -> str:
    """A hash of what a page is made from, known before it renders.

    ``route_key`` covers the site's settings, the route's and its template with
    everything that template loads.
    """
    if spec.row is not None and spec.pagination is None:
        return _row_fingerprint(_row_head(route_key, list(spec.row)), tuple(spec.row.values()))
    head = repr(
        (
            route_key,
            spec.url,
            spec.path,
            spec.template,
            None if spec.pagination is None else tuple(spec.pagination.items()),
            spec.lastmod,
        )
    )
    parts = [head]
    if spec.row is not None:
        parts.append("row\x1c" + _row_text(spec.row.items()))
    if spec.rows is not None:
        parts.append("rows\x1c" + "\x1c".join(_row_text(r.items()) for r in spec.rows))
    return sha256("\x00".join(parts).encode("utf-8", "surrogatepass"))
