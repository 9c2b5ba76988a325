"""finish_page: defaults injected where the template left them out, facts the lint relies on."""

from __future__ import annotations

import json
import random
from html.parser import HTMLParser

import pytest
from seokit import page_html

from render.build.pagefacts import FACTS_VERSION, facts_of, finish_page

URL = "/posts/hello/"
CANONICAL = "https://www.example.com/posts/hello/"


def finish(html: str, *, lang: str = "en") -> tuple[str, dict[str, object]]:
    return finish_page(html, url=URL, canonical=CANONICAL, lang=lang)


class _Head(HTMLParser):
    """Python's own HTML parser, to read what we injected independently of lxml."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.html_attrs: list[dict[str, str | None]] = []
        self.links: list[dict[str, str | None]] = []
        self.metas: list[dict[str, str | None]] = []
        self.in_head = False
        self.head_closed = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        if tag == "html":
            self.html_attrs.append(d)
        elif tag == "link":
            self.links.append(d)
        elif tag == "meta":
            self.metas.append(d)

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.head_closed = True


def parsed(html: str) -> _Head:
    parser = _Head()
    parser.feed(html)
    parser.close()
    return parser


def test_defaults_are_injected_into_head_and_html() -> None:
    html, facts = finish(page_html())
    head = parsed(html)
    assert head.html_attrs == [{"lang": "en"}]
    canonicals = [link for link in head.links if link.get("rel") == "canonical"]
    assert canonicals == [{"rel": "canonical", "href": CANONICAL}]
    assert {"property": "og:url", "content": CANONICAL} in head.metas
    # injected inside <head>, before it closes
    assert html.index('rel="canonical"') < html.index("</head>")
    assert facts["canonical"] == CANONICAL
    assert facts["lang"] == "en"


def test_template_values_win() -> None:
    source = page_html(
        lang="fr",
        head='<link rel="canonical" href="https://www.example.com/other/">\n'
        '<meta property="og:url" content="https://www.example.com/og/">\n',
    )
    html, facts = finish(source)
    assert html == source  # nothing to add: the bytes the template wrote are kept
    assert facts["canonical"] == "https://www.example.com/other/"
    assert facts["lang"] == "fr"


def test_og_url_follows_the_templates_canonical() -> None:
    html, _ = finish(page_html(head='<link rel="canonical" href="/elsewhere/">\n'))
    head = parsed(html)
    assert {"property": "og:url", "content": "https://www.example.com/elsewhere/"} in head.metas
    assert len([link for link in head.links if link.get("rel") == "canonical"]) == 1


def test_lang_is_added_to_an_html_tag_with_other_attributes() -> None:
    html, _ = finish(
        '<!DOCTYPE html><HTML class="x"><head><title>T</title></head><body></body></HTML>'
    )
    assert parsed(html).html_attrs == [{"lang": "en", "class": "x"}]


def test_page_without_html_head_or_body_tags_gets_defaults() -> None:
    html, facts = finish("<!doctype html><title>Bare</title><h1>Bare</h1>")
    head = parsed(html)
    assert head.html_attrs == [{"lang": "en"}]
    assert any(link.get("rel") == "canonical" for link in head.links)
    assert facts["title"] == "Bare"
    assert facts["h1"] == 1


def test_empty_lang_setting_adds_no_lang() -> None:
    html, facts = finish(page_html(), lang="")
    assert parsed(html).html_attrs == [{}]
    assert facts["lang"] is None


def test_facts_of_a_realistic_page() -> None:
    body = (
        "<h1>Hello</h1>\n"
        '<img src="/static/a.png" alt="A">\n<img src="b.png">\n<img src="/c.png" alt="">\n'
        '<p><a href="../">up</a> <a href="other/?x=1#top">rel</a> <a href="#frag">frag</a>'
        ' <a href="https://www.example.com/abs/">abs</a> <a href="https://elsewhere.org/">ext</a>'
        ' <a href="mailto:a@b.c">mail</a> <a href="/caf%C3%A9/">café</a> <a href="//www.example.com/pr/">pr</a></p>\n'
        '<picture><source srcset="/img/1.webp 1x, /img/2.webp 2x"><img src="/img/1.jpg" alt="x"></picture>\n'
        '<script src="/static/app.js"></script>\n'
        "<svg><title>icon</title></svg>\n"
    )
    head = (
        '<meta name="robots" content="index, follow">\n'
        '<script type="application/ld+json">{"@type": "Article"}</script>\n'
        '<link rel="preconnect" href="https://fonts.example.net">\n'
    )
    facts = facts_of(
        page_html("Hello &amp; welcome", body=body, head=head, lang="en"), canonical=CANONICAL
    )
    assert facts["v"] == FACTS_VERSION
    assert facts["title"] == "Hello & welcome"
    assert facts["description"] == "What this page is about."
    assert facts["h1"] == 1
    assert facts["img_no_alt"] == ["b.png"]
    assert facts["img_no_alt_count"] == 1
    assert facts["links"] == ["/", "/abs/", "/café/", "/posts/", "/posts/hello/other/", "/pr/"]
    assert facts["assets"] == [
        "/c.png",
        "/img/1.jpg",
        "/img/1.webp",
        "/img/2.webp",
        "/posts/hello/b.png",
        "/static/a.png",
        "/static/app.js",
        "/static/site.css",
    ]
    assert facts["noindex"] is False
    assert facts["ldjson"] == 1 and facts["ldjson_errors"] == []
    assert facts["viewport"] is True
    assert facts["canonical"] is None  # as it is: facts_of adds nothing
    json.dumps(facts)  # stored in the build manifest: must be JSON


def test_noindex_invalid_jsonld_and_missing_bits() -> None:
    source = (
        "<html><head><title>  </title>"
        '<meta name="ROBOTS" content="noindex,nofollow">'
        '<script type="application/ld+json">{"@type": "Article",}</script>'
        "</head><body><h1>a</h1><h1>b</h1></body></html>"
    )
    facts = facts_of(source, canonical=CANONICAL)
    assert facts["title"] == ""
    assert facts["description"] is None
    assert facts["noindex"] is True
    assert facts["h1"] == 2
    assert facts["viewport"] is False
    assert facts["lang"] is None
    assert facts["ldjson_errors"] == [
        "line 1 column 21: Expecting property name enclosed in double quotes"
    ]


def test_base_href_on_another_host_makes_links_external() -> None:
    source = page_html(
        head='<base href="https://cdn.example.org/">\n',
        body='<h1>x</h1><a href="/a/">a</a>',
        lang="en",
    )
    facts = facts_of(source, canonical=CANONICAL)
    assert facts["links"] == []
    assert facts["assets"] == []


BROKEN = [
    "",
    "   \n",
    "<html><head><title>Unclosed<body><h1>x",
    "<p>a\x00b</p><h1>nul</h1>",
    "\ufffd\x80\x81<h1>stray</h1>\x1b[0m",
    "<div>" * 5000 + "<h1>deep</h1>",
    "<a href='http://[::1'>bad ipv6</a><a href='http://a b/'>space</a><img src='%zz'>",
    "<!-- unclosed comment <h1>x</h1>",
    "<script>document.write('</scr' + 'ipt>')",
    '<html lang="en"><head><link rel="canonical" href="http://[bad"></head></html>',
    "<svg><title>only svg</title></svg>",
    '<script type="application/ld+json">' + "[" * 100_000 + "</script>",
    "<html>\ud800</html>",
    "<base href='javascript:alert(1)'><a href='x'>x</a>",
]


@pytest.mark.parametrize("source", BROKEN, ids=range(len(BROKEN)))
def test_broken_html_never_crashes(source: str) -> None:
    html, facts = finish(source)
    json.dumps(facts)
    assert facts["v"] == FACTS_VERSION
    assert facts["canonical"]
    assert finish(source) == (html, facts)  # deterministic


def test_random_bytes_never_crash() -> None:
    rng = random.Random(4)
    alphabet = "<>/=\"' ahtmlbodyeimgsrcaltref!-&;#\x00\x7f\u00e9\u2028"
    for _ in range(200):
        source = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        html, facts = finish(source)
        assert isinstance(html, str)
        json.dumps(facts)


def test_empty_page_has_empty_facts() -> None:
    _, facts = finish("")
    assert facts["empty"] is True
    assert facts["title"] is None


def test_absolute_links_resolve_as_urljoin_would() -> None:
    body = (
        '<a href="https://www.example.com/a/">a</a> <a href="HTTPS://WWW.EXAMPLE.COM/b/?x=1#top">b</a>'
        ' <a href="https://www.example.com">root</a> <a href="https://www.example.com/c;v=1">params</a>'
        ' <a href="https://www.example.com/d%20e/">escaped</a> <a href="http://www.example.com/http/">http</a>'
        ' <a href="https://www.example.com:8443/port/">port</a> <a href="https://elsewhere.org/x/">ext</a>'
        ' <a href=" https://www.example.com/spaced/ ">spaced</a> <a href="https://www.example.com/a/">again</a>'
    )
    head = f'<link rel="canonical" href="{CANONICAL}">\n'
    facts = facts_of(page_html(body=body, head=head), canonical=CANONICAL)
    assert facts["links"] == ["/", "/a/", "/b/", "/c;v=1", "/d e/", "/posts/hello/", "/spaced/"]
    assert facts["canonical"] == CANONICAL


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        (CANONICAL, CANONICAL),
        ("HTTPS://www.example.com/x/", "https://www.example.com/x/"),
        ("/x/", "https://www.example.com/x/"),
        ("x/", "https://www.example.com/posts/hello/x/"),
        ("https://www.example.com/a?", "https://www.example.com/a"),
        (" https://www.example.com/s/ ", "https://www.example.com/s/"),
    ],
)
def test_the_templates_canonical_is_made_absolute(href: str, expected: str) -> None:
    facts = facts_of(page_html(head=f'<link rel="canonical" href="{href}">\n'), canonical=CANONICAL)
    assert facts["canonical"] == expected


@pytest.mark.parametrize(
    ("source", "title"),
    [
        ("<svg><title>icon</title></svg><title>Real</title>", "Real"),
        ("<title>Head</title><svg><title>icon</title></svg>", "Head"),
        ("<svg></svg><title>After</title>", "After"),
        ("<svg><title>only</title></svg>", None),
    ],
)
def test_svg_titles_are_not_the_page_title(source: str, title: str | None) -> None:
    assert facts_of(source, canonical=CANONICAL)["title"] == title


def test_base_href_anywhere_in_the_page_sets_the_base() -> None:
    facts = facts_of('<a href="x/">x</a><BASE href="/docs/">', canonical=CANONICAL)
    assert facts["links"] == ["/docs/x/"]
