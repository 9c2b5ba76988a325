"""Tenant templates run in the sandbox: no Python internals, no files outside templates/.

And the mistakes authors make (a syntax error, a missing template, a missing
site.toml key, a bad cron string) name the file and the line or key.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError, UndefinedError
from sitekit import Host, SiteSpec, changes, html, listing, make_host

from render.build.sandbox import make_environment

SECRET = "TOP-SECRET-4111"
NOT_FOUND_HINT = "Hint: check the route's template and every extends/include\n"
NO_LIVE_HINT = "Hint: nothing was published; the site has no live version yet.\n"


def _host(
    tmp_path: Path, line: str, *, extra: dict[str, str] | None = None, sql: list[str] | None = None
) -> Host:
    """acme/blog whose index.html has ``line`` as its line 2."""
    templates = {"index.html": "<main>\n" + line + "\n</main>\n", **(extra or {})}
    host = make_host(
        tmp_path,
        sites={
            "acme/blog": SiteSpec(
                templates=templates,
                sql=sql or [],
                routes=[{"path": "/", "template": "index.html"}],
            )
        },
    )
    (tmp_path / "secret.txt").write_text(SECRET)
    return host


def _build(host: Host, tmp_path: Path) -> tuple[int, str]:
    before = listing(tmp_path, skip=[host.state_dir])
    result = host.cli("build", "acme/blog")
    assert changes(before, listing(tmp_path, skip=[host.state_dir])) == []
    objects = host.state_dir / "builds" / "acme" / "blog" / "objects"
    if objects.is_dir():  # nothing read from outside ever reaches the output
        assert not any(SECRET.encode() in p.read_bytes() for p in objects.rglob("*") if p.is_file())
    return result.exit_code, result.stderr


def _refused(attribute: str, owner: str, source: str) -> str:
    return (
        "Error: acme/blog: build: templates/index.html, line 2: refused by the sandbox: "
        f"access to attribute '{attribute}' of '{owner}' object is unsafe.\n"
        f"    {source}\n" + NO_LIVE_HINT
    )


ESCAPES = [
    ("{{ ''.__class__.__mro__ }}", "__class__", "str"),
    ("{{ ''.__class__.__base__.__subclasses__() }}", "__class__", "str"),
    ("{{ ''|attr('__class__') }}", "__class__", "str"),
    ("{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}", "__class__", "str"),
    ("{{ '{0.__class__.__mro__}'.format('') }}", "__class__", "str"),
    ("{{ '{x.__class__}'.format_map({'x': ''}) }}", "__class__", "str"),
    ("{% set f = '{0.__class__}' %}{{ f.format(site) }}", "__class__", "dict"),
    ("{{ '%s'|format(''.__class__) }}", "__class__", "str"),
    ("{{ self.__init__.__globals__ }}", "__init__", "TemplateReference"),
    ("{{ cycler.__init__.__globals__.os }}", "__init__", "type"),
    ("{{ lipsum.__globals__['os'] }}", "__globals__", "function"),
    ("{{ query.__self__ }}", "__self__", "method"),
    ("{{ [].append(1) }}", "append", "list"),
    ("{{ site.update({'base_url': 'https://evil.example'}) }}", "update", "dict"),
]


@pytest.mark.parametrize(("source", "attribute", "owner"), ESCAPES, ids=[s for s, _, _ in ESCAPES])
def test_reaching_python_internals_is_a_sandbox_error_naming_template_and_line(
    tmp_path: Path, source: str, attribute: str, owner: str
) -> None:
    host = _host(tmp_path, source)
    code, stderr = _build(host, tmp_path)
    assert stderr == _refused(attribute, owner, source)
    assert code == 1


def _not_found(name: str, source: str, *, template: str = "index.html", line: int = 2) -> str:
    return (
        f"Error: acme/blog: build: templates/{template}, line {line}: template {name!r} not found "
        f"in templates/\n    {source}\n" + NOT_FOUND_HINT
    )


OUTSIDE = [
    '{% include "../../x" %}',
    '{% include "../site.toml" %}',
    '{% include "sub/../../site.toml" %}',
    '{% include "..\\\\site.toml" %}',
    '{% include ["../../../secret.txt"] %}',
    '{% extends "../site.toml" %}',
    '{% import "../../x" as m %}',
    '{% from "/etc/passwd" import x %}',
]


@pytest.mark.parametrize("source", OUTSIDE)
def test_a_template_cannot_load_files_outside_its_templates_folder(
    tmp_path: Path, source: str
) -> None:
    host = _host(tmp_path, source)
    code, stderr = _build(host, tmp_path)
    name = source.split('"')[1].replace("\\\\", "\\")
    assert stderr == _not_found(name, source)
    assert code == 1


def test_a_rows_columns_read_as_attributes_follow_jinjas_rule(tmp_path: Path) -> None:
    """``row.x`` is the column, except where a dict method has the name; a missing one is an error."""
    env = make_environment(tmp_path)
    row = {"title": "T", "items": "column", "__class__": "c"}

    def render(source: str) -> str:
        return env.from_string(source).render(row=row)

    assert render("{{ row.title }}|{{ row['items'] }}|{{ row['__class__'] }}") == "T|column|c"
    assert render("{{ row.items()|list|length }}") == "3"  # the method, as Jinja defines it
    with pytest.raises(UndefinedError, match="'dict object' has no attribute 'nope'"):
        render("{{ row.nope }}")
    with pytest.raises(SecurityError):
        render("{{ row.__class__.__mro__ }}")


def test_a_template_name_from_the_database_cannot_leave_the_folder(tmp_path: Path) -> None:
    source = "{% include query('t')[0].name %}"
    host = make_host(
        tmp_path,
        sites={
            "acme/blog": SiteSpec(
                templates={"index.html": "<main>\n" + source + "\n</main>\n"},
                queries={"t": "select '../../../secret.txt' as name"},
            )
        },
    )
    (tmp_path / "secret.txt").write_text(SECRET)
    code, stderr = _build(host, tmp_path)
    assert stderr == _not_found("../../../secret.txt", source)
    assert code == 1


@pytest.mark.parametrize(
    ("name", "link", "target"),
    [("link.html", "link.html", "secret.txt"), ("shared/secret.txt", "shared", ".")],
    ids=["a-file", "a-folder"],
)
def test_a_symlink_in_templates_pointing_outside_is_not_found(
    tmp_path: Path, name: str, link: str, target: str
) -> None:
    source = '{% include "' + name + '" %}'
    host = _host(tmp_path, source)
    os.symlink(tmp_path / target, host.site_dir("acme/blog") / "templates" / link)
    code, stderr = _build(host, tmp_path)
    assert stderr == _not_found(name, source)
    assert code == 1


def _route_not_found(index: int, name: str) -> str:
    return (
        f"Error: acme/blog: build: site.toml: routes[{index}].template: template {name!r} not found "
        "in templates/\n" + NOT_FOUND_HINT
    )


def test_a_routes_template_that_is_a_symlink_outside_names_the_site_toml_key(
    tmp_path: Path,
) -> None:
    host = make_host(
        tmp_path, sites={"acme/blog": SiteSpec(routes=[{"path": "/", "template": "page.html"}])}
    )
    (tmp_path / "secret.txt").write_text(SECRET)
    os.symlink(tmp_path / "secret.txt", host.site_dir("acme/blog") / "templates" / "page.html")
    code, stderr = _build(host, tmp_path)
    assert stderr == _route_not_found(0, "page.html")
    assert code == 1


def test_a_symlink_that_stays_inside_templates_works(tmp_path: Path) -> None:
    host = make_host(
        tmp_path,
        sites={"acme/blog": SiteSpec(templates={"real.html": html("<p>shared {{ 6 * 7 }}</p>")})},
    )
    os.symlink("real.html", host.site_dir("acme/blog") / "templates" / "index.html")
    result = host.cli("build", "acme/blog", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "<p>shared 42</p>" in (tmp_path / "out" / "index.html").read_text()


# --- mistakes an author makes ---------------------------------------------------


MISTAKES = [
    pytest.param(
        "{% for post in rows %}{{ post.title }",
        {},
        "Error: acme/blog: build: templates/index.html, line 2: syntax error: unexpected '}'\n"
        "    {% for post in rows %}{{ post.title }\n" + NO_LIVE_HINT,
        id="a-syntax-error",
    ),
    pytest.param(
        '{% extends "base.html" %}',
        {
            "base.html": "<!doctype html>\n<title>x</title>\n{% block main %}{{ 1 + }}{% endblock %}\n"
        },
        "Error: acme/blog: build: templates/base.html, line 3: syntax error: unexpected "
        "'end of print statement'\n    {% block main %}{{ 1 + }}{% endblock %}\n" + NO_LIVE_HINT,
        id="a-syntax-error-in-an-extended-template-names-that-template",
    ),
    pytest.param(
        "{{ post.titel }}",
        {},
        "Error: acme/blog: build: templates/index.html, line 2: 'post' is undefined\n"
        "    {{ post.titel }}\n" + NO_LIVE_HINT,
        id="an-undefined-name",
    ),
    pytest.param(
        '{% include "partials/nav.html" %}',
        {},
        _not_found("partials/nav.html", '{% include "partials/nav.html" %}'),
        id="a-missing-included-template-names-the-including-template",
    ),
]


@pytest.mark.parametrize(("line", "extra", "expected"), MISTAKES)
def test_a_template_mistake_names_the_template_and_line(
    tmp_path: Path, line: str, extra: dict[str, str], expected: str
) -> None:
    code, stderr = _build(_host(tmp_path, line, extra=extra), tmp_path)
    assert stderr == expected
    assert code == 1


def test_a_routes_missing_template_names_the_site_toml_key(tmp_path: Path) -> None:
    routes = [
        {"path": "/", "template": "index.html"},
        {"path": "/about/", "template": "abuot.html"},
    ]
    host = make_host(tmp_path, sites={"acme/blog": SiteSpec(routes=routes)})
    code, stderr = _build(host, tmp_path)
    assert stderr == _route_not_found(1, "abuot.html")
    assert code == 1


CONFIG_ERROR = "Error: acme/blog: config: sites/acme/blog/site.toml: "
CONFIG_MISTAKES = [
    pytest.param(
        SiteSpec(site_toml='[site]\ndatabase = "site.db"\n\n[[routes]]\npath = "/"\n'),
        CONFIG_ERROR + "missing required key 'site.base_url'\n"
        "Error: sites/acme/blog/site.toml: missing required key 'routes[0].template'\n",
        id="missing-keys-name-the-file-and-each-key",
    ),
    pytest.param(
        SiteSpec(site={"schedule": "0 3 * *"}),
        CONFIG_ERROR + "site.schedule: expected 5 fields (minute hour day month weekday), "
        "got 4: '0 3 * *'\n",
        id="a-cron-string-with-4-fields-names-the-key",
    ),
    pytest.param(
        SiteSpec(site={"schedule": "61 3 * * *"}),
        CONFIG_ERROR + "site.schedule: minute field '61': '61' is out of range 0-59\n",
        id="a-cron-minute-out-of-range-names-the-key",
    ),
    pytest.param(
        SiteSpec(site={"templtes": "templates"}),
        CONFIG_ERROR + "unknown key 'site.templtes' (did you mean 'templates'?)\n",
        id="an-unknown-key-suggests-the-closest-one",
    ),
    pytest.param(
        SiteSpec(site_toml='[site]\nbase_url = "https://x.example\n'),
        CONFIG_ERROR + "invalid TOML: Illegal character '\\n' (at line 2, column 30)\n",
        id="invalid-toml-names-the-line",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), CONFIG_MISTAKES)
def test_a_site_toml_mistake_names_the_file_and_the_key_or_line(
    tmp_path: Path, spec: SiteSpec, expected: str
) -> None:
    code, stderr = _build(make_host(tmp_path, sites={"acme/blog": spec}), tmp_path)
    assert stderr == expected
    assert code == 2
