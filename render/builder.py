"""Routes -> pages: plan every page, reuse what did not change, render the rest.

Every page has a fingerprint of what it read: its template and everything that
template extends, includes or imports; its route's settings; its row or rows;
and, found while rendering, the result of every named query it called with
its parameters. Nobody declares dependencies. A rebuild re-runs those queries
(once per distinct call), and a page whose fingerprint and query results are
unchanged is reused without rendering. Output bytes go once into the build's
content-addressed objects folder (``render.build.objects``); the tree record
(``build.pickle`` and its groups) is replaced only when the build is complete.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import time
import types
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import TemplateNotFound, TemplateSyntaxError, meta

from render import __version__, islands
from render.build import gcpause, workers
from render.build.changes import Changes
from render.build.objects import INCOMPLETE, Location, Objects
from render.build.renderer import PageDone, PageFailed, PageSpec, RenderSetup
from render.build.sandbox import MMAP_BYTES, QueryRunner, Read, SiteLoader, make_environment
from render.build.sitefiles import SiteFolder, static_files
from render.build.snapshot import Snapshot
from render.build.tree import (
    Build,
    FileEntry,
    PageRecord,
    clash_error,
    content_type,
    sha256,
    write_object,
    writer,
)
from render.config import HostConfig, LimitsConfig, Route, SiteConfig
from render.errors import (
    BuildError,
    DiskFullError,
    PathError,
    TemplateError,
    is_disk_full,
    written,
)
from render.paths import file_and_folder, normalize_url, output_path, parse_pattern

FORMAT = f"render-build-11/{__version__}"  # 11: classes moved into stage packages
RECORD = "build.pickle"  # written and read only by render, in the state folder
GROUPS = "record"  # beside it: the page records in BUCKETS pickled groups, named by their hash
BUCKETS = 64  # an unchanged group is neither pickled nor written again
SMALL_SITE = 400  # pages; below this one render process is faster than two


@dataclass(frozen=True, kw_only=True)
class SourceState:
    """Hashes of a site's templates and static files, with the stat cache that made them."""

    templates: Mapping[str, str]  # name -> sha256 of the source
    static: Mapping[str, tuple[int, int, str]]  # rel path (NFC) -> (size, mtime_ns, sha256)
    config: str  # sha256 of site.toml
    static_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # NFC rel -> as on disk

    def input_hash(self, snapshot: Snapshot) -> str:
        parts = [
            FORMAT,
            snapshot.content_hash,
            self.config,
            repr(sorted(self.templates.items())),
            repr(sorted((k, v[2]) for k, v in self.static.items())),
        ]
        return sha256("\n".join(parts).encode())


@dataclass(frozen=True, kw_only=True)
class Previous:
    """What the last complete build recorded."""

    pages: Mapping[str, PageRecord] = field(default_factory=dict)  # as recorded: not rendered
    static: Mapping[str, tuple[int, int, str]] = field(default_factory=dict)
    input_hash: str | None = None
    tables: Mapping[str, str] = field(default_factory=dict)  # the snapshot's table hashes
    queries: Mapping[str, str] = field(default_factory=dict)  # [queries] as they were
    columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # see render.build.changes
    routes: Mapping[int, tuple[str, tuple[Read, ...]]] = field(default_factory=dict)  # key, reads
    buckets: tuple[tuple[Mapping[str, PageRecord], str], ...] = ()  # page groups and file names


def build_dir(host: HostConfig, site: SiteConfig) -> Path:
    return host.site_state("builds", site.id)


def load_previous(folder: Path) -> Previous:
    try:
        with open(folder / RECORD, "rb") as fh:
            data = pickle.load(fh)
    except (OSError, ValueError, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ImportError):
        # ImportError: a record written by an older layout names classes that moved
        return Previous()
    if not isinstance(data, dict):
        return Previous()
    if data.get("format") != FORMAT:
        return Previous()
    try:
        buckets = tuple(
            (pickle.loads((folder / GROUPS / name).read_bytes()), name) for name in data["pages"]
        )
        merged: dict[str, PageRecord] = {}
        for group, _blob in buckets:
            merged.update(group)
        pages = {path: merged[path] for path in data["order"]}
    except (
        OSError, KeyError, TypeError, ValueError, AttributeError, ImportError,
        pickle.UnpicklingError, EOFError,
    ):
        return Previous()  # damaged, or written by an older layout: the next build renders everything
    return Previous(
        pages=pages,
        buckets=buckets,
        static={k: (v[0], v[1], v[2]) for k, v in data["static"].items()},
        input_hash=data.get("input_hash"),
        tables=data.get("tables", {}),
        queries=data.get("queries", {}),
        columns=data.get("columns", {}),
        routes=data.get("routes", {}),
    )


