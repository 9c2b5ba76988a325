"""Islands: escaped props, one loader tag where needed, clear errors, a small loader.

Pages are parsed with real HTML parsers (lxml's libxml2 and the standard
library's html.parser), never matched as strings, to show that no value from
the database adds an element or an attribute.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from sitekit import Host, SiteSpec, html, make_host

from render import islands
from render.build.tree import Build

COUNTER_JS = (
    "export default function counter(element, props) { element.dataset.hydrated = 'yes'; }\n"
)
PAYLOADS = [
    "plain \"double\" and 'single' quotes",
    '" onmouseover="alert(1)" x="',
    "' onfocus='alert(1)' autofocus='",
    "</script><script>alert(1)</script>",
    "<!--<script>",
    "</render-island><img src=x onerror=alert(1)>",
    "&quot; onclick=&quot;alert(1)",
    "back\\slash \u2028 line separator \u00e9 \U0001f600",
    "]]><svg onload=alert(1)>",
]
LOADER = '<script type="module" src="/_render/islands.js"></script>'


def _host(
    tmp_path: Path,
    templates: dict[str, str],
    *,
    static: dict[str, str] | None = None,
    rows: bool = True,
) -> Host:
    routes: list[dict[str, str]] = [{"path": "/", "template": "index.html"}]
    if "item.html" in templates:
        routes.append(
            {
                "path": "/items/{id}/",
                "query": "select * from items order by id",
                "template": "item.html",
            }
        )
    host = make_host(
        tmp_path,
        sites={
            "acme/blog": SiteSpec(
                templates=templates,
                routes=routes,
                static={"islands/Counter.js": COUNTER_JS, "islands/Share.js": COUNTER_JS}
                if static is None
                else static,
                sql=[
                    "create table items (id integer primary key, v text not null, n integer not null)"
                ],
            )
        },
    )
    if rows:
        db = sqlite3.connect(host.site_dir("acme/blog") / "site.db")
        db.executemany(
            "insert into items values (?, ?, ?)",
            [(i, v, i * 10) for i, v in enumerate(PAYLOADS, 1)],
        )
        db.commit()
        db.close()
    return host


class _Inventory(HTMLParser):
    """Every start tag with its attributes, as the standard library's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _inventory(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Inventory()
    parser.feed(page)
    parser.close()
    return parser.tags


ITEM = html(
    '<p title="{{ row.v }}">{{ row.v }}</p>\n'
    '{% island "Counter" hydrate="visible" props={"v": row.v, "n": row.n, "nested": {"list": [row.v, 1, none, true]}} %}'
    "<button>{{ row.v }}</button>{% endisland %}\n"
    '<script type="application/ld+json">{{ {"name": row.v}|tojson }}</script>',
    title="Item {{ row.id }}",
)


def test_props_and_data_in_attributes_and_scripts_cannot_break_out(tmp_path: Path) -> None:
    host = _host(tmp_path, {"index.html": html("<p>home</p>"), "item.html": ITEM})
    build = host.build("acme/blog")
    for number, payload in enumerate(PAYLOADS, 1):
        page = build.read(f"items/{number}/index.html").decode()
        tree = lxml.html.document_fromstring(page)
        body = tree.body
        # the elements are exactly those of the template: nothing injected
        assert [el.tag for el in body.iter()] == [
            "body",
            "h1",
            "p",
            "render-island",
            "button",
            "script",
        ]
        assert [el.tag for el in tree.head.iter("script")] == ["script"]
        (island,) = body.iter("render-island")
        assert sorted(island.attrib) == ["component", "hydrate", "props"]
        assert (island.get("component"), island.get("hydrate")) == ("Counter", "visible")
        assert json.loads(island.get("props")) == {
            "v": payload,
            "n": number * 10,
            "nested": {"list": [payload, 1, None, True]},
        }
        assert island.find("button").text == payload
        (para,) = body.iter("p")
        assert dict(para.attrib) == {"title": payload} and para.text == payload
        (ld,) = body.iter("script")
        assert dict(ld.attrib) == {"type": "application/ld+json"}
        assert json.loads(ld.text) == {"name": payload}
        # the standard library's parser sees the same elements and attributes
        tags = _inventory(page)
        assert [t for t, _ in tags if t not in ("html", "head", "meta", "title", "link")] == [
            "script",
            "body",
            "h1",
            "p",
            "render-island",
            "button",
            "script",
        ]
        island_attrs = next(a for t, a in tags if t == "render-island")
        assert set(island_attrs) == {"component", "hydrate", "props"}
        assert json.loads(island_attrs["props"] or "") == json.loads(island.get("props"))


