"""Islands: the ``{% island %}`` tag, props serialization, the client loader.

::

    {% island "Counter" hydrate="visible" props={"start": row.likes} %}
      <button>{{ row.likes }}</button>
    {% endisland %}

renders the fallback inside ``<render-island component=... hydrate=... props=...>``
with the props as JSON in an escaped attribute, and the page gets one
``<script type="module" src="/_render/islands.js">`` in its head. Pages carry no
inline script, so a site can run a strict Content-Security-Policy. The loader
imports ``/islands/<Component>.js`` from the site's static folder when the
hydrate condition holds and calls its default export with ``(element, props)``.

With ``[site] service_worker`` on, the loader also registers ``/sw.js`` (the
worker that keeps a visit on one version, ``render/assets/sw.js``), and a page
without islands gets ``<script type="module" src="/_render/register.js">``
instead: every page registers the worker with one module script, none inline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from markupsafe import Markup, escape

from render.errors import TemplateError

HYDRATE = ("load", "idle", "visible", "interaction", "media", "only", "none")
LOADER_PATH = "_render/islands.js"
LOADER_TAG = f'<script type="module" src="/{LOADER_PATH}"></script>'
WORKER_PATH = "sw.js"
REGISTER_PATH = "_render/register.js"
REGISTER_TAG = f'<script type="module" src="/{REGISTER_PATH}"></script>'
COMPONENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_LOADER_MARKERS = tuple(
    re.compile(m, re.IGNORECASE | re.ASCII) for m in (r"</head\s*>", r"<body[\s/>]", r"</body\s*>")
)


def _asset(name: str) -> bytes:
    return resources.files("render").joinpath(f"assets/{name}").read_bytes()


def loader_source(*, service_worker: bool = False) -> bytes:
    """The loader script shipped with render (``/_render/islands.js``), registering the worker."""
    return _asset("islands.js") + (_asset("register.js") if service_worker else b"")


def register_source() -> bytes:
    """``/_render/register.js``: registers ``/sw.js`` on a page without islands."""
    return _asset("register.js")


def worker_source() -> bytes:
    """``/sw.js``: the service worker that pins each visit to one version."""
    return _asset("sw.js")


@dataclass
class PageIslands:
    """What the islands of the page being rendered need; reset for every page."""

    available: frozenset[str] = frozenset()
    used: list[str] = field(default_factory=list)  # components whose module the page loads
    needs_loader: bool = False


current = PageIslands()


def start_page(available: frozenset[str]) -> PageIslands:
    """Reset the per-page state before rendering a page (one render per process at a time)."""
    global current
    current = PageIslands(available=available)
    return current


def add_loader(html: str, *, service_worker: bool = False) -> str:
    """Put the loader's script tag (or the worker's registration) in the head of a page."""
    if current.needs_loader:
        tag = LOADER_TAG
    elif service_worker:
        tag = REGISTER_TAG
    else:
        return html
    # Search the page itself: str.lower() can change a text's length ('İ' -> 'i̇'),
    # so an offset found in a lowered copy can land inside an attribute.
    for marker in _LOADER_MARKERS:
        found = marker.search(html)
        if found is not None:
            return html[: found.start()] + tag + html[found.start() :]
    return html + tag


def props_attribute(props: Any, *, where: Callable[[], TemplateError]) -> str:
    try:
        text = json.dumps(props, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        err = where()
        err.message = f"{err.message}: props are not JSON: {exc}"
        raise err from None
    return str(escape(text))


class IslandExtension(Extension):
    """``{% island "Name" hydrate="..." props={...} media="..." %}fallback{% endisland %}``."""

    tags = {"island"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        component = parser.parse_expression()
        keywords: list[nodes.Keyword] = []
        while parser.stream.current.type != "block_end":
            parser.stream.skip_if("comma")
            key = parser.stream.expect("name")
            if key.value not in ("hydrate", "props", "media"):
                parser.fail(
                    f"island: unknown argument {key.value!r} (hydrate, props, media)", key.lineno
                )
            parser.stream.expect("assign")
            keywords.append(nodes.Keyword(key.value, parser.parse_expression()))
        body = parser.parse_statements(("name:endisland",), drop_needle=True)
        args = [component, nodes.Const(parser.name), nodes.Const(lineno)]
        call = self.call_method("_render", args, keywords)
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render(
        self,
        component: Any,
        template: str | None,
        lineno: int,
        *,
        caller: Callable[[], str],
        hydrate: Any = "load",
        props: Any = None,
        media: Any = None,
    ) -> Markup:
        def error(message: str) -> TemplateError:
            return TemplateError(f"island {component!r}: {message}", template=template, line=lineno)

        if not isinstance(component, str) or not COMPONENT_NAME.match(component):
            raise error("a component name is letters, digits, '-' and '_', starting with a letter")
        if hydrate not in HYDRATE:
            raise error(f"hydrate must be one of {', '.join(HYDRATE)}; got {hydrate!r}")
        if (hydrate == "media") != (media is not None):
            raise error('hydrate="media" needs media="(query)", and media needs hydrate="media"')
        if hydrate != "none":
            if component not in current.available:
                raise TemplateError(
                    f"island component {component!r} has no module static/islands/{component}.js",
                    template=template,
                    line=lineno,
                    hint=f"add static/islands/{component}.js, or fix the component's name",
                )
            current.needs_loader = True
            # Only components the client loads: a hydrate="none" island needs no module,
            # and a reused page's components are checked against static/islands/.
            current.used.append(component)
        attrs = f'component="{escape(component)}" hydrate="{escape(hydrate)}"'
        if media is not None:
            attrs += f' media="{escape(str(media))}"'
        if props is not None:
            attrs += f' props="{props_attribute(props, where=lambda: error("bad props"))}"'
        inner = "" if hydrate == "only" else caller()
        return Markup(f"<render-island {attrs}>{inner}</render-island>")