def scan_sources(site: SiteConfig, previous: Previous, *, limits: LimitsConfig) -> SourceState:
    """Hash templates (always: they are small) and static files (through a stat cache).

    Both folders are read through ``render.build.sitefiles``: no link out of the
    site is followed, static files are checked against ``limits`` before
    they are read, and hashed a chunk at a time.
    """
    templates: dict[str, str] = {}
    with SiteFolder(site.templates, inside=site.root, label=site.site.templates) as folder:
        for file in folder.files(links=True):
            templates[file.rel] = folder.hash(file, max_bytes=None)[2]
    static: dict[str, tuple[int, int, str]] = {}
    names: dict[str, tuple[str, ...]] = {}
    with SiteFolder(site.static, inside=site.root, label=site.site.static) as folder:
        found = static_files(
            folder, file_max=limits.static_file_max_bytes, site_max=limits.static_site_max_bytes
        )
        for file in found:
            cached = previous.static.get(file.nfc)
            if cached and cached[0] == file.size and cached[1] == file.mtime_ns:
                static[file.nfc] = cached
            else:
                static[file.nfc] = folder.hash(file, max_bytes=limits.static_file_max_bytes)
            if file.rel != file.nfc:
                names[file.nfc] = file.names
    return SourceState(
        templates=dict(sorted(templates.items())),
        static=static,
        static_names=names,
        config=site.source_hash,
    )


# --- planning ----------------------------------------------------------------


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
                        path=output_path(url), url=url, route=route.index, template=route.template,
                        row=row, lastmod=None if lastmod is None else str(lastmod),
                    ),
                    who,
                )  # fmt: skip
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
                    path=output_path(page_url), url=page_url, route=route.index, template=route.template,
                    rows=chunk, pagination=pagination, lastmod=max(lastmods) if lastmods else None,
                ),
                f"{where} page {number}",
            )  # fmt: skip
    if "404.html" in templates and "404.html" not in owners:
        specs.append(PageSpec(path="404.html", url="/404.html", route=-1, template="404.html"))
    return specs


# --- fingerprints ------------------------------------------------------------


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
    head = repr((route_key, spec.url, spec.path, spec.template,
                 None if spec.pagination is None else tuple(spec.pagination.items()),
                 spec.lastmod))  # fmt: skip
    parts = [head]
    if spec.row is not None:
        parts.append("row\x1c" + _row_text(spec.row.items()))
    if spec.rows is not None:
        parts.append("rows\x1c" + "\x1c".join(_row_text(r.items()) for r in spec.rows))
    return sha256("\x00".join(parts).encode("utf-8", "surrogatepass"))


# --- the build ---------------------------------------------------------------


def build(
    site: SiteConfig,
    snapshot: Snapshot,
    *,
    host: HostConfig,
    sources: SourceState | None = None,
    previous: Previous | None = None,
    keep: frozenset[str] = frozenset(),
    progress: Callable[[int, int], None] | None = None,
) -> Build:
    """Render ``site`` from ``snapshot`` into its build folder; reuse unchanged pages.

    ``keep`` names objects that later stages will reuse (last run's
    Lighthouse reports); everything else not in the new tree is removed.
    """
    with gcpause.paused():
        try:
            return _build(
                site, snapshot, host=host, sources=sources, previous=previous, keep=keep,
                progress=progress,
            )  # fmt: skip
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            folder = build_dir(host, site)
            where = written(exc, f"the build folder {folder}")
            raise DiskFullError.of(exc, writing=where, folder=folder, stage="build") from exc


