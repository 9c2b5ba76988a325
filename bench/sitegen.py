"""A synthetic site for the benchmarks, as a render site and as the same Hugo site.

10,000 articles of about 2 KB of text, 200 authors, 100 tags; per-article
pages, a paginated list of 20 per page, per-tag pages and per-author pages.
The same rows and layout are written as Hugo content so both tools build the
same thing on the same machine in the same run.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
]

SITE_TOML = """\
[site]
base_url = "https://bench.example.com"

[queries]
recent = "select title, slug, published from articles order by published desc, id limit 20"
tags_of = "select tag from article_tags where article_id = :id order by tag"
by_tag = "select a.title, a.slug, a.published from articles a join article_tags t on t.article_id = a.id where t.tag = :tag order by a.published desc, a.id"
by_author = "select title, slug, published from articles where author_id = :id order by published desc, id"

[[routes]]
path = "/"
template = "index.html"

[[routes]]
path = "/posts/{slug}/"
query = "select a.*, u.name as author_name, u.slug as author_slug from articles a join authors u on u.id = a.author_id order by a.id"
template = "post.html"
lastmod = "updated"

[[routes]]
path = "/posts/"
query = "select title, slug, published from articles order by published desc, id"
template = "list.html"
paginate = 20

[[routes]]
path = "/tags/{tag}/"
query = "select distinct tag from article_tags order by tag"
template = "tag.html"

[[routes]]
path = "/authors/{slug}/"
query = "select * from authors order by id"
template = "author.html"

[lighthouse]
enabled = false
"""

TEMPLATES = {
    "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}Bench{% endblock %}</title><meta name="description" content="{% block description %}A benchmark site.{% endblock %}">
<link rel="stylesheet" href="/site.css"></head>
<body><header><a href="/">Bench</a> <a href="/posts/">Posts</a></header><main>{% block main %}{% endblock %}</main></body></html>
""",
    "index.html": """{% extends "base.html" %}{% block main %}<h1>Bench</h1><ul>
{% for p in query("recent") %}<li><a href="/posts/{{ p.slug }}/">{{ p.title }}</a> {{ p.published }}</li>
{% endfor %}</ul>{% endblock %}""",
    "post.html": """{% extends "base.html" %}{% block title %}{{ row.title }}{% endblock %}
{% block description %}{{ row.summary }}{% endblock %}
{% block main %}<article><h1>{{ row.title }}</h1><p>By <a href="/authors/{{ row.author_slug }}/">{{ row.author_name }}</a> on {{ row.published }}</p>
{% for para in row.body.split("\\n\\n") %}<p>{{ para }}</p>
{% endfor %}<ul>{% for t in query("tags_of", id=row.id) %}<li><a href="/tags/{{ t.tag }}/">{{ t.tag }}</a></li>{% endfor %}</ul></article>{% endblock %}""",
    "list.html": """{% extends "base.html" %}{% block title %}Posts {{ pagination.number }}{% endblock %}
{% block description %}Posts, page {{ pagination.number }}.{% endblock %}
{% block main %}<h1>Posts, page {{ pagination.number }}</h1><ul>
{% for p in rows %}<li><a href="/posts/{{ p.slug }}/">{{ p.title }}</a> {{ p.published }}</li>
{% endfor %}</ul>{% if pagination.prev_url %}<a href="{{ pagination.prev_url }}">Newer</a>{% endif %}
{% if pagination.next_url %}<a href="{{ pagination.next_url }}">Older</a>{% endif %}{% endblock %}""",
    "tag.html": """{% extends "base.html" %}{% block title %}Tag {{ row.tag }}{% endblock %}
{% block description %}Posts tagged {{ row.tag }}.{% endblock %}
{% block main %}<h1>Tag {{ row.tag }}</h1><ul>
{% for p in query("by_tag", tag=row.tag) %}<li><a href="/posts/{{ p.slug }}/">{{ p.title }}</a> {{ p.published }}</li>
{% endfor %}</ul>{% endblock %}""",
    "author.html": """{% extends "base.html" %}{% block title %}{{ row.name }}{% endblock %}
{% block description %}Posts by {{ row.name }}.{% endblock %}
{% block main %}<h1>{{ row.name }}</h1><ul>
{% for p in query("by_author", id=row.id) %}<li><a href="/posts/{{ p.slug }}/">{{ p.title }}</a> {{ p.published }}</li>
{% endfor %}</ul>{% endblock %}""",
}

