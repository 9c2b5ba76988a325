"""Write a whole host (render.toml, sites, templates, static files, databases) into a folder.

    from sitekit import SiteSpec, make_host

    host = make_host(tmp_path, sites={
        "acme/blog": SiteSpec(
            sql=["create table posts (id integer primary key, slug text)",
                 "insert into posts values (1, 'hello')"],
            routes=[{"path": "/", "template": "index.html"},
                    {"path": "/posts/{slug}/", "query": "select * from posts",
                     "template": "post.html"}],
            templates={"index.html": "<h1>home</h1>", "post.html": "{{ row.slug }}"},
        ),
    }, limits={"template_cpu_seconds": 1})
    build = host.build("acme/blog")            # snapshot + build, raises RenderError
    result = host.cli("nightly")               # click's CliRunner, --config added

Everything is real: real files, a real SQLite database, the real CLI. Nothing
here patches render's code.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from render import builder
from render.build import snapshot
from render.build.tree import Build
from render.config import HostConfig, SiteConfig, find_site, load_host, load_site
from render.pipeline import Options, RunReport, run_site

BASE_URL = "https://example.com"
INDEX_ONLY = ({"path": "/", "template": "index.html"},)


def html(body: str, *, title: str = "Page {{ page.url }}", head: str = "") -> str:
    """A template source for a whole page that passes the SEO lint; ``body`` is Jinja too.

    The default title names the page's URL, so every page's title is its own.
    """
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n"
        f'<meta name="description" content="{title}: a page of a test site.">\n'
        f"{head}</head>\n<body>\n<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
    )


@dataclass(frozen=True, kw_only=True)
class SiteSpec:
    """One site to write under ``sites/<owner>/<name>/``."""

    templates: Mapping[str, str] = field(default_factory=lambda: {"index.html": html("<p>ok</p>")})
    routes: Sequence[Mapping[str, Any]] = INDEX_ONLY
    queries: Mapping[str, str] = field(default_factory=dict)
    sql: Sequence[str] = ()  # statements run on a fresh site.db (one is created even when empty)
    static: Mapping[str, str | bytes] = field(default_factory=dict)
    base_url: str = BASE_URL
    site: Mapping[str, Any] = field(
        default_factory=dict
    )  # more [site] keys (base_url wins over the field)
    extra_toml: str = ""  # appended verbatim to the generated site.toml
    site_toml: str | None = None  # the whole site.toml, verbatim (replaces the generated one)
    # [lighthouse] table; off by default so a build test does not run audits (None: no table)
    lighthouse: Mapping[str, Any] | None = field(default_factory=lambda: {"enabled": False})
    database: bool = True  # False: write no site.db at all


@dataclass(frozen=True)
class Host:
    """A host written by ``make_host``; methods load its config fresh each time."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "render.toml"

    @property
    def config(self) -> HostConfig:
        return load_host(self.config_path)

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    def site_dir(self, name: str) -> Path:
        owner, _, site = name.partition("/")
        return self.root / "sites" / owner / site

    def site(self, name: str) -> SiteConfig:
        host = self.config
        return load_site(find_site(host, name), host=host)

    def build(self, name: str) -> Build:
        """Snapshot and build one site directly (no ledger, no skip); raises ``RenderError``."""
        host = self.config
        site = load_site(find_site(host, name), host=host)
        into = host.state_dir / "snapshots" / site.id.owner / site.id.name
        with snapshot.take(site, into=into) as snap:
            return builder.build(site, snap, host=host)

    def run(self, name: str, *, force: bool = True, **options: Any) -> RunReport:
        """The whole chain through ``pipeline.run_site``; ``options`` are ``pipeline.Options`` fields."""
        host = self.config
        site = load_site(find_site(host, name), host=host)
        return run_site(site, host=host, reason="test", options=Options(force=force, **options))

    def cli(self, *args: str) -> Result:
        """``render <args> --config <render.toml>`` in click's CliRunner (output has stdout+stderr)."""
        from render.cli import main

        runner = CliRunner()
        return runner.invoke(
            main, [*args, "--config", str(self.config_path)], catch_exceptions=False
        )


