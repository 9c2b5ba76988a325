"""The worker side of the build: render one page of a site in the sandbox.

An instance lives in each render process (``render.build.workers``). It keeps the
compiled templates and the snapshot connection for the whole build, and
returns for every page either ``PageDone`` (its hash, what it read, its
islands and SEO facts) or ``PageFailed`` (a template or query error with the
template, line and source line).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import TemplateNotFound, TemplateSyntaxError
from jinja2.exceptions import SecurityError

from render import islands
from render.build import pagefacts
from render.build.objects import PackWriter, sha256, write_object_direct
from render.build.sandbox import QueryRunner, Read, make_environment
from render.build.workers import CpuExceeded, arm_cpu_limit, disarm_cpu_limit
from render.errors import DiskFullError, QueryError, RenderError, TemplateError, is_disk_full
from render.paths import normalize_url, quote_url

Dep = tuple[str, str, str, tuple[Read, ...]]
"""A named query a page called: (name, params as JSON, result hash, columns it read)."""


@dataclass(frozen=True, slots=True)
class PageSpec:
    path: str
    url: str
    route: int
    template: str
    row: Mapping[str, Any] | None = None
    rows: Sequence[Mapping[str, Any]] | None = None
    pagination: Mapping[str, Any] | None = None
    lastmod: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # positional, so that pickling skips dataclasses' per-object field walk
        return (
            PageSpec,
            (
                self.path,
                self.url,
                self.route,
                self.template,
                self.row,
                self.rows,
                self.pagination,
                self.lastmod,
            ),
        )


@dataclass(frozen=True, slots=True)
class PageDone:
    hash: str
    size: int
    deps: tuple[Dep, ...]
    islands: tuple[str, ...]
    facts: Mapping[str, object]  # its pagefacts.PageFacts; {} for a page that is not HTML
    pack: str | None = None  # the pack file its bytes went to; None: a loose object
    offset: int = 0  # where in the pack

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            PageDone,
            (self.hash, self.size, self.deps, self.islands, self.facts, self.pack, self.offset),
        )


@dataclass(frozen=True, slots=True)
class PageFailed:
    message: str
    template: str | None
    line: int | None
    source_line: str | None
    hint: str | None
    # "query": a query failed; "route": the route's own template is missing; "disk": no room
    kind: str = "template"

    def error(self) -> RenderError:
        if self.kind == "query" and self.template is None:
            return QueryError(self.message, hint=self.hint)
        if self.kind == "disk":
            return DiskFullError(self.message, stage="build", hint=self.hint)
        return TemplateError(
            self.message,
            template=self.template,
            line=self.line,
            source_line=self.source_line,
            hint=self.hint,
        )


@dataclass(frozen=True, kw_only=True)
class RenderSetup:
    """Everything a render process needs; picklable, and callable to make the handler."""

    owner: str
    name: str
    base_url: str
    lang: str
    templates: Path
    snapshot: Path
    objects: Path
    queries: Mapping[str, str]
    available: frozenset[str]
    query_seconds: float
    sql_max_length: int
    query_max_bytes: int
    row_max_bytes: int
    page_max_bytes: int
    cpu_seconds: int

    def __call__(self) -> Any:
        return Renderer(self)


LOOSE_PAGES = 32
"""A render process writes its first pages as loose objects, the rest into its pack.