def _scripts(page: bytes) -> list[tuple[str, dict[str, str]]]:
    tree = lxml.html.document_fromstring(page.decode())
    return [(el.getparent().tag, dict(el.attrib)) for el in tree.iter("script")]


LOADER_ATTRS = {"type": "module", "src": "/_render/islands.js"}


def test_one_loader_script_in_the_head_of_a_page_with_islands_and_none_without(
    tmp_path: Path,
) -> None:
    index = html(
        '{% island "Counter" hydrate="load" props={"n": 1} %}<b>1</b>{% endisland %}\n'
        '{% island "Share" hydrate="idle" %}<b>share</b>{% endisland %}\n'
        '{% island "Counter" hydrate="interaction" props={"n": 2} %}<b>2</b>{% endisland %}'
    )
    templates = {"index.html": index, "about.html": html("<p>no islands here</p>")}
    host = make_host(
        tmp_path,
        sites={
            "acme/blog": SiteSpec(
                templates=templates,
                routes=[
                    {"path": "/", "template": "index.html"},
                    {"path": "/about/", "template": "about.html"},
                ],
                static={"islands/Counter.js": COUNTER_JS, "islands/Share.js": COUNTER_JS},
            )
        },
    )
    build = host.build("acme/blog")
    assert _scripts(build.read("index.html")) == [("head", LOADER_ATTRS)]
    assert _scripts(build.read("about/index.html")) == []
    assert build.read("_render/islands.js") == islands.loader_source()
    assert build.page("index.html").islands == ("Counter", "Share")  # type: ignore[union-attr]
    assert build.page("about/index.html").islands == ()  # type: ignore[union-attr]
    # pages carry no inline script: a strict Content-Security-Policy works
    for path in ("index.html", "about/index.html"):
        tree = lxml.html.document_fromstring(build.read(path).decode())
        assert all(el.get("src") for el in tree.iter("script"))
        assert not any(name.startswith("on") for el in tree.iter() for name in el.attrib)


def test_a_page_whose_islands_are_all_hydrate_none_gets_no_loader_by_design(tmp_path: Path) -> None:
    # hydrate="none" is static HTML that never runs: loading a script for it would
    # cost every visitor a request for nothing. It needs no module either, and a
    # rebuild that reuses the page must not ask for one.
    index = html('{% island "Static" hydrate="none" props={"a": 1} %}<p>static</p>{% endisland %}')
    host = make_host(tmp_path, sites={"acme/blog": SiteSpec(templates={"index.html": index})})
    first = host.build("acme/blog")
    assert _scripts(first.read("index.html")) == []
    assert "_render/islands.js" not in first.files
    tree = lxml.html.document_fromstring(first.read("index.html").decode())
    (island,) = tree.body.iter("render-island")
    assert dict(island.attrib) == {"component": "Static", "hydrate": "none", "props": '{"a":1}'}
    second = host.build("acme/blog")
    assert (second.rendered, second.reused) == (0, 1)
    assert second.files == first.files


def test_the_loader_goes_in_the_head_even_when_text_changes_length_in_lower_case(
    tmp_path: Path,
) -> None:
    # 'İ'.lower() is two characters: an offset found in a lowered copy of the page
    # once put the script tag inside the island's component attribute.
    index = html('{% island "Counter" hydrate="load" %}<b>x</b>{% endisland %}', title="İ" * 40)
    host = make_host(
        tmp_path,
        sites={
            "acme/blog": SiteSpec(
                templates={"index.html": index}, static={"islands/Counter.js": COUNTER_JS}
            )
        },
    )
    page = host.build("acme/blog").read("index.html")
    assert _scripts(page) == [("head", LOADER_ATTRS)]
    (island,) = lxml.html.document_fromstring(page.decode()).body.iter("render-island")
    assert island.get("component") == "Counter"


def _build_error(host: Host) -> tuple[int, str]:
    result = host.cli("build", "acme/blog")
    return result.exit_code, result.stderr


def test_a_component_without_a_module_names_template_line_and_component(tmp_path: Path) -> None:
    source = '{% island "Likes" hydrate="visible" props={"n": 1} %}<b>1</b>{% endisland %}'
    host = _host(
        tmp_path, {"index.html": "<main>\n<p>x</p>\n" + source + "\n</main>\n"}, rows=False
    )
    code, stderr = _build_error(host)
    assert stderr == (
        "Error: acme/blog: build: templates/index.html, line 3: island component 'Likes' has no "
        f"module static/islands/Likes.js\n    {source}\n"
        "Hint: add static/islands/Likes.js, or fix the component's name\n"
    )
    assert code == 1


