"""Rewrite the configuration table in README.md from the config dataclasses' docs.

    .venv/bin/python scripts/config_table.py

tests/test_docs.py fails when the README's table and the code disagree.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

from render import config as c

SECTIONS = [
    ("render.toml", "host", c.HostSection),
    ("render.toml", "store", c.StoreConfig),
    ("render.toml", "mirror", c.MirrorConfig),
    ("render.toml", "origin", c.OriginConfig),
    ("render.toml", "cdn", c.CdnConfig),
    ("render.toml", "schedule", c.ScheduleConfig),
    ("render.toml", "limits", c.LimitsConfig),
    ("site.toml", "site", c.SiteSection),
    ("site.toml", "routes", c.Route),
    ("site.toml", "seo", c.SeoConfig),
    ("site.toml", "seo.robots", c.RobotsRule),
    ("site.toml", "lighthouse", c.LighthouseConfig),
]
START, END = "<!-- config-table -->", "<!-- /config-table -->"


def _default(f: object) -> str:
    if f.metadata.get("required"):  # type: ignore[attr-defined]
        return "required"
    value = f.default  # type: ignore[attr-defined]
    if value is MISSING:
        return "{}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if value == ():
        return "[]"
    return str(value)


def table() -> str:
    rows = ["| file | key | default | meaning |", "| --- | --- | --- | --- |"]
    for file, section, cls in SECTIONS:
        docs = c.field_docs(cls)
        for f in fields(cls):
            if f.name in docs:
                rows.append(f"| {file} | `{section}.{f.name}` | `{_default(f)}` | {docs[f.name]} |")
    return "\n".join(rows)


if __name__ == "__main__":
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    new = re.sub(f"{START}.*?{END}", f"{START}\n{table()}\n{END}", text, flags=re.S)
    readme.write_text(new)
