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
import os
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from render import islands
from render.build import gcpause, onrequest, workers
from render.build.changes import Changes
from render.build.objects import INCOMPLETE, Location, Objects
from render.build.plan import Known, fingerprint, plan, template_closures
from render.build.record import FORMAT, GROUPS, Previous, build_dir, load_previous, save_record
from render.build.renderer import PageDone, PageFailed, PageSpec, RenderSetup
from render.build.reuse import is_current, kept_routes, query_results
from render.build.sandbox import MMAP_BYTES, QueryRunner, Read
from render.build.sitefiles import SiteFolder
from render.build.snapshot import Snapshot
from render.build.sources import SourceState, scan_sources
from render.build.tree import (
    Build,
    FileEntry,
    PageRecord,
    clash_error,
    content_type,
    sha256,
    writer,
)
from render.config import HostConfig, LimitsConfig, SiteConfig
from render.errors import BuildError, DiskFullError, PathError, TemplateError, is_disk_full, written
from render.files import utc_stamp
from render.paths import file_and_folder

SMALL_SITE = 400  # pages; below this one render process is faster than two


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
                site,
                snapshot,
                host=host,
                sources=sources,
                previous=previous,
                keep=keep,
                progress=progress,
            )
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            folder = build_dir(host, site)
            where = written(exc, f"the build folder {folder}")
            raise DiskFullError.of(exc, writing=where, folder=folder, stage="build") from exc


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """What this build renders, keeps and reuses, decided before any page renders."""

    planned: list[PageSpec | Known]  # the pages of the routes planned again, in route order
    kept: Mapping[int, list[str]]  # routes kept whole: route index -> their pages' paths
    taken: Mapping[str, str]  # those paths -> the route that writes them
    specs: list[PageSpec]  # the planned pages that are not ``Known``
    fingerprints: list[str]  # of ``specs``, index for index
    reusable: set[int]  # indexes into ``specs`` of pages reused as they are
    todo: list[int]  # indexes into ``specs`` of pages to render
    route_reads: Mapping[int, tuple[Read, ...]]  # per route: what its query read
    read_sets: set[tuple[Read, ...]]  # the column sets the record must hash

    @property
    def total(self) -> int:
        return len(self.planned) + len(self.taken)


