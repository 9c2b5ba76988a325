"""What the service worker pays to follow a site: delta and tree sizes on the 10,000-article site.

    .venv/bin/python bench/versions.py [--articles 10000] [--versions 10]

Publishes the bench site, then ``--versions`` more versions with one article
changed each (a local store), and prints one JSON line: each delta's bytes and
paths, the whole tree's bytes (raw and gzip), what a worker on version N-1
fetches to move to N, and what chaining k deltas costs against one tree, for
two link models. Nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out-versions"
sys.path.insert(0, str(HERE.parent))

from bench.sitegen import generate  # noqa: E402
from render import builder  # noqa: E402
from render.build import snapshot  # noqa: E402
from render.config import load_host, load_site, site_dirs  # noqa: E402
from render.publish.manifest import delta_key  # noqa: E402
from render.publish.store import LocalStore  # noqa: E402
from render.publish.versions import publish, read_tree  # noqa: E402
from render.serve.versioned import tree_document  # noqa: E402

RTT_S = 0.05  # a round trip on a mobile link
LINKS = {"10_mbit": 10e6 / 8, "100_mbit": 100e6 / 8}  # bytes a second


def _publish(store: LocalStore) -> tuple[str, int]:
    host = load_host(OUT / "host" / "render.toml")
    site = load_site(site_dirs(host)[0], host=host)
    with snapshot.take(site, into=host.state_dir / "snapshots" / "bench-versions") as snap:
        build = builder.build(site, snap, host=host)
    registered = sum(
        1 for p in build.files if p.endswith(".html") and b"/_render/" in build.read(p)[:4096]
    )
    return publish(build, store=store, ledger=None).version, registered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=10)
    args = parser.parse_args()
    site_dir = generate(OUT, articles=args.articles)
    store = LocalStore(OUT / "store")
    shutil.rmtree(store.root, ignore_errors=True)
    started = time.perf_counter()
    versions = [_publish(store)[0]]
    deltas = []
    for step in range(args.versions):
        db = sqlite3.connect(site_dir / "site.db")
        with db:
            db.execute(
                "update articles set body = body || ? where id = ?",
                (f" Edit {step}.", 1 + step * 997 % args.articles),
            )
        db.close()
        version, registered = _publish(store)
        raw = store.get(delta_key("bench", "articles", version, versions[-1]))
        assert raw is not None
        doc = json.loads(raw)
        deltas.append(
            {
                "bytes": len(raw),
                "gzip": len(gzip.compress(raw)),
                "added": len(doc["added"]),
                "changed": len(doc["changed"]),
                "removed": len(doc["removed"]),
            }
        )
        versions.append(version)
    tree = read_tree(store, owner="bench", name="articles", version=versions[-1])
    whole = tree_document(version=tree.version, parent=tree.parent, files=tree.files)
    tree_bytes, tree_gzip = len(whole), len(gzip.compress(whole))
    delta_bytes = sorted(d["bytes"] for d in deltas)
    median = delta_bytes[len(delta_bytes) // 2]

    def seconds(requests: int, size: int, rate: float) -> float:
        return requests * RTT_S + size / rate

    chain = {}
    for name, rate in LINKS.items():
        by_k = {k: round(seconds(k, k * median, rate), 3) for k in (1, 2, 4, 8, 16, 32)}
        tree_s = round(seconds(2, 2 * tree_gzip, rate), 3)  # the worker fetches both trees
        chain[name] = {
            "deltas_s": by_k,
            "two_trees_s": tree_s,
            "break_even_k": next(
                (k for k in range(1, 1000) if seconds(k, k * median, rate) > tree_s), None
            ),
        }
    print(
        json.dumps(
            {
                "articles": args.articles,
                "files": len(tree.files),
                "versions": len(versions),
                "seconds": round(time.perf_counter() - started, 1),
                "delta_bytes": {
                    "median": median,
                    "max": delta_bytes[-1],
                    "median_gzip": sorted(d["gzip"] for d in deltas)[len(deltas) // 2],
                },
                "delta_paths": deltas[len(deltas) // 2],
                "tree_json_bytes": tree_bytes,
                "tree_json_gzip": tree_gzip,
                "move_one_version_requests": 1 + deltas[-1]["added"] + deltas[-1]["changed"],
                "pages_with_a_register_script": registered,
                "chain_vs_trees": chain,
                "rtt_s": RTT_S,
            }
        )
    )


if __name__ == "__main__":
    main()
