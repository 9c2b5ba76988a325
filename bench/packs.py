"""Packs benchmark: loose blobs against pack objects of several sizes, on a far S3 store.

The first question of issue #16, answered with requests and wall time before
any store format changes: with R2, requests cost money and bytes do not, so is
it faster and cheaper to upload and read pages in packs, does that get in the
way of incremental updates, and which pack size is best?

The real thing is measured where it can be: the 10,000-article bench site
(``bench/sitegen.py``) is published with ``render force`` into the local store,
then edited one article at a time and published again ``--versions`` times, so
every version's new blobs are what render really makes for a one-article
change. Those versions are then written to a moto S3 server on loopback behind
a proxy that adds ``--latency-ms`` to every request (``tests/faultproxy.py``,
about what a VPS sees to R2), with ``--concurrency`` requests at a time (the
store's default), in each layout:

- ``loose``: one object per blob (what render does today);
- ``packs-<N>mb``: a version's new blobs concatenated into packs of at most N MB
  (the first version's in path order), the index (hash -> pack, offset, size)
  beside the tree.

and read back as a mirror would: a first sync of the newest version, and a
catch-up from the first version to the one after it and to the tenth. A catch-up
with packs fetches each pack that holds a blob it lacks whole when it needs more
than half of its bytes, else the blobs by ``Range`` GETs (one request each).
Not a test: numbers, not assertions. The layout is simulated with boto3 here
(not through render's store), so the figures are of the layout, not of code.

    python bench/packs.py                       # 10,000 articles, 10 versions, 30 ms
    python bench/packs.py --articles 2000 --sizes 1,4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from faultproxy import Delay, FaultProxy  # noqa: E402

from bench.sitegen import generate  # noqa: E402

SITE = "sites/bench/articles"
_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class Version:
    id: str
    tree: bytes  # versions/<id>.json as render wrote it
    files: dict[str, str]  # path -> blob hash


def _versions(host_root: Path, count: int) -> tuple[list[Version], Path]:
    """Publish the site, then ``count`` one-article edits; every version in order, and the blobs."""
    env = {**os.environ, "RENDER_CONFIG": str(host_root / "render.toml")}
    db = host_root / "sites" / "bench" / "articles" / "site.db"
    store = host_root / ".render" / "store" / SITE
    out: list[Version] = []
    for n in range(count + 1):
        if n:
            with sqlite3.connect(db) as conn:
                conn.execute("update articles set body = body || ' edited' where id = ?", (n * 7,))
            conn.close()
        subprocess.run(
            [sys.executable, "-m", "render", "force", "bench/articles", "--skip-lighthouse"],
            check=True,
            env=env,
            cwd=host_root,
            stdout=subprocess.DEVNULL,
        )
        version = json.loads((store / "root.json").read_bytes())["version"]
        raw = (store / "versions" / f"{version}.json").read_bytes()
        files = {path: entry["hash"] for path, entry in json.loads(raw)["files"].items()}
        out.append(Version(version, raw, files))
    return out, store / "blobs"


class Far:
    """A bucket on moto behind the latency proxy, with a thread pool and a request counter."""

    def __init__(self, client: Any, bucket: str, proxy: FaultProxy, concurrency: int) -> None:
        self.client, self.bucket, self.proxy = client, bucket, proxy
        self.pool = ThreadPoolExecutor(concurrency)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str, span: tuple[int, int] | None = None) -> bytes:
        extra = {"Range": f"bytes={span[0]}-{span[0] + span[1] - 1}"} if span else {}
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"].read())

    def each(self, calls: Iterable[Callable[[], object]]) -> list[object]:
        return list(self.pool.map(lambda call: call(), calls))

    def measure(self, step: Callable[[], object]) -> dict[str, float | int]:
        mark = self.proxy.mark()
        started = time.perf_counter()
        step()
        seconds = time.perf_counter() - started
        entries = self.proxy.entries(mark)
        return {
            "requests": len(entries),
            "put": sum(1 for e in entries if e.method == "PUT"),
            "get": sum(1 for e in entries if e.method == "GET"),
            "seconds": round(seconds, 2),
        }


Index = dict[str, tuple[str, int, int]]  # blob hash -> (pack name, offset, size)


def _packs(hashes: list[str], blobs: Path, limit: int) -> tuple[list[tuple[str, bytes]], Index]:
    """``hashes`` (in order) cut into packs of at most ``limit`` bytes (a bigger blob alone)."""
    packs: list[tuple[str, bytes]] = []
    index: Index = {}
    chunk: list[tuple[str, bytes]] = []
    size = 0

    def close() -> None:
        nonlocal chunk, size
        if not chunk:
            return
        data = b"".join(d for _h, d in chunk)
        name = hashlib.sha256(data).hexdigest()
        offset = 0
        for digest, part in chunk:
            index[digest] = (name, offset, len(part))
            offset += len(part)
        packs.append((name, data))
        chunk, size = [], 0

    for digest in hashes:
        data = (blobs / digest).read_bytes()
        if chunk and size + len(data) > limit:
            close()
        chunk.append((digest, data))
        size += len(data)
    close()
    return packs, index


def _new_blobs(versions: list[Version]) -> list[list[str]]:
    """Per version, the blobs no earlier version had, in path order."""
    seen: set[str] = set()
    out: list[list[str]] = []
    for version in versions:
        new: list[str] = []
        for path in sorted(version.files):
            digest = version.files[path]
            if digest not in seen:
                seen.add(digest)
                new.append(digest)
        out.append(new)
    return out


def _loose(far: Far, versions: list[Version], blobs: Path) -> dict[str, Any]:
    new = _new_blobs(versions)

    def publish(n: int) -> None:
        far.each(
            (lambda d=d: far.put(f"{SITE}/blobs/{d}", (blobs / d).read_bytes())) for d in new[n]
        )
        far.put(f"{SITE}/versions/{versions[n].id}.json", versions[n].tree)
        far.put(f"{SITE}/root.json", versions[n].id.encode())

    def sync(have: Mapping[str, str], to: Version) -> None:
        far.get(f"{SITE}/root.json")
        far.get(f"{SITE}/versions/{to.id}.json")
        lacking = sorted(set(to.files.values()) - set(have.values()))
        far.each((lambda d=d: far.get(f"{SITE}/blobs/{d}")) for d in lacking)

    result: dict[str, Any] = {"first_publish": far.measure(lambda: publish(0))}
    result["one_article_publish"] = far.measure(lambda: publish(1))
    for n in range(2, len(versions)):
        publish(n)
    result.update(_reads(far, versions, sync))
    return result


def _packed(far: Far, versions: list[Version], blobs: Path, limit: int) -> dict[str, Any]:
    new = _new_blobs(versions)
    index: Index = {}

    def publish(n: int) -> None:
        packs, added = _packs(new[n], blobs, limit)
        far.each((lambda p=p: far.put(f"{SITE}/packs/{p[0]}.pack", p[1])) for p in packs)
        index.update(added)
        files = versions[n].files
        own = {d: index[d] for d in set(files.values())}
        body = versions[n].tree + json.dumps(own, sort_keys=True).encode()  # tree + its index
        far.put(f"{SITE}/versions/{versions[n].id}.json", body)
        far.put(f"{SITE}/root.json", versions[n].id.encode())

    def sync(have: Mapping[str, str], to: Version) -> None:
        far.get(f"{SITE}/root.json")
        far.get(f"{SITE}/versions/{to.id}.json")
        lacking = set(to.files.values()) - set(have.values())
        by_pack: dict[str, list[str]] = {}
        for digest in lacking:
            by_pack.setdefault(index[digest][0], []).append(digest)
        calls: list[Callable[[], object]] = []
        for name, wanted in by_pack.items():
            need = sum(index[d][2] for d in wanted)
            whole = sum(size for pack, _o, size in index.values() if pack == name)
            if need * 2 > whole:
                calls.append(lambda name=name: far.get(f"{SITE}/packs/{name}.pack"))
            else:
                calls.extend(
                    (lambda d=d: far.get(f"{SITE}/packs/{index[d][0]}.pack", index[d][1:]))
                    for d in wanted
                )
        far.each(calls)

    result: dict[str, Any] = {"first_publish": far.measure(lambda: publish(0))}
    result["one_article_publish"] = far.measure(lambda: publish(1))
    for n in range(2, len(versions)):
        publish(n)
    result.update(_reads(far, versions, sync))
    result["packs_after_all"] = len({pack for pack, _o, _s in index.values()})
    return result


def _reads(
    far: Far, versions: list[Version], sync: Callable[[Mapping[str, str], Version], None]
) -> dict[str, Any]:
    last = versions[-1]
    out: dict[str, Any] = {"mirror_first_sync": far.measure(lambda: sync({}, last))}
    out["catch_up_1"] = far.measure(lambda: sync(versions[0].files, versions[1]))
    out[f"catch_up_{len(versions) - 1}"] = far.measure(lambda: sync(versions[0].files, last))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument(
        "--versions", type=int, default=10, help="one-article versions after the first"
    )
    parser.add_argument("--sizes", default="1,4,16,64", help="pack sizes to try, in MB")
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(_ENV)
    work = Path(tempfile.mkdtemp(prefix="render-bench-packs-"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        generate(work / "gen", articles=args.articles)
        started = time.perf_counter()
        versions, blobs = _versions(work / "gen" / "host", args.versions)
        local_seconds = time.perf_counter() - started
        address, port = server.get_host_and_port()
        upstream = f"http://{address}:{port}"
        admin = boto3.client("s3", endpoint_url=upstream, region_name="us-east-1")
        layouts: dict[str, Any] = {}
        with FaultProxy(
            upstream, rules=[lambda _r: Delay(args.latency_ms / 1000)]
        ).running() as proxy:
            client = boto3.client(
                "s3",
                endpoint_url=proxy.url,
                region_name="us-east-1",
                config=Config(max_pool_connections=args.concurrency, retries={"max_attempts": 1}),
            )
            names = ["loose"] + [f"packs-{size}mb" for size in args.sizes.split(",")]
            for n, layout in enumerate(names):
                bucket = f"bench-packs-{n}"
                admin.create_bucket(Bucket=bucket)
                far = Far(client, bucket, proxy, args.concurrency)
                if layout == "loose":
                    layouts[layout] = _loose(far, versions, blobs)
                else:
                    limit = int(float(layout.split("-")[1][:-2]) * (1 << 20))
                    layouts[layout] = _packed(far, versions, blobs, limit)
                far.pool.shutdown()
        news = _new_blobs(versions)
        print(
            json.dumps(
                {
                    "articles": args.articles,
                    "files_per_version": len(versions[-1].files),
                    "bytes_first_version": sum((blobs / d).stat().st_size for d in news[0]),
                    "new_blobs_per_one_article_version": [len(n) for n in news[1:]],
                    "latency_ms": args.latency_ms,
                    "concurrency": args.concurrency,
                    "local_publishes_seconds": round(local_seconds, 1),
                    "layouts": layouts,
                },
                indent=1,
            )
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