class _Steps:
    """Seconds per step of the build, for ``Build.steps`` (the benchmark prints them)."""

    def __init__(self) -> None:
        self.started = self.mark = time.perf_counter()
        self.cpu_started = time.process_time()
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self.mark = now - self.mark, now


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
    step = _Steps()
    now = utc_stamp()
    folder = build_dir(host, site)
    objects = Objects(folder / "objects")
    previous = onrequest.merged(previous if previous is not None else load_previous(folder), folder)
    marker = _begin(objects, previous)
    sources = sources or scan_sources(site, previous, limits=host.limits)
    input_hash = sources.input_hash(snapshot)
    step("load")

    available = _island_modules(sources)
    setup, worker_limits = _render_setup(site, snapshot, objects.folder, available, host.limits)
    with workers.Pool(setup, limits=worker_limits) as pool:
        route_keys = _route_keys(site, sources, available)
        changes = Changes(snapshot, tables=previous.tables, columns=previous.columns)
        chosen = _choose(
            site, snapshot, sources, previous, route_keys, changes, objects, step, host.limits
        )
        if progress is not None:
            progress(chosen.total - len(chosen.todo), chosen.total)
        todo_specs = [chosen.specs[i] for i in chosen.todo]
        step("fingerprints")
        if len(todo_specs) >= SMALL_SITE:
            pool.grow(host.limits.workers)
        results = pool.run(
            todo_specs,
            describe=lambda i: f"{todo_specs[i].url} (template {todo_specs[i].template})",
            is_error=lambda r: isinstance(r, PageFailed),
            progress=None if progress is None else (lambda n: progress(n, chosen.total)),
        )
        peak_rss = pool.peak_rss_kb
        step("render")
    rendered = _index_results(objects, chosen.todo, results)
    pages, recorded = _pages(site, chosen, rendered, previous, now)
    _check_islands(pages, available)
    files = _assemble(site, pages, sources, objects)
    step("assemble")

    for i in chosen.todo:
        chosen.read_sets.update(dep[3] for dep in rendered[i].deps)
    columns = changes.record(chosen.read_sets)
    changes.close()  # (on an error before this, the connection closes with the object)
    facts = {
        "site": str(site.id),
        "input_hash": input_hash,
        "snapshot": snapshot.content_hash,
        "tables": dict(snapshot.table_hashes),
        "columns": columns,
        "queries": dict(site.queries),
        "routes": {i: (route_keys[i], reads) for i, reads in chosen.route_reads.items()},
        "built": now,
        "static": {k: list(v) for k, v in sources.static.items()},
    }
    groups = save_record(folder, facts, recorded, previous)
    onrequest.clear(folder)  # the pages rendered on request are in the record now
    Objects(folder / GROUPS).prune(set(groups))
    step("record")
    objects.prune({e.hash for e in files.values()} | set(keep))
    marker.unlink()
    step("prune")
    return Build(
        site=site,
        snapshot=snapshot,
        input_hash=input_hash,
        objects=objects.folder,
        files=types.MappingProxyType(files),
        pages=tuple(pages),
        rendered=len(chosen.todo),
        reused=chosen.total - len(chosen.todo),
        seconds=time.perf_counter() - step.started,
        peak_worker_rss_kb=peak_rss,
        steps={name: round(seconds, 4) for name, seconds in step.seconds.items()},
        cpu_seconds={
            "parent": round(time.process_time() - step.cpu_started, 3),
            "workers": round(pool.cpu_seconds, 3),
        },
    )


@dataclass(frozen=True, kw_only=True)
class Stale:
    """What a build of ``snapshot`` would render now, found as a build finds it (``pending``)."""

    render: Mapping[str, tuple[PageSpec, str]]  # page path -> its spec and fingerprint
    paths: frozenset[str]  # every page the build would write (rendered or reused)
    same_sources: bool  # templates and route settings are the last build's
    setup: RenderSetup  # for render processes that write into ``objects``
    limits: workers.Limits


def pending(
    site: SiteConfig,
    snapshot: Snapshot,
    *,
    host: HostConfig,
    previous: Previous,
    objects: Path,
    kept: Callable[[frozenset[str]], None] | None = None,
) -> Stale:
    """The pages a build of ``snapshot`` would render, the same decision the build makes.

    ``previous`` is the last build's record (with the pages rendered on request
    since, ``onrequest.merged``); ``objects`` is where render processes made with
    ``Stale.setup`` write. Nothing is rendered here. ``kept`` hears, as soon as
    the column-level changes are read and before any route is planned again,
    the paths of the routes kept whole: those pages are as last built.
    """
    step = _Steps()
    folder = build_dir(host, site)
    sources = scan_sources(site, previous, limits=host.limits)
    available = _island_modules(sources)
    setup, worker_limits = _render_setup(site, snapshot, objects, available, host.limits)
    route_keys = _route_keys(site, sources, available)
    changes = Changes(snapshot, tables=previous.tables, columns=previous.columns)
    try:
        chosen = _choose(
            site,
            snapshot,
            sources,
            previous,
            route_keys,
            changes,
            Objects(folder / "objects"),
            step,
            host.limits,
            kept=kept,
        )
    finally:
        changes.close()
    same = all(previous.routes.get(i, ("",))[0] == key for i, key in route_keys.items() if i >= 0)
    paths = set(chosen.taken)
    paths.update(item.path for item in chosen.planned)
    return Stale(
        render={
            chosen.specs[i].path: (chosen.specs[i], chosen.fingerprints[i]) for i in chosen.todo
        },
        paths=frozenset(paths),
        same_sources=same and bool(previous.routes),
        setup=setup,
        limits=worker_limits,
    )


