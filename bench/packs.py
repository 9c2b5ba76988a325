"""Packs benchmark: render's own publish and mirror sync on a far S3 store, loose or in packs.

Issue #16's question, answered with the real code: with R2, requests cost
money and time and bytes do not, so how many requests and how long do a
publish and a mirror sync take with one key per blob (``[store] layout =
"loose"``) and with packs of 1, 4, 16 and 64 MB (``[store] pack_mb``), and
which pack size should be the default?

The 10,000-article bench site (``bench/sitegen.py``) is generated and built
once (snapshot, build, SEO: the tree a publish gets), then edited one article
at a time and built again ``--versions`` times; each build's objects folder is
kept (hard links) so every version publishes its real bytes. For each layout,
into a bucket of its own on a moto S3 server on loopback, behind a proxy that
adds ``--latency-ms`` to every request (``tests/faultproxy.py``'s ``Delay``;
about what a VPS sees to R2), with the store's and the mirror's default
concurrency:

- ``first_publish``: ``publish_tree`` of the first build, nothing in the bucket;
- ``mirror_first_sync``: a new mirror folder synced (``sync_site``) to it;
- ``one_article_publish``: the first one-article version published (the
  others follow, each timed: ``one_article_publishes``);
- ``catch_up_1``: the mirror, one version behind, synced;
- ``catch_up_<N>``: a copy of the mirror as it was at the first version, synced
  to the last (N versions behind);
- ``mirror_first_sync_after_<N>``: a new mirror synced to the last version
  (with packs, each one-article version added a small pack of its own).

Requests are the proxy's log (every HTTP request, retries included); seconds
are wall time, which also counts the mirror's disk work (10,000 folders and
files; the disk is synced before each step), and a sync's ``blob_reads_s`` is
the part of it from its first blob or pack read's start to its last one's end; ``load`` is the 1-minute load
average when each layout finished.
Not a test: numbers, not assertions.

    python bench/packs.py                       # 10,000 articles, 10 versions, 30 ms
    python bench/packs.py --articles 500 --layouts loose,16 --versions 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from faultproxy import Delay, FaultProxy  # noqa: E402

from bench.sitegen import generate  # noqa: E402
from render.build.tree import FileEntry  # noqa: E402
from render.config import MirrorConfig, StoreConfig  # noqa: E402
from render.mirror.sync import SyncOutcome, sync_site  # noqa: E402
from render.publish.store import S3Store  # noqa: E402
from render.publish.versions import publish_tree  # noqa: E402

OWNER, NAME = "bench", "articles"
_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
T = TypeVar("T")


@dataclass(frozen=True)
class Version:
    """One build's tree and a folder holding its bytes (a hard-linked copy of its objects)."""

    files: Mapping[str, FileEntry]
    objects: Path


def build_versions(root: Path, count: int, *, keep: Path) -> tuple[list[Version], str, float]:
    """The site built once, then after each of ``count`` one-article edits; its base_url; seconds."""
    from render import builder, seo
    from render.build import snapshot
    from render.config import load_host, load_site, site_dirs

    host = load_host(root / "host" / "render.toml")
    site = load_site(site_dirs(host)[0], host=host)
    out: list[Version] = []
    started = time.perf_counter()
    for n in range(count + 1):
        if n:
            with sqlite3.connect(site.database) as conn:
                conn.execute("update articles set body = body || ' edited' where id = ?", (n * 7,))
            conn.close()
        with snapshot.take(site, into=host.state_dir / "snapshots" / f"packs-{n}") as snap:
            build = seo.generate(builder.build(site, snap, host=host))
        # the next build prunes what it no longer names: this version keeps its own copy
        copy = keep / f"objects-{n}"
        subprocess.run(["cp", "-al", str(build.objects), str(copy)], check=True)
        out.append(Version(files=dict(build.files), objects=copy))
    return out, site.base_url, time.perf_counter() - started


def new_blobs(versions: list[Version]) -> list[int]:
    """Per version, how many blobs no earlier version had."""
    seen: set[str] = set()
    counts: list[int] = []
    for version in versions:
        hashes = {entry.hash for entry in version.files.values()}
        counts.append(len(hashes - seen))
        seen |= hashes
    return counts


