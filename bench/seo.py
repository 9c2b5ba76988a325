"""What the SEO stage costs: finish_page per page (in the workers) and generate + lint (in the parent).

    .venv/bin/python bench/seo.py               # a synthetic 10,000-article tree
    .venv/bin/python bench/seo.py --articles 2000

Prints one JSON object. ``lint_bench(build)`` measures the same on a real
build and is what ``bench/run.py`` calls. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sitegen import WORDS  # noqa: E402
from render import seo  # noqa: E402
from render.build import pagefacts  # noqa: E402
from render.build.snapshot import Snapshot  # noqa: E402
from render.build.tree import Build, FileEntry, PageRecord, content_type, sha256, write_object  # noqa: E402
from render.config import LighthouseConfig, SeoConfig, SiteConfig, SiteId, SiteSection  # noqa: E402
from render.paths import output_path, quote_url  # noqa: E402


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def lint_bench(build: Build, *, sample: int = 1000) -> dict[str, Any]:
    """Seconds of generate and lint on ``build``, and finish_page's cost per page on a sample."""
    html_pages = [p for p in build.pages if p.path.endswith(".html") and p.path in build.files]
    step = max(1, len(html_pages) // sample) if html_pages else 1
    chosen = html_pages[::step][:sample]
    sources = [build.read(p.path).decode("utf-8", "replace") for p in chosen]
    base = build.site.base_url
    # the median of three passes over the sample: one pass swings by half on this machine
    passes = []
    for _ in range(3):
        started = time.process_time()
        for page, html in zip(chosen, sources, strict=True):
            pagefacts.finish_page(
                html, url=page.url, canonical=base + quote_url(page.url), lang="en"
            )
        passes.append((time.process_time() - started) / max(1, len(chosen)))
    per_page = sorted(passes)[1]
    generated, gen_wall, gen_cpu = _timed(seo.generate, build)
    report, lint_wall, lint_cpu = _timed(seo.lint, generated)
    return {
        "pages": len(html_pages),
        "finish_page_us": round(per_page * 1e6, 1),
        "finish_page_all_cpu_s": round(per_page * len(html_pages), 3),
        "generate_s": round(gen_wall, 3),
        "lint_s": round(lint_wall, 3),
        "generate_cpu_s": round(gen_cpu, 3),
        "lint_cpu_s": round(lint_cpu, 3),
        "errors": report.errors,
        "warnings": report.warnings,
        "counts": report.counts,
        "sitemap_bytes": generated.files["sitemap.xml"].size,
    }


def _article(i: int, rng: random.Random, *, authors: int, tags: int) -> tuple[str, str]:
    title = " ".join(rng.choice(WORDS) for _ in range(5)).capitalize() + f" {i}"
    paras = "".join(
        "<p>" + " ".join(rng.choice(WORDS) for _ in range(60)) + "</p>\n" for _ in range(5)
    )
    tag_links = "".join(f'<li><a href="/tags/t{rng.randrange(tags)}/">t</a></li>' for _ in range(3))
    main = (
        f'<article><h1>{title}</h1><p>By <a href="/authors/a{i % authors}/">Author</a> '
        f"on 2024-01-01</p>\n{paras}<ul>{tag_links}</ul></article>"
    )
    return f"/posts/p{i}/", _page(title, f"Summary of article {i}.", main)


def _page(title: str, description: str, main: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>{title}</title><meta name="description" content="{description}">\n'
        '<link rel="stylesheet" href="/site.css"></head>\n'
        '<body><header><a href="/">Bench</a> <a href="/posts/">Posts</a></header>'
        f"<main>{main}</main></body></html>\n"
    )


def synthetic(folder: Path, *, articles: int = 10_000) -> tuple[Build, float]:
    """A built tree like the benchmark site's, made through finish_page; and finish_page's CPU seconds."""
    rng = random.Random(10)
    authors, tags, per_list = 200, 100, 20
    pages: list[tuple[str, str]] = [("/", _page("Bench", "A benchmark site.", "<h1>Bench</h1>"))]
    pages += [_article(i, rng, authors=authors, tags=tags) for i in range(articles)]
    for n in range(1, articles // per_list + 1):
        items = "".join(
            f'<li><a href="/posts/p{j}/">Post {j}</a></li>'
            for j in range((n - 1) * per_list, n * per_list)
        )
        url = "/posts/" if n == 1 else f"/posts/page/{n}/"
        pages.append(
            (url, _page(f"Posts {n}", f"Posts, page {n}.", f"<h1>Posts {n}</h1><ul>{items}</ul>"))
        )
    pages += [
        (f"/tags/t{t}/", _page(f"Tag t{t}", f"Posts tagged t{t}.", f"<h1>t{t}</h1>"))
        for t in range(tags)
    ]
    pages += [
        (f"/authors/a{a}/", _page(f"Author {a}", f"Posts by {a}.", f"<h1>A{a}</h1>"))
        for a in range(authors)
    ]
    base = "https://bench.example.com"
    objects = folder / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    files: dict[str, FileEntry] = {}
    records: list[PageRecord] = []
    finish_cpu = 0.0
    for url, source in pages:
        started = time.process_time()
        html, facts = pagefacts.finish_page(
            source, url=url, canonical=base + quote_url(url), lang="en"
        )
        finish_cpu += time.process_time() - started
        data = html.encode()
        digest = write_object(objects, data, sha256(data))
        path = output_path(url)
        files[path] = FileEntry(hash=digest, size=len(data), type=content_type(path))
        records.append(
            PageRecord(
                path=path,
                url=url,
                route=0,
                template="t.html",
                fingerprint=digest,
                hash=digest,
                size=len(data),
                reads=(),
                islands=(),
                lastmod="2024-01-01",
                changed="2026-01-01T00:00:00Z",
                facts=facts,
            )
        )
    files["site.css"] = FileEntry(hash=write_object(objects, b"body{}"), size=6, type="text/css")
    site = SiteConfig(
        id=SiteId(owner="bench", name="site"),
        root=folder,
        path=folder / "site.toml",
        site=SiteSection(base_url=base),
        queries=types.MappingProxyType({}),
        routes=(),
        seo=SeoConfig(),
        lighthouse=LighthouseConfig(enabled=False),
    )
    build = Build(
        site=site,
        snapshot=Snapshot(site=site.id, path=folder / "db", content_hash="", seconds=0.0, size=0),
        input_hash="",
        objects=objects,
        files=types.MappingProxyType(dict(sorted(files.items()))),
        pages=tuple(records),
        rendered=len(records),
        reused=0,
        seconds=0.0,
    )
    return build, finish_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="render-seo-bench-") as tmp:
        build, finish_cpu = synthetic(Path(tmp), articles=args.articles)
        figures = lint_bench(build)
        pages = len(build.pages)
        figures["synthetic_finish_page_cpu_s"] = round(finish_cpu, 3)
        figures["synthetic_finish_page_us"] = round(finish_cpu / pages * 1e6, 1)
        figures["page_bytes_avg"] = round(sum(p.size for p in build.pages) / pages)
        # the lint's share of a full build: finish_page split over 2 workers, then generate + lint
        figures["added_wall_s_2_workers"] = round(
            finish_cpu / 2 + figures["generate_s"] + figures["lint_s"], 3
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