def _begin(objects: Objects, previous: Previous) -> Path:
    """Mark the objects folder as being written; first drop what a build that died left."""
    objects.folder.mkdir(parents=True, exist_ok=True)
    marker = objects.folder / INCOMPLETE
    if marker.exists():  # a build died while writing: its objects may be partial
        objects.prune(
            {p.hash for p in previous.pages.values()} | {v[2] for v in previous.static.values()}
        )
    marker.touch()
    return marker


def _island_modules(sources: SourceState) -> frozenset[str]:
    """The island components the site has a module for (``static/islands/<name>.js``)."""
    return frozenset(
        rel[len("islands/") : -len(".js")]
        for rel in sources.static
        if rel.startswith("islands/") and rel.endswith(".js") and rel.count("/") == 1
    )


def _render_setup(
    site: SiteConfig,
    snapshot: Snapshot,
    objects: Path,
    available: frozenset[str],
    limits: LimitsConfig,
) -> tuple[RenderSetup, workers.Limits]:
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
        service_worker=site.site.service_worker,
    )
    worker_limits = workers.Limits(
        cpu_seconds=limits.template_cpu_seconds,
        memory_bytes=limits.template_memory_mb << 20,
        page_max_bytes=limits.page_max_bytes,
    )
    return setup, worker_limits


def _route_keys(
    site: SiteConfig, sources: SourceState, available: frozenset[str]
) -> dict[int, str]:
    """Per route (and -1 for ``404.html``): a hash of the site's settings, the route's and
    its template with everything that template loads."""
    closures = template_closures(site, sources.templates)
    site_key = repr(
        (
            FORMAT,
            site.id.owner,
            site.id.name,
            site.base_url,
            site.seo.lang,
            sorted(available),
            site.site.service_worker,
        )
    )
    route_keys = {
        r.index: sha256(
            repr((site_key, sorted(vars(r).items()), closures.get(r.template))).encode()
        )
        for r in site.routes
    }
    route_keys[-1] = sha256(repr((site_key, closures.get("404.html"))).encode())
    return route_keys


def _choose(
    site: SiteConfig,
    snapshot: Snapshot,
    sources: SourceState,
    previous: Previous,
    route_keys: Mapping[int, str],
    changes: Changes,
    objects: Objects,
    step: _Steps,
    limits: LimitsConfig,
    *,
    kept: Callable[[frozenset[str]], None] | None = None,
) -> _Plan:
    """Decide what to keep, plan again, reuse and render (steps ``changes`` and ``plan``)."""
    runner = QueryRunner(
        snapshot.path,
        seconds=limits.query_seconds,
        max_length=limits.sql_max_length,
        max_bytes=limits.query_max_bytes,
        row_max_bytes=limits.row_max_bytes,
        mmap_bytes=MMAP_BYTES,
    )
    try:
        stored = objects.hashes()
        calls, read_sets = query_results(previous, site, runner, changes)
        whole = kept_routes(site, previous, route_keys, changes, calls, stored)
        step("changes")
        taken = {
            path: f"routes[{index}] ({site.routes[index].path})"
            for index, paths in whole.items()
            for path in paths
        }
        if kept is not None:
            kept(frozenset(taken))
        by_fingerprint = {
            old.fingerprint: old.path
            for old in previous.pages.values()
            if "row" in old.reads and is_current(old, calls, stored)
        }
        planned = plan(
            site,
            runner,
            sources.templates,
            skip=whole.keys(),
            taken=taken,
            route_keys=route_keys,
            known=by_fingerprint.get if by_fingerprint else None,
        )
        route_reads = {
            r.index: previous.routes[r.index][1]
            if r.index in whole
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
        and is_current(old, calls, stored)
    }
    read_sets.update(route_reads.values())
    return _Plan(
        planned=planned,
        kept=whole,
        taken=taken,
        specs=specs,
        fingerprints=fps,
        reusable=reusable,
        todo=[i for i in range(len(specs)) if i not in reusable],
        route_reads=route_reads,
        read_sets=read_sets,
    )