class Far:
    """The proxy in front of moto: counts and times what a step sends through it."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy

    def measure(self, step: Callable[[], T]) -> tuple[T, dict[str, Any]]:
        os.sync()  # what came before (a build, a copied mirror) is on disk before the clock starts
        mark = self.proxy.mark()
        started = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - started
        entries = self.proxy.entries(mark)
        ranged = sum(
            1
            for e in entries
            if e.method == "GET" and any(k.lower() == "range" for k, _ in e.headers)
        )
        figures: dict[str, Any] = {
            "requests": len(entries),
            "get": sum(1 for e in entries if e.method == "GET"),
            "range_get": ranged,
            "put": sum(1 for e in entries if e.method == "PUT"),
            "other": sum(1 for e in entries if e.method not in ("GET", "PUT")),
            "seconds": round(seconds, 2),
        }
        return result, figures


class Timed:
    """A store as the mirror reads it, noting when its blob and pack reads start and end.

    ``span()`` is the seconds from the first such read's start to the last one's
    end: the sync's time on the network, apart from its disk work.
    """

    def __init__(self, store: S3Store) -> None:
        self.store = store
        self.description = store.description
        self.marks: list[float] = []

    def _timed(self, key: str, call: Callable[[], T]) -> T:
        if "/packs/" not in key and "/blobs/" not in key:
            return call()
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.marks += (started, time.perf_counter())

    def get(self, key: str) -> bytes | None:
        return self._timed(key, lambda: self.store.get(key))

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        return self._timed(key, lambda: self.store.get_range(key, start, length))

    def download(self, key: str, dest: Path) -> bool:
        return self._timed(key, lambda: self.store.download(key, dest))

    def sites(self) -> list[tuple[str, str]]:
        return self.store.sites()

    def span(self) -> float:
        spent = max(self.marks) - min(self.marks) if self.marks else 0.0
        self.marks = []
        return round(spent, 2)


def run_layout(
    far: Far,
    versions: list[Version],
    *,
    endpoint: str,
    bucket: str,
    base_url: str,
    pack_limit: int | None,
    work: Path,
) -> dict[str, Any]:
    """Publish every version into ``bucket`` and sync mirrors from it, as the docstring says."""
    store_config = StoreConfig(kind="s3", bucket=bucket, endpoint_url=endpoint, region="us-east-1")
    mirror_config = MirrorConfig()
    publisher, reader = S3Store(store_config), S3Store(store_config)  # two hosts, two clients
    mirror = Timed(reader)

    def publish(n: int) -> None:
        version = versions[n]
        publish_tree(
            version.files,
            version.objects,
            owner=OWNER,
            name=NAME,
            base_url=base_url,
            store=publisher,
            ledger=None,
            pack_limit=pack_limit,
        )

    def sync(folder: Path, want: int) -> Callable[[], float]:
        def step() -> float:
            got = sync_site(
                mirror,
                folder,
                OWNER,
                NAME,
                keep=mirror_config.keep,
                concurrency=mirror_config.concurrency,
            )
            if got.outcome is not SyncOutcome.switched:
                raise SystemExit(f"mirror sync to version {want}: {got.outcome}: {got.error}")
            return mirror.span()

        return step

    def synced(folder: Path, want: int) -> dict[str, Any]:
        spent, figures = far.measure(sync(folder, want))
        return {**figures, "blob_reads_s": spent}

    last = len(versions) - 1
    first, behind, fresh = work / "mirror", work / "mirror-behind", work / "mirror-fresh"
    result: dict[str, Any] = {}
    _, result["first_publish"] = far.measure(lambda: publish(0))
    result["mirror_first_sync"] = synced(first, 0)
    subprocess.run(["cp", "-a", str(first), str(behind)], check=True)  # a mirror left at v0
    publishes = []
    for n in range(1, last + 1):
        _, figures = far.measure(lambda n=n: publish(n))
        publishes.append(figures)
        if n == 1:
            result["catch_up_1"] = synced(first, 1)
    result["one_article_publish"] = publishes[0]
    result["one_article_publishes"] = {
        "requests": [p["requests"] for p in publishes],
        "seconds": [p["seconds"] for p in publishes],
    }
    result[f"catch_up_{last}"] = synced(behind, last)
    result[f"mirror_first_sync_after_{last}"] = synced(fresh, last)
    order = ("first_publish", "one_article_publish", "mirror_first_sync", "catch_up_1")
    result = {k: result[k] for k in order} | result  # the README table's order
    result["load"] = round(os.getloadavg()[0], 2)
    for store in (publisher, reader):
        store.close()
    for folder in (first, behind, fresh):
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _bucket_objects(client: Any, bucket: str) -> dict[str, int]:
    """How many pack objects and loose blob objects the bucket holds (listed directly, uncounted)."""
    counts = {"packs": 0, "blobs": 0}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            for kind in counts:
                if f"/{kind}/" in item["Key"]:
                    counts[kind] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument(
        "--versions", type=int, default=10, help="one-article versions after the first"
    )
    parser.add_argument(
        "--layouts",
        default="loose,1,4,16,64",
        help="'loose' and pack sizes in MB, comma-separated",
    )
    parser.add_argument("--latency-ms", type=float, default=30.0)
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(key, None)
    os.environ.update(_ENV)
    work = Path(tempfile.mkdtemp(prefix="render-bench-packs-"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        load_before = round(os.getloadavg()[0], 2)
        generate(work / "gen", articles=args.articles)
        versions, base_url, build_seconds = build_versions(work / "gen", args.versions, keep=work)
        address, port = server.get_host_and_port()
        upstream = f"http://{address}:{port}"
        admin = boto3.client("s3", endpoint_url=upstream, region_name="us-east-1")
        layouts: dict[str, Any] = {}
        names = {
            "loose" if size == "loose" else f"packs-{size}mb": (
                None if size == "loose" else int(float(size) * (1 << 20))
            )
            for size in args.layouts.split(",")
        }
        with FaultProxy(
            upstream, rules=[lambda _r: Delay(args.latency_ms / 1000)]
        ).running() as proxy:
            for n, (layout, limit) in enumerate(names.items()):
                bucket = f"bench-packs-{n}"
                admin.create_bucket(Bucket=bucket)
                layouts[layout] = run_layout(
                    Far(proxy),
                    versions,
                    endpoint=proxy.url,
                    bucket=bucket,
                    base_url=base_url,
                    pack_limit=limit,
                    work=work,
                )
                layouts[layout]["objects"] = _bucket_objects(admin, bucket)
        first = versions[0].files
        print(
            json.dumps(
                {
                    "articles": args.articles,
                    "files_per_version": len(first),
                    "bytes_first_version": sum(
                        e.size for e in {e.hash: e for e in first.values()}.values()
                    ),
                    "new_blobs_per_one_article_version": new_blobs(versions)[1:],
                    "latency_ms": args.latency_ms,
                    "concurrency": {
                        "publish": StoreConfig().concurrency,
                        "mirror": MirrorConfig().concurrency,
                    },
                    "builds_seconds": round(build_seconds, 1),
                    "load_before": load_before,
                    "layouts": layouts,
                }
            )
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