A rebuild that renders a few pages then adds a few files and no pack; a full
build adds one pack per process instead of one file per page.
"""


def params_key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str, ensure_ascii=False)


class Renderer:
    def __init__(self, setup: RenderSetup) -> None:
        self.setup = setup
        self.env = make_environment(setup.templates, extensions=[islands.IslandExtension])
        self.runner = QueryRunner(
            setup.snapshot,
            seconds=setup.query_seconds,
            max_length=setup.sql_max_length,
            max_bytes=setup.query_max_bytes,
            row_max_bytes=setup.row_max_bytes,
        )
        self.memo: dict[tuple[str, str], tuple[list[dict[str, Any]], str, tuple[Read, ...]]] = {}
        self.site = {"owner": setup.owner, "name": setup.name, "base_url": setup.base_url}
        self.deps: list[Dep] = []
        self.written = 0
        self.pack: PackWriter | None = None
        # Globals, so that imported macros (which get no context) can use them too.
        self.env.globals.update(site=self.site, query=self.query, url=self.url)

    # --- template globals ------------------------------------------------

    def query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        sql = self.setup.queries.get(name)
        if sql is None:
            known = ", ".join(sorted(self.setup.queries)) or "none"
            raise QueryError(f"query({name!r}): no such named query in [queries] (known: {known})")
        key = (name, params_key(params))
        hit = self.memo.get(key)
        if hit is None:
            rows, digest = self.runner.run_hashed(sql, params, what=f"[queries] {name}")
            hit = (rows, digest, self.runner.reads_of(sql) or ())
            self.memo[key] = hit
        self.deps.append((name, key[1], hit[1], hit[2]))
        return hit[0]

    def url(self, path: str) -> str:
        if not isinstance(path, str):
            raise TypeError(f"url() takes a path string, got {type(path).__name__}")
        if "://" in path or path.startswith("//"):
            return path
        if not path.startswith("/"):
            path = "/" + path
        return quote_url(normalize_url(path))

    # --- one page ----------------------------------------------------------

    def __call__(self, spec: PageSpec) -> PageDone | PageFailed:
        return self.render(spec)

    def flush(self) -> None:
        """Write out what the pack holds; called before a chunk is reported done."""
        if self.pack is not None:
            try:
                self.pack.flush()
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                raise self._no_room(
                    exc, f"the pack {self.setup.objects}/packs/{self.pack.name}"
                ) from exc

    def _no_room(self, exc: OSError, writing: str) -> DiskFullError:
        return DiskFullError.of(exc, writing=writing, folder=self.setup.objects, stage="build")

    def render(self, spec: PageSpec) -> PageDone | PageFailed:
        self.deps = []
        state = islands.start_page(self.setup.available)
        url = quote_url(spec.url)
        context: dict[str, Any] = {"page": {"path": spec.url, "url": self.setup.base_url + url}}
        if spec.row is not None:
            context["row"] = spec.row
        if spec.rows is not None:
            context["rows"] = spec.rows
            context["pagination"] = spec.pagination
        try:
            arm_cpu_limit(self.setup.cpu_seconds)
            try:
                template = self.env.get_template(spec.template)
                text = self._render_capped(template.generate(context), spec)
            finally:
                disarm_cpu_limit()
            facts: Mapping[str, object] = {}  # a file that is not HTML has none
            if spec.path.endswith(".html"):
                text = islands.add_loader(text)
                text, facts = pagefacts.finish_page(
                    text, url=spec.url, canonical=self.setup.base_url + url, lang=self.setup.lang
                )
            data = text.encode("utf-8", "surrogateescape")
            digest = sha256(data)
            pack, offset = self._write(data, digest)
        except Exception as exc:  # every failure of tenant code becomes a message
            return self._failure(exc, spec)
        return PageDone(
            hash=digest,
            size=len(data),
            deps=tuple(dict.fromkeys(self.deps)),
            islands=tuple(dict.fromkeys(state.used)),
            facts=facts,
            pack=pack,
            offset=offset,
        )

    def _write(self, data: bytes, digest: str) -> tuple[str | None, int]:
        self.written += 1
        if self.written <= LOOSE_PAGES:
            write_object_direct(self.setup.objects, data, digest)
            return None, 0
        if self.pack is None:
            self.pack = PackWriter(self.setup.objects)
        return self.pack.name, self.pack.add(data, digest)

    def _render_capped(self, chunks: Iterator[str], spec: PageSpec) -> str:
        parts: list[str] = []
        size = 0
        limit = self.setup.page_max_bytes
        for part in chunks:
            size += len(part)
            if size > limit:
                raise TemplateError(
                    f"page {spec.url} is over the limit of {limit} characters",
                    template=spec.template,
                    hint="raise [limits] page_max_bytes, or paginate the route",
                )
            parts.append(part)
        return "".join(parts)

    def _failure(self, exc: BaseException, spec: PageSpec) -> PageFailed:
        template, line = _template_frame(exc.__traceback__, self.setup.templates)
        hint: str | None = None
        kind = "template"
        if isinstance(exc, TemplateSyntaxError):
            template = exc.name or template
            line = exc.lineno
            message = f"syntax error: {exc.message}"
        elif isinstance(exc, TemplateError):
            template = exc.template or template or spec.template
            line = exc.line or line
            message = exc.message
            prefix = f"templates/{exc.template}" if exc.template else ""
            if prefix and message.startswith(prefix):
                message = message.split(": ", 1)[1]
            hint = exc.hint
        elif isinstance(exc, TemplateNotFound):
            message = f"template {exc.name!r} not found in {self.setup.templates.name}/"
            hint = "check the route's template and every extends/include"
            if template is None and exc.name == spec.template and spec.route >= 0:
                # the route's own template: the mistake is in site.toml, so name the key
                message = f"site.toml: routes[{spec.route}].template: {message}"
                kind = "route"
            template = template or (None if exc.name == spec.template else spec.template)
        elif isinstance(exc, QueryError):
            message = exc.message
            hint = exc.hint
            kind = "query"
        elif isinstance(exc, SecurityError):
            message = f"refused by the sandbox: {exc}"
        elif isinstance(exc, CpuExceeded):
            message = (
                f"rendering {spec.url} ran past its limit of {self.setup.cpu_seconds} CPU seconds"
            )
            hint = "simplify the template's loops, or raise [limits] template_cpu_seconds"
        elif isinstance(exc, MemoryError):
            message = f"rendering {spec.url} ran out of memory"
            hint = "the render process's memory is limited by [limits] template_memory_mb"
        elif isinstance(exc, RecursionError):
            message = f"rendering {spec.url} recursed too deeply"
        elif isinstance(exc, OSError) and is_disk_full(exc):  # writing the page's bytes
            error = self._no_room(exc, f"the page {spec.url} into {self.setup.objects}")
            message, hint, kind, template, line = error.message, error.hint, "disk", None, None
        else:
            message = f"{type(exc).__name__}: {exc}" if not _is_jinja_runtime(exc) else str(exc)
        if template is None and kind == "template":
            template = spec.template
        source_line = _source_line(self.setup.templates, template, line)
        return PageFailed(
            message=message,
            template=template,
            line=line,
            source_line=source_line,
            hint=hint,
            kind=kind,
        )


def _is_jinja_runtime(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("jinja2")


def _template_frame(tb: TracebackType | None, folder: Path) -> tuple[str | None, int | None]:
    """The innermost frame of a template file in the traceback: (name, line)."""
    root = str(folder.resolve())
    found: tuple[str | None, int | None] = (None, None)
    for frame, lineno in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        if filename.startswith(root + "/"):
            found = (filename[len(root) + 1 :], lineno)
    return found


def _source_line(folder: Path, template: str | None, line: int | None) -> str | None:
    if not template or not line:
        return None
    try:
        lines = (folder / template).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return lines[line - 1] if 0 < line <= len(lines) else None