def make_host(
    tmp_path: Path,
    *,
    sites: Mapping[str, SiteSpec] | None = None,
    limits: Mapping[str, Any] | None = None,
    extra_toml: str = "",
    folder: str = "host",
) -> Host:
    """Write ``render.toml`` and every site into ``tmp_path/folder``; return the ``Host``."""
    root = tmp_path / folder
    root.mkdir(parents=True, exist_ok=True)
    text = ""
    if limits:
        text += "[limits]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in limits.items())
    (root / "render.toml").write_text(text + extra_toml, encoding="utf-8")
    (root / "sites").mkdir(exist_ok=True)
    host = Host(root)
    for name, spec in (sites or {}).items():
        write_site(host.site_dir(name), spec)
    return host


def write_site(folder: Path, spec: SiteSpec) -> None:
    """Write one site's ``site.toml``, templates, static files and database into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.toml").write_text(
        spec.site_toml if spec.site_toml is not None else site_toml(spec), encoding="utf-8"
    )
    templates = folder / str(spec.site.get("templates", "templates"))
    templates.mkdir(parents=True, exist_ok=True)
    for rel, source in spec.templates.items():
        path = templates / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    static = folder / str(spec.site.get("static", "static"))
    for rel, data in spec.static.items():
        path = static / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    if spec.database:
        make_database(folder / str(spec.site.get("database", "site.db")), spec.sql)


def make_database(path: Path, statements: Sequence[str]) -> None:
    """A fresh SQLite file holding what ``statements`` create (rollback-journal mode)."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    try:
        for statement in statements:
            db.execute(statement)
        db.commit()
    finally:
        db.close()


def site_toml(spec: SiteSpec) -> str:
    """The ``site.toml`` text for ``spec``."""
    lines = ["[site]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in {"base_url": spec.base_url, **spec.site}.items()]
    if spec.queries:
        lines += ["", "[queries]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in spec.queries.items()]
    for route in spec.routes:
        lines += ["", "[[routes]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in route.items()]
    if spec.lighthouse is not None:
        lines += ["", "[lighthouse]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in spec.lighthouse.items()]
    text = "\n".join(lines) + "\n"
    return text + spec.extra_toml


def toml_value(value: Any) -> str:
    """A TOML literal for a string, number or boolean (strings as escaped basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value!r} here")
        return repr(value)
    if isinstance(value, str):
        # JSON escapes are valid TOML basic-string escapes, except that TOML has
        # no surrogate pairs (ensure_ascii=False avoids them) and refuses raw DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    raise TypeError(f"no TOML literal for {type(value).__name__}")


# --- looking for stray files ---------------------------------------------------


def listing(root: Path, *, skip: Sequence[Path] = ()) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` (``{rel: (size, mtime_ns)}``), not following links.

    Folders are listed as ``(0, 0)``: what matters is what appears inside them.

    Folders in ``skip`` (and everything under them) are left out: use it for the
    host's state folder, which a build is allowed to write.
    """
    skipped = {os.fspath(p) for p in skip}
    found: dict[str, tuple[int, int]] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(dirpath, d) not in skipped]
        for name in [*dirs, *files]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            # a folder counts by its name only (its mtime moves when the state folder appears)
            is_dir = os.path.isdir(path) and not os.path.islink(path)
            found[os.path.relpath(path, root)] = (0, 0) if is_dir else (st.st_size, st.st_mtime_ns)
    return found


def changes(
    before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]
) -> list[str]:
    """What appeared, vanished or changed between two ``listing`` calls, sorted."""
    names = set(before) | set(after)
    return sorted(n for n in names if before.get(n) != after.get(n))
