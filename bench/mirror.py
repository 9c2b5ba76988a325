"""Mirror benchmark: first sync, a sync after one article changed, disk used by kept releases.

Publishes a site with the real publish code, syncs a mirror folder from the
store, changes one article, publishes and syncs again (twice, so that three
releases are kept), and reports wall time, store requests (every GET of
root.json, a version tree or a blob, and the site listing, as the store counts
them) and disk use with hard links counted once. Not a test: numbers, not
assertions.

    python bench/mirror.py                    # the synthetic 10,000-article site
    python bench/mirror.py --articles 2000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from render.build.tree import FileEntry, content_type, write_object  # noqa: E402
from render.mirror.layout import POOL  # noqa: E402
from render.mirror.sync import sync  # noqa: E402
from render.publish.manifest import is_version_id  # noqa: E402
from render.publish.store import LocalStore, Store  # noqa: E402
from render.publish.versions import publish_tree  # noqa: E402


def synthetic_site(articles: int = 10_000) -> dict[str, bytes]:
    """``articles`` article pages of a few KB each, a home page, a sitemap, robots and assets."""
    files: dict[str, bytes] = {}
    vocabulary = [hashlib.sha256(str(n).encode()).hexdigest()[:7] for n in range(2000)]
    rng = random.Random(7)
    for i in range(articles):
        words = " ".join(rng.choices(vocabulary, k=500))
        files[f"posts/article-{i:05d}/index.html"] = (
            f'<!doctype html><html lang="en"><head><title>Article {i}</title>'
            f'<link rel="stylesheet" href="/static/site.css"></head>'
            f"<body><h1>Article {i}</h1><p>{words}</p></body></html>\n"
        ).encode()
    files["index.html"] = b"<!doctype html><title>Home</title><h1>Home</h1>\n"
    files["404.html"] = b"<!doctype html><title>Not found</title><h1>Not found</h1>\n"
    files["robots.txt"] = b"User-agent: *\nAllow: /\nSitemap: https://bench.example/sitemap.xml\n"
    files["sitemap.xml"] = (
        '<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        + "".join(
            f"<url><loc>https://bench.example/posts/article-{i:05d}/</loc></url>"
            for i in range(articles)
        )
        + "</urlset>\n"
    ).encode()
    files["static/site.css"] = b"body{font:16px/1.5 system-ui;max-width:40rem;margin:auto}\n" * 20
    return files


def _publish(
    store: Store, files: Mapping[str, bytes], objects: Path, *, owner: str, name: str
) -> str:
    entries = {
        p: FileEntry(hash=write_object(objects, b), size=len(b), type=content_type(p))
        for p, b in files.items()
    }
    return publish_tree(
        entries,
        objects,
        owner=owner,
        name=name,
        base_url="https://bench.example/",
        store=store,
        ledger=None,
    ).version


def _sync(store: Store, mirror: Path, *, keep: int, concurrency: int) -> dict[str, Any]:
    before = store.request_count()
    started = time.perf_counter()
    report = sync(store, mirror, keep=keep, concurrency=concurrency)
    seconds = time.perf_counter() - started
    (site,) = report.sites
    return {
        "seconds": round(seconds, 3),
        "requests": store.request_count() - before,
        "outcome": site.outcome.value,
        "blobs_fetched": site.fetched,
        "bytes_fetched": site.fetched_bytes,
        "files_linked": site.linked,
        "folders_shared": site.shared,
    }


def disk_usage(releases: Path) -> dict[str, int]:
    """Bytes on disk of a site's releases and the folders they share, and their files' size.

    On disk: the blocks of every folder, file and symlink under the release
    folders and the pool ``.d/`` (each inode once, symlinks not followed); the
    trees, ``.meta`` and other bookkeeping folders are left out. Apparent: the
    size of every release's files, each path counted (what copies would take).
    """
    seen: set[tuple[int, int]] = set()
    on_disk = apparent = 0
    versions = [p for p in releases.iterdir() if is_version_id(p.name)]
    for top in [*versions, releases / POOL]:
        for dirpath, dirnames, filenames in os.walk(top):  # a symlinked folder: listed, not walked
            for entry in [dirpath, *(os.path.join(dirpath, n) for n in filenames + dirnames)]:
                st = os.lstat(entry)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    on_disk += st.st_blocks * 512
    for version in versions:
        for dirpath, _dirnames, filenames in os.walk(version, followlinks=True):
            apparent += sum(os.stat(os.path.join(dirpath, n)).st_size for n in filenames)
    return {"bytes_on_disk": on_disk, "apparent_bytes": apparent}


def mirror_bench(
    store: Store,
    *,
    files: Mapping[str, bytes],
    work: Path,
    owner: str = "bench",
    name: str = "site",
    keep: int = 3,
    concurrency: int = 8,
) -> dict[str, Any]:
    """Publish ``files`` to ``store``, sync a mirror under ``work``, change one article twice."""
    objects, mirror = work / "objects", work / "mirror"
    objects.mkdir(parents=True, exist_ok=True)
    articles = sorted(p for p in files if p.startswith("posts/"))
    result: dict[str, Any] = {"files": len(files), "bytes": sum(len(b) for b in files.values())}
    _publish(store, files, objects, owner=owner, name=name)
    result["first_sync"] = _sync(store, mirror, keep=keep, concurrency=concurrency)
    one_release = disk_usage(mirror / "releases" / owner / name)
    current = dict(files)
    for step, path in enumerate(articles[:2] or sorted(files)[:2]):
        current[path] = current[path].replace(b"</h1>", f" (edited {step})</h1>".encode(), 1)
        _publish(store, current, objects, owner=owner, name=name)
        outcome = _sync(store, mirror, keep=keep, concurrency=concurrency)
        if step == 0:
            result["sync_after_one_article_changed"] = outcome
    releases = mirror / "releases" / owner / name
    kept = sorted(p.name for p in releases.iterdir() if is_version_id(p.name))
    three = disk_usage(releases)
    result["kept_releases"] = len(kept)
    result["disk"] = {
        "one_release_bytes": one_release["bytes_on_disk"],
        "kept_releases_bytes": three["bytes_on_disk"],
        "kept_releases_apparent_bytes": three["apparent_bytes"],
        "kept_releases_without_hard_links_bytes": len(kept) * one_release["bytes_on_disk"],
        "ratio_to_one_release": round(
            three["bytes_on_disk"] / max(1, one_release["bytes_on_disk"]), 3
        ),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="render-mirror-bench-") as tmp:
        work = Path(tmp)
        store = LocalStore(work / "store")
        result = mirror_bench(
            store, files=synthetic_site(args.articles), work=work, concurrency=args.concurrency
        )
    result["store"] = (
        "local folder (requests: one per GET of root.json, a tree or a blob, + the site list)"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