HUGO_LAYOUTS = {
    "_default/baseof.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ block "title" . }}Bench{{ end }}</title><meta name="description" content="{{ block "description" . }}A benchmark site.{{ end }}">
<link rel="stylesheet" href="/site.css"></head>
<body><header><a href="/">Bench</a> <a href="/posts/">Posts</a></header><main>{{ block "main" . }}{{ end }}</main></body></html>
""",
    "index.html": """{{ define "main" }}<h1>Bench</h1><ul>
{{ range first 20 (where .Site.RegularPages "Section" "posts") }}<li><a href="{{ .RelPermalink }}">{{ .Title }}</a> {{ .Date.Format "2006-01-02" }}</li>
{{ end }}</ul>{{ end }}""",
    "_default/single.html": """{{ define "title" }}{{ .Title }}{{ end }}{{ define "description" }}{{ .Params.summary }}{{ end }}
{{ define "main" }}<article><h1>{{ .Title }}</h1><p>By <a href="/authors/{{ .Params.author_slug }}/">{{ .Params.author_name }}</a> on {{ .Date.Format "2006-01-02" }}</p>
{{ .Content }}<ul>{{ range .Params.tags }}<li><a href="/tags/{{ . | urlize }}/">{{ . }}</a></li>{{ end }}</ul></article>{{ end }}""",
    "_default/list.html": """{{ define "title" }}Posts{{ end }}{{ define "main" }}<h1>Posts, page {{ .Paginator.PageNumber }}</h1><ul>
{{ range .Paginator.Pages }}<li><a href="{{ .RelPermalink }}">{{ .Title }}</a> {{ .Date.Format "2006-01-02" }}</li>
{{ end }}</ul>{{ with .Paginator.Prev }}<a href="{{ .URL }}">Newer</a>{{ end }}{{ with .Paginator.Next }}<a href="{{ .URL }}">Older</a>{{ end }}{{ end }}""",
    "_default/term.html": """{{ define "title" }}{{ .Title }}{{ end }}{{ define "main" }}<h1>{{ .Title }}</h1><ul>
{{ range .Pages }}<li><a href="{{ .RelPermalink }}">{{ .Title }}</a> {{ .Date.Format "2006-01-02" }}</li>
{{ end }}</ul>{{ end }}""",
    "_default/taxonomy.html": """{{ define "main" }}<h1>{{ .Title }}</h1>{{ end }}""",
}


def generate(
    root: Path, *, articles: int = 10_000, authors: int = 200, tags: int = 100, seed: int = 1
) -> Path:
    """Write ``root/host`` (a render host with one site) and ``root/hugo``; return the site folder."""
    rng = random.Random(seed)
    shutil.rmtree(root, ignore_errors=True)
    site = root / "host" / "sites" / "bench" / "articles"
    (site / "templates").mkdir(parents=True)
    (site / "static").mkdir()
    (root / "host" / "render.toml").write_text(
        '[store]\nkind = "local"\n[mirror]\nenabled = false\n'
    )
    (site / "site.toml").write_text(SITE_TOML)
    (site / "static" / "site.css").write_text(
        "body{font-family:sans-serif;max-width:40rem;margin:auto}\n"
    )
    for name, text in TEMPLATES.items():
        (site / "templates" / name).write_text(text)

    db = sqlite3.connect(site / "site.db")
    db.executescript(
        """
        create table authors (id integer primary key, slug text, name text);
        create table articles (id integer primary key, slug text unique, title text, summary text,
                               body text, published text, updated text, author_id integer);
        create table article_tags (article_id integer, tag text);
        create index article_tags_tag on article_tags (tag, article_id);
        create index article_tags_article on article_tags (article_id);
        create index articles_author on articles (author_id, published);
        """
    )
    author_rows = [(i, f"author-{i}", f"Author {i}") for i in range(1, authors + 1)]
    db.executemany("insert into authors values (?, ?, ?)", author_rows)
    hugo = root / "hugo"
    (hugo / "content" / "posts").mkdir(parents=True)
    (hugo / "static").mkdir()
    (hugo / "static" / "site.css").write_text(
        "body{font-family:sans-serif;max-width:40rem;margin:auto}\n"
    )
    (hugo / "hugo.toml").write_text(
        'baseURL = "https://bench.example.com/"\ntitle = "Bench"\n'
        'disableKinds = ["RSS", "sitemap", "robotsTXT", "taxonomy"]\n'
        '[pagination]\npagerSize = 20\n[taxonomies]\ntag = "tags"\nauthor = "authors"\n'
        "[markup.goldmark.renderer]\nunsafe = false\n"
    )
    (hugo / "content" / "posts" / "_index.md").write_text("---\ntitle: Posts\n---\n")
    for path, text in HUGO_LAYOUTS.items():
        target = hugo / "layouts" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    tag_names = [f"tag{i}" for i in range(tags)]
    for i in range(1, articles + 1):
        words = rng.sample(WORDS, 4)
        title = " ".join(words).capitalize() + f" {i}"
        slug = "-".join(words) + f"-{i}"
        paragraphs = [
            " ".join(rng.choice(WORDS) for _ in range(70)).capitalize() + "." for _ in range(4)
        ]
        body = "\n\n".join(paragraphs)
        day = f"{2015 + i % 10}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        author = rng.randint(1, authors)
        chosen = sorted(rng.sample(tag_names, 3))
        summary = f"Summary of article {i}."
        db.execute(
            "insert into articles values (?, ?, ?, ?, ?, ?, ?, ?)",
            (i, slug, title, summary, body, day, day, author),
        )
        db.executemany("insert into article_tags values (?, ?)", [(i, t) for t in chosen])
        front = (
            f'---\ntitle: "{title}"\ndate: {day}\nslug: "{slug}"\nsummary: "{summary}"\n'
            f'author_slug: "author-{author}"\nauthor_name: "Author {author}"\n'
            f"tags: [{', '.join(chosen)}]\nauthors: [author-{author}]\n---\n"
        )
        (hugo / "content" / "posts" / f"{slug}.md").write_text(front + body + "\n")
    db.commit()
    db.close()
    return site