def test_a_component_without_a_module_in_an_included_template_names_that_template(
    tmp_path: Path,
) -> None:
    source = '{% island "Counterr" %}<b>1</b>{% endisland %}'
    host = _host(
        tmp_path,
        {
            "index.html": '<main>\n{% include "parts/widget.html" %}\n</main>\n',
            "parts/widget.html": "\n\n" + source + "\n",
        },
        rows=False,
    )
    code, stderr = _build_error(host)
    assert stderr == (
        "Error: acme/blog: build: templates/parts/widget.html, line 3: island component 'Counterr' has "
        f"no module static/islands/Counterr.js\n    {source}\n"
        "Hint: add static/islands/Counterr.js, or fix the component's name\n"
    )
    assert code == 1


NO_LIVE_HINT = "Hint: nothing was published; the site has no live version yet.\n"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            '{% island "Counter" hydrate="sometimes" %}x{% endisland %}',
            "island 'Counter': hydrate must be one of load, idle, visible, interaction, media, only, none; "
            "got 'sometimes'",
        ),
        (
            '{% island "Counter" hydrate="media" %}x{% endisland %}',
            'island \'Counter\': hydrate="media" needs media="(query)", and media needs hydrate="media"',
        ),
        (
            '{% island "Counter" hydrate="load" media="(max-width: 600px)" %}x{% endisland %}',
            'island \'Counter\': hydrate="media" needs media="(query)", and media needs hydrate="media"',
        ),
        (
            '{% island "../../evil" %}x{% endisland %}',
            "island '../../evil': a component name is letters, digits, '-' and '_', starting with a letter",
        ),
        (
            '{% island "Counter" props={"r": range(3)} %}x{% endisland %}',
            "island 'Counter': bad props: props are not JSON: Object of type range is not JSON serializable",
        ),
    ],
)
def test_bad_island_arguments_name_template_and_line(
    tmp_path: Path, source: str, message: str
) -> None:
    host = _host(tmp_path, {"index.html": "<main>\n" + source + "\n</main>\n"}, rows=False)
    code, stderr = _build_error(host)
    assert (
        stderr
        == f"Error: acme/blog: build: templates/index.html, line 2: {message}\n    {source}\n"
        + NO_LIVE_HINT
    )
    assert code == 1


def test_an_unknown_island_argument_is_a_syntax_error_naming_template_and_line(
    tmp_path: Path,
) -> None:
    source = '{% island "Counter" hydrat="load" %}x{% endisland %}'
    host = _host(tmp_path, {"index.html": "<main>\n" + source + "\n</main>\n"}, rows=False)
    code, stderr = _build_error(host)
    assert stderr == (
        "Error: acme/blog: build: templates/index.html, line 2: syntax error: island: unknown argument "
        f"'hydrat' (hydrate, props, media)\n    {source}\n" + NO_LIVE_HINT
    )
    assert code == 1


def test_hydrate_only_renders_no_fallback_and_media_keeps_its_query(tmp_path: Path) -> None:
    index = html(
        '{% island "Counter" hydrate="only" %}<b>server fallback</b>{% endisland %}\n'
        '{% island "Share" hydrate="media" media="(max-width: 600px)" %}<b>wide</b>{% endisland %}'
    )
    host = _host(tmp_path, {"index.html": index}, rows=False)
    tree = lxml.html.document_fromstring(host.build("acme/blog").read("index.html").decode())
    only, media = tree.body.iter("render-island")
    assert (dict(only.attrib), len(only), only.text) == (
        {"component": "Counter", "hydrate": "only"},
        0,
        None,
    )
    assert dict(media.attrib) == {
        "component": "Share",
        "hydrate": "media",
        "media": "(max-width: 600px)",
    }


def test_the_loader_is_at_most_1024_bytes_gzipped() -> None:
    source = islands.loader_source()
    size = len(gzip.compress(source, compresslevel=9))
    assert size <= 1024, f"islands.js is {size} bytes gzipped"
    text = source.decode()
    for mode in islands.HYDRATE:  # every hydrate mode but none has a trigger in the loader
        assert mode == "none" or f"{mode}:" in text


def _island_files(build: Build) -> dict[str, Any]:
    return {p: e.size for p, e in build.files.items() if p.startswith(("islands/", "_render/"))}


def test_island_modules_are_copied_from_static_and_the_loader_is_shipped_once(
    tmp_path: Path,
) -> None:
    host = _host(
        tmp_path, {"index.html": html('{% island "Counter" %}<b>1</b>{% endisland %}')}, rows=False
    )
    build = host.build("acme/blog")
    assert _island_files(build) == {
        "_render/islands.js": len(islands.loader_source()),
        "islands/Counter.js": len(COUNTER_JS),
        "islands/Share.js": len(COUNTER_JS),
    }
