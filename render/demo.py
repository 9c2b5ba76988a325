"""``render init``: a new host folder, optionally with the demo site and its database."""

from __future__ import annotations

import random
import shutil
import sqlite3
from datetime import date, timedelta
from importlib import resources
from pathlib import Path

from render.errors import UsageError

HOST_TOML = """\
# render host configuration. Every key is optional; these are the defaults.
[host]
sites = "sites"        # sites/<owner>/<name>/site.toml
state = ".render"      # ledger, snapshots, builds, local store, local mirror

[store]
kind = "local"         # "s3" for Cloudflare R2 (see README: bucket, endpoint_url, region)

[schedule]
default = "0 3 * * *"  # crontab meaning, in each site's timezone
"""

_WORDS = [
    "garden",
    "soil",
    "compost",
    "rain",
    "frost",
    "seed",
    "spade",
    "hoe",
    "trowel",
    "shed",
    "bean",
    "tomato",
    "squash",
    "onion",
    "leek",
    "mulch",
    "worm",
    "season",
    "autumn",
    "spring",
    "summer",
    "winter",
    "cloud",
    "wind",
    "sun",
    "shade",
    "root",
    "leaf",
    "branch",
    "orchard",
    "apple",
    "pear",
    "plum",
    "cherry",
    "hedge",
    "path",
    "stone",
    "fence",
    "gate",
    "bucket",
    "barrow",
    "water",
    "morning",
    "evening",
    "harvest",
    "weed",
    "border",
    "bed",
    "pot",
    "window",
    "greenhouse",
    "glass",
    "bloom",
    "petal",
    "bee",
    "wren",
    "robin",
]
_TAGS = (
    "soil",
    "tools",
    "weather",
    "fruit",
    "vegetables",
    "birds",
    "seasons",
    "compost",
    "greenhouse",
    "flowers",
    "trees",
    "water",
)
_PEOPLE = (
    "Ada Brook",
    "Ben Carver",
    "Cleo Dale",
    "Dev Patel",
    "Edith Moss",
    "Femi Ade",
    "Greta Lund",
    "Hugo Lake",
    "Iris Vane",
    "Jonah Reed",
    "Kira Holm",
    "Liam Frost",
)


def init_host(folder: Path, *, demo: bool) -> list[Path]:
    """Create ``render.toml`` (and the demo site) in ``folder``; never overwrite."""
    folder.mkdir(parents=True, exist_ok=True)
    host_file = folder.absolute() / "render.toml"
    if host_file.exists():
        raise UsageError(f"{host_file} already exists", hint="choose an empty folder")
    created = [host_file]
    host_file.write_text(HOST_TOML)
    (folder / "sites").mkdir(exist_ok=True)
    if demo:
        site = folder / "sites" / "demo" / "blog"
        _copy_tree(resources.files("render").joinpath("demo/site"), site)
        make_demo_database(site / "site.db")
        created.append(site)
    return created


def _copy_tree(source: object, dest: Path) -> None:
    with resources.as_file(source) as path:  # type: ignore[arg-type]
        shutil.copytree(path, dest, ignore=shutil.ignore_patterns("__pycache__", "*.db"))


def make_demo_database(path: Path, *, posts: int = 240, seed: int = 7) -> None:
    """The demo blog's database: authors, posts (some drafts) and tags, the same every time."""
    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript(
        """
        create table authors (id integer primary key, slug text not null unique, name text not null, bio text not null);
        create table posts (
            id integer primary key, slug text not null unique, title text not null,
            summary text not null, body text not null, published text not null,
            updated_at text not null, draft integer not null default 0,
            likes integer not null default 0, author_id integer not null references authors(id)
        );
        create table tags (post_id integer not null references posts(id), tag text not null);
        create index tags_tag on tags (tag, post_id);
        create index posts_author on posts (author_id, published);
        """
    )
    for i, name in enumerate(_PEOPLE, 1):
        slug = name.lower().replace(" ", "-")
        bio = f"{name} writes about {_TAGS[i % len(_TAGS)]} and {_TAGS[(i * 5) % len(_TAGS)]} for Field Notes."
        db.execute("insert into authors values (?, ?, ?, ?)", (i, slug, name, bio))
    start = date(2024, 1, 1)
    for i in range(1, posts + 1):
        words = rng.sample(_WORDS, 3)
        title = f"{words[0].capitalize()}, {words[1]} and {words[2]}: note {i}"
        slug = f"{words[0]}-{words[1]}-{words[2]}-{i}"
        body = "\n\n".join(
            " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 70))).capitalize() + "."
            for _ in range(rng.randint(3, 5))
        )
        summary = (
            f"Note {i} on {words[0]}, {words[1]} and {words[2]}, from the Field Notes archive."
        )
        published = start + timedelta(days=i * 2)
        updated = published + timedelta(days=rng.randint(0, 30))
        db.execute(
            "insert into posts values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                i,
                slug,
                title,
                summary,
                body,
                published.isoformat(),
                updated.isoformat(),
                1 if i % 40 == 0 else 0,
                rng.randint(0, 300),
                rng.randint(1, len(_PEOPLE)),
            ),
        )
        for tag in rng.sample(_TAGS, rng.randint(1, 3)):
            db.execute("insert into tags values (?, ?)", (i, tag))
    db.commit()
    db.close()