def _build(
    site: SiteConfig,
    snapshot: Snapshot,
    *,
    host: HostConfig,
    sources: SourceState | None,
    previous: Previous | None,
    keep: frozenset[str],
    progress: Callable[[int, int], None] | None,
) -> Build:
    started, cpu_started = time.perf_counter(), time.process_time()
    steps: dict[str, float] = {}
    mark = started

    def step(name: str) -> None:
        nonlocal mark
        steps[name], mark = time.perf_counter() - mark, time.perf_counter()

    now = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    folder = build_dir(host, site)
    objects = folder / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    store = Objects(objects)
    previous = previous if previous is not None else load_previous(folder)
    marker = objects / INCOMPLETE
    if marker.exists():  # a build died while writing: its objects may be partial
        store.prune(
            {p.hash for p in previous.pages.values()} | {v[2] for v in previous.static.values()}
        )
    marker.touch()
    sources = sources or scan_sources(site, previous, limits=host.limits)
    input_hash = sources.input_hash(snapshot)
    limits = host.limits
    step("load")

    available = frozenset(
        rel[len("islands/") : -len(".js")]
        for rel in sources.static
        if rel.startswith("islands/") and rel.endswith(".js") and rel.count("/") == 1
    )
    setup = RenderSetup(
        owner=site.id.owner,
        name=site.id.name,
        base_url=site.base_url,
        lang=site.seo.lang,
        templates=site.templates,
        snapshot=snapshot.path,
        objects=objects,
        queries=dict(site.queries),
        available=available,
        query_seconds=limits.query_seconds,
        sql_max_length=limits.sql_max_length,
        query_max_bytes=limits.query_max_bytes,
        row_max_bytes=limits.row_max_bytes,
        page_max_bytes=limits.page_max_bytes,
        cpu_seconds=limits.template_cpu_seconds,
    )
    worker_limits = workers.Limits(
        cpu_seconds=limits.template_cpu_seconds,
        memory_bytes=limits.template_memory_mb << 20,
        page_max_bytes=limits.page_max_bytes,
    )
    with workers.Pool(setup, limits=worker_limits) as pool:
        closures = template_closures(site, sources.templates)
        site_key = repr(
            (FORMAT, site.id.owner, site.id.name, site.base_url, site.seo.lang, sorted(available))
        )
        route_keys = {
            r.index: sha256(
                repr((site_key, sorted(vars(r).items()), closures.get(r.template))).encode()
            )
            for r in site.routes
        }
        route_keys[-1] = sha256(repr((site_key, closures.get("404.html"))).encode())
        runner = QueryRunner(
            snapshot.path,
            seconds=limits.query_seconds,
            max_length=limits.sql_max_length,
            max_bytes=limits.query_max_bytes,
            row_max_bytes=limits.row_max_bytes,
            mmap_bytes=MMAP_BYTES,
        )
        changes = Changes(snapshot, tables=previous.tables, columns=previous.columns)
        try:
            stored = store.hashes()
            calls, read_sets = _query_calls(previous, site, runner, changes)
            kept = _kept_routes(site, previous, route_keys, changes, calls, stored)
            step("changes")
            taken = {
                path: f"routes[{index}] ({site.routes[index].path})"
                for index, paths in kept.items()
                for path in paths
            }
            by_fingerprint = {
                old.fingerprint: old.path
                for old in previous.pages.values()
                if "row" in old.reads and _current(old, calls, stored)
            }
            planned = plan(
                site, runner, sources.templates, skip=kept.keys(), taken=taken,
                route_keys=route_keys, known=by_fingerprint.get if by_fingerprint else None,
            )  # fmt: skip
            route_reads = {
                r.index: previous.routes[r.index][1]
                if r.index in kept
                else ((runner.reads_of(r.query) or ()) if r.query else ())
                for r in site.routes
            }
        finally:
            runner.close()
        step("plan")
        specs = [p for p in planned if isinstance(p, PageSpec)]
        fps = [fingerprint(spec, route_key=route_keys[spec.route]) for spec in specs]
        reusable = {
            i
            for i, spec in enumerate(specs)
            if (old := previous.pages.get(spec.path)) is not None
            and old.fingerprint == fps[i]
            and _current(old, calls, stored)
        }
        todo = [i for i in range(len(specs)) if i not in reusable]
        total = len(planned) + len(taken)
        if progress is not None:
            progress(total - len(todo), total)
        todo_specs = [specs[i] for i in todo]
        step("fingerprints")
        if len(todo_specs) >= SMALL_SITE:
            pool.grow(limits.workers)
        results = pool.run(
            todo_specs,
            describe=lambda i: f"{todo_specs[i].url} (template {todo_specs[i].template})",
            is_error=lambda r: isinstance(r, PageFailed),
            progress=None if progress is None else (lambda n: progress(n, total)),
        )
        peak_rss = pool.peak_rss_kb
        step("render")
    workers_cpu = pool.cpu_seconds
    packs: dict[str, list[Location]] = {}
    for result in results:
        if isinstance(result, PageFailed):
            raise result.error()
        if result.pack is not None:
            packs.setdefault(result.pack, []).append((result.hash, result.offset, result.size))
    store.index_packs(packs)

    pages: list[PageRecord] = []  # in route order
    recorded: dict[str, PageRecord] = {}  # as the record keeps them: not rendered
    rendered = dict(zip(todo, results, strict=True))
    by_route: dict[int, list[Known | int]] = {}  # per route: known pages, or specs by index
    numbers = iter(range(len(specs)))
    for item in planned:
        by_route.setdefault(item.route, []).append(item if isinstance(item, Known) else next(numbers))
    for index in [r.index for r in site.routes] + [-1]:
        for path in kept.get(index, ()):
            pages.append(previous.pages[path])
            recorded[path] = previous.pages[path]
        for i in by_route.get(index, ()):
            if isinstance(i, Known):
                pages.append(previous.pages[i.path])
                recorded[i.path] = previous.pages[i.path]
                continue
            spec = specs[i]
            old = previous.pages.get(spec.path)
            if i in reusable:
                assert old is not None
                pages.append(old)
                recorded[spec.path] = old
                continue
            done = rendered[i]
            assert isinstance(done, PageDone)
            changed = old.changed if old is not None and old.hash == done.hash else now
            pages.append(
                PageRecord(
                    path=spec.path, url=spec.url, route=spec.route, template=spec.template,
                    fingerprint=fps[i], hash=done.hash, size=done.size,
                    reads=_reads(spec, done), islands=done.islands,
                    lastmod=spec.lastmod, changed=changed, facts=done.facts, deps=done.deps,
                    rendered=True,
                )
            )  # fmt: skip
            recorded[spec.path] = pages[-1].as_reused()

    _check_islands(pages, available)
    files = _assemble(site, pages, sources, store)
    step("assemble")
    read_sets.update(route_reads.values())
    for i in todo:
        read_sets.update(dep[3] for dep in rendered[i].deps)
    columns = changes.record(read_sets)
    changes.close()  # (on an error before this, the connection closes with the object)
    groups = _save_groups(folder / GROUPS, recorded, previous)
    record = {
        "format": FORMAT,
        "site": str(site.id),
        "input_hash": input_hash,
        "snapshot": snapshot.content_hash,
        "tables": dict(snapshot.table_hashes),
        "columns": columns,
        "queries": dict(site.queries),
        "routes": {index: (route_keys[index], reads) for index, reads in route_reads.items()},
        "built": now,
        "order": list(recorded),
        "pages": groups,
        "static": {k: list(v) for k, v in sources.static.items()},
    }
    _write_atomic(folder / RECORD, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
    Objects(folder / GROUPS).prune(set(groups))
    step("record")
    store.prune({e.hash for e in files.values()} | set(keep))
    marker.unlink()
    step("prune")
    return Build(
        site=site,
        snapshot=snapshot,
        input_hash=input_hash,
        objects=objects,
        files=types.MappingProxyType(files),
        pages=tuple(pages),
        rendered=len(todo),
        reused=total - len(todo),
        seconds=time.perf_counter() - started,
        peak_worker_rss_kb=peak_rss,
        steps={name: round(seconds, 4) for name, seconds in steps.items()},
        cpu_seconds={
            "parent": round(time.process_time() - cpu_started, 3),
            "workers": round(workers_cpu, 3),
        },
    )


def _query_calls(
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


def _current(
    old: PageRecord, calls: Mapping[tuple[str, str], str | None], stored: set[str]
) -> bool:
    """The recorded page's bytes are still there and every query it called returns the same."""
    if old.hash not in stored:
        return False
    for name, params, digest, _reads in old.deps:  # noqa: SIM110 - all() over a generator costs more
        if calls.get((name, params)) != digest:
            return False
    return True


def _kept_routes(
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
        if all(_current(previous.pages[path], calls, stored) for path in paths):
            kept[route.index] = paths
    return kept


def _reads(spec: PageSpec, done: PageDone) -> tuple[str, ...]:
    reads = [f"template:{spec.template}", f"route:{spec.route}"]
    if spec.row is not None:
        reads.append("row")
    if spec.rows is not None:
        reads.append(f"rows:{len(spec.rows)}")
    reads.extend(f"query:{name}{params}" for name, params, _, _ in done.deps)
    return tuple(reads)


def _check_islands(pages: list[PageRecord], available: frozenset[str]) -> None:
    for page in pages:
        for component in page.islands:
            if component not in available and not page.rendered:
                raise TemplateError(
                    f"island component {component!r} has no module static/islands/{component}.js",
                    template=page.template,
                    hint=f"add static/islands/{component}.js, or fix the component's name",
                )


def _assemble(
    site: SiteConfig, pages: list[PageRecord], sources: SourceState, objects: Objects
) -> dict[str, FileEntry]:
    files: dict[str, FileEntry] = {}
    for page in pages:
        files[page.path] = FileEntry(hash=page.hash, size=page.size, type=content_type(page.path))
    with contextlib.ExitStack() as stack:
        folder: SiteFolder | None = None  # opened when a file's bytes are not stored yet
        for rel, (size, _mtime, digest) in sources.static.items():
            if rel in files:
                raise PathError(f"static/{rel} and a route both write {rel}", hint="rename one of them")
            if rel.startswith("_render/"):
                raise PathError(f"static/{rel}: the _render/ folder is reserved for render's own files")
            if not objects.has(digest):
                if folder is None:
                    folder = stack.enter_context(
                        SiteFolder(site.static, inside=site.root, label=site.site.static)
                    )
                fd = folder.open(sources.static_names.get(rel) or tuple(rel.split("/")))
                try:
                    copied = objects.write_file(fd, digest, size=size)
                finally:
                    os.close(fd)
                if not copied:  # changed since it was scanned
                    raise BuildError(
                        f"static/{rel} changed during the build", hint="run the build again"
                    )
            files[rel] = FileEntry(hash=digest, size=size, type=content_type(rel))
    if any(page.islands for page in pages):
        loader = islands.loader_source()
        files[islands.LOADER_PATH] = FileEntry(
            hash=objects.write(loader),
            size=len(loader),
            type=content_type(islands.LOADER_PATH),
        )
    files = dict(sorted(files.items()))
    if (clash := file_and_folder(list(files))) is not None:
        writers = {page.path: page for page in pages}
        raise clash_error(
            clash, lambda p: writer(site, writers.get(p), p, static=p in sources.static)
        )
    return files


def _bucket(path: str) -> int:
    return zlib.crc32(path.encode("utf-8", "surrogatepass")) % BUCKETS


def _save_groups(
    where: Path, recorded: Mapping[str, PageRecord], previous: Previous
) -> list[str]:
    """Write the page records in ``BUCKETS`` pickled groups; return their file names in order.

    A group whose records are the very ones loaded from the last build keeps
    its file: a rebuild that rendered one page writes one group, not ten
    thousand records.
    """
    where.mkdir(exist_ok=True)
    groups: list[dict[str, PageRecord]] = [{} for _ in range(BUCKETS)]
    for path, page in recorded.items():
        groups[_bucket(path)][path] = page
    names = []
    for number, group in enumerate(groups):
        if number < len(previous.buckets):
            old, name = previous.buckets[number]
            if old.keys() == group.keys() and all(group[p] is old[p] for p in group):
                names.append(name)
                continue
        names.append(write_object(where, pickle.dumps(group, protocol=pickle.HIGHEST_PROTOCOL)))
    return names


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