def _index_results(
    objects: Objects, todo: list[int], results: Sequence[PageDone | PageFailed]
) -> dict[int, PageDone]:
    """The rendered pages by spec index; their packs indexed in the objects folder.

    The first failed page raises its error (the pool stops at the first one).
    """
    packs: dict[str, list[Location]] = {}
    for result in results:
        if isinstance(result, PageFailed):
            raise result.error()
        if result.pack is not None:
            packs.setdefault(result.pack, []).append((result.hash, result.offset, result.size))
    objects.index_packs(packs)
    return dict(zip(todo, results, strict=True))  # type: ignore[arg-type]  # no PageFailed left


def _pages(
    site: SiteConfig,
    chosen: _Plan,
    rendered: Mapping[int, PageDone],
    previous: Previous,
    now: str,
) -> tuple[list[PageRecord], dict[str, PageRecord]]:
    """Every page in route order, and the records the build record keeps (not rendered)."""
    pages: list[PageRecord] = []
    recorded: dict[str, PageRecord] = {}
    by_route: dict[int, list[Known | int]] = {}  # per route: known pages, or specs by index
    numbers = iter(range(len(chosen.specs)))
    for item in chosen.planned:
        by_route.setdefault(item.route, []).append(
            item if isinstance(item, Known) else next(numbers)
        )
    for index in [r.index for r in site.routes] + [-1]:
        for path in chosen.kept.get(index, ()):
            pages.append(previous.pages[path])
            recorded[path] = previous.pages[path]
        for i in by_route.get(index, ()):
            if isinstance(i, Known):
                pages.append(previous.pages[i.path])
                recorded[i.path] = previous.pages[i.path]
                continue
            spec = chosen.specs[i]
            old = previous.pages.get(spec.path)
            if i in chosen.reusable:
                assert old is not None
                pages.append(old)
                recorded[spec.path] = old
                continue
            pages.append(page_record(spec, chosen.fingerprints[i], rendered[i], old=old, now=now))
            recorded[spec.path] = pages[-1].as_reused()
    return pages, recorded


def page_record(
    spec: PageSpec, fingerprint: str, done: PageDone, *, old: PageRecord | None, now: str
) -> PageRecord:
    """The record of a page just rendered (``old``: the last build's record of its path)."""
    changed = old.changed if old is not None and old.hash == done.hash else now
    return PageRecord(
        path=spec.path,
        url=spec.url,
        route=spec.route,
        template=spec.template,
        fingerprint=fingerprint,
        hash=done.hash,
        size=done.size,
        reads=_reads(spec, done),
        islands=done.islands,
        lastmod=spec.lastmod,
        changed=changed,
        facts=done.facts,
        deps=done.deps,
        rendered=True,
    )


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
                raise PathError(
                    f"static/{rel} and a route both write {rel}", hint="rename one of them"
                )
            if rel.startswith("_render/"):
                raise PathError(
                    f"static/{rel}: the _render/ folder is reserved for render's own files"
                )
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
    shipped: dict[str, bytes] = {}
    if any(page.islands for page in pages):
        shipped[islands.LOADER_PATH] = islands.loader_source(
            service_worker=site.site.service_worker
        )
    if site.site.service_worker:
        shipped[islands.WORKER_PATH] = islands.worker_source()
        shipped[islands.REGISTER_PATH] = islands.register_source()
    for rel, data in shipped.items():
        if rel in files:
            raise PathError(
                f"{rel} is render's own file, and a static file or a route writes it too",
                hint="rename static/" + rel + ", or set [site] service_worker = false",
            )
        files[rel] = FileEntry(hash=objects.write(data), size=len(data), type=content_type(rel))
    files = dict(sorted(files.items()))
    if (clash := file_and_folder(list(files))) is not None:
        writers = {page.path: page for page in pages}
        raise clash_error(
            clash, lambda p: writer(site, writers.get(p), p, static=p in sources.static)
        )
    return files
