"""The README keeps up with the code: every command and every config key is in it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click

import render
from render import config
from render.cli import main

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()

SECTIONS = {
    "host": config.HostSection,
    "store": config.StoreConfig,
    "mirror": config.MirrorConfig,
    "origin": config.OriginConfig,
    "cdn": config.CdnConfig,
    "schedule": config.ScheduleConfig,
    "limits": config.LimitsConfig,
    "site": config.SiteSection,
    "routes": config.Route,
    "seo": config.SeoConfig,
    "seo.robots": config.RobotsRule,
    "lighthouse": config.LighthouseConfig,
}


def _commands(group: click.Group, prefix: str = "render") -> list[str]:
    names = []
    for name, command in sorted(group.commands.items()):
        names.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            names.extend(_commands(command, f"{prefix} {name}"))
    return names


def test_every_command_is_in_the_readme() -> None:
    missing = [name for name in _commands(main) if f"`{name}" not in README]
    assert missing == []


def test_every_config_key_is_in_the_readme_table_with_its_doc() -> None:
    rows = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^\| [\w.]+ \| `([\w.\[\]]+)` \| `[^`]*` \| (.+) \|$", README, re.M)
    }
    host_sections = {f.name for f in dataclasses.fields(config.HostConfig)} - {"path", "root"}
    assert host_sections <= SECTIONS.keys(), "a render.toml section this test does not know"
    missing = []
    for section, cls in SECTIONS.items():
        for key, doc in config.field_docs(cls).items():
            if rows.get(f"{section}.{key}") != doc:
                missing.append(f"{section}.{key}: {doc}")
    assert missing == []


def test_exported_members_are_what_all_says() -> None:
    assert render.__all__ == sorted(render.__all__)
    for name in render.__all__:
        assert hasattr(render, name), name
    public = {
        n
        for n in dir(render)
        if not n.startswith("_") and not isinstance(getattr(render, n), type(render))
    }
    assert public <= set(render.__all__), public - set(render.__all__)


def test_the_architecture_map_names_every_package_and_top_module() -> None:
    """docs/ARCHITECTURE.md's folder map is the folder: a new module must be placed in it."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    package = ROOT / "render"
    names = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in package.iterdir()
        if (p.suffix == ".py" and not p.name.startswith("_")) or (p / "__init__.py").is_file()
    )
    missing = [n for n in names if f"`{n}`" not in text and f"`{n.removesuffix('/')}" not in text]
    assert missing == [], f"docs/ARCHITECTURE.md does not name {missing}"
    for folder in [
        p for p in package.iterdir() if (p / "__init__.py").is_file() and p.name != "cli"
    ]:
        for module in sorted(folder.glob("[!_]*.py")):
            assert f"`{module.stem}`" in text, (
                f"docs/ARCHITECTURE.md does not name {folder.name}/{module.name}"
            )
    assert "(docs/ARCHITECTURE.md)" in (ROOT / "README.md").read_text()
