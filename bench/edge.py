"""Edge Worker benchmark: R2 operations per page view, and requests per second for cached
pages through the local Workers runtime (workerd via Miniflare) against ``render serve``.

Publishes a synthetic site with the real publish code into a local store, loads it into
the runtime's R2 bucket (``edge/test/harness.mjs``), and counts the Worker's R2
operations per view: cold (a fresh isolate), warm (the same isolate, another page), and
after the live version's TTL (``ROOT_TTL_SECONDS``: the host claim that names it). Then the same keep-alive client sends the same pages to the Worker
and to ``render serve`` (``render.serve.live`` in its own process), one after the other.
Not a test: numbers, not assertions.

    python bench/edge.py                       # 500 articles, 3,000 requests per server
    python bench/edge.py --articles 200 --requests 1000
    python bench/edge.py --layout loose        # one key per blob instead of packs
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.mirror import synthetic_site  # noqa: E402
from render.build.tree import FileEntry, content_type, write_object  # noqa: E402
from render.publish.store import LocalStore  # noqa: E402
from render.publish.versions import DEFAULT_PACK_LIMIT, publish_tree  # noqa: E402

HOST = "bench.example"
HARNESS_HOST = "render-edge-harness.invalid"


def _get(conn: http.client.HTTPConnection, path: str, host: str) -> int:
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    response.read()
    return response.status


class Edge:
    def __init__(self, store: Path, ttl: float) -> None:
        node = shutil.which("node") or "node"
        self.process = subprocess.Popen(
            [
                node,
                str(ROOT / "edge" / "test" / "harness.mjs"),
                "--store",
                str(store),
                "--port",
                "0",
                "--ttl",
                str(ttl),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("ready "):
            raise SystemExit(f"the edge harness did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def command(self, text: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def ops(self) -> list[str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/__ops?reset=1", headers={"Host": HARNESS_HOST})
        data: list[str] = json.loads(conn.getresponse().read())["ops"]
        conn.close()
        return data

    def view(self, path: str) -> list[str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.ops()
        _get(conn, path, HOST)
        conn.close()
        return self.ops()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def rps(port: int, paths: list[str], *, requests: int, clients: int = 4) -> dict[str, Any]:
    """Requests per second over ``clients`` keep-alive connections; every answer must be 200."""
    per = requests // clients
    failures: list[int] = []

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(per):
            status = _get(conn, paths[(offset + i) % len(paths)], HOST)
            if status != 200:
                failures.append(status)
        conn.close()

    for path in paths:  # warm every cache first
        _get(http.client.HTTPConnection("127.0.0.1", port, timeout=30), path, HOST)
    threads = [threading.Thread(target=client, args=(n * 7,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    return {
        "requests": per * clients,
        "seconds": round(seconds, 3),
        "rps": round(per * clients / seconds, 1),
        "non_200": len(failures),
    }


SERVE = """
import sys, pathlib
from render.check.loopback import serve_forever
from render.publish.store import LocalStore
from render.serve.live import LiveSites
live = LiveSites(LocalStore(pathlib.Path(sys.argv[1])), cache=pathlib.Path(sys.argv[2]))
serve_forever(live, port=0, ready=lambda r: print(r.port, flush=True))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=500)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--layout", choices=("packs", "loose"), default="packs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        work = Path(tmp)
        store = LocalStore(work / "store")
        files = synthetic_site(args.articles)
        objects = work / "objects"
        objects.mkdir()
        entries = {
            p: FileEntry(hash=write_object(objects, d), size=len(d), type=content_type(p))
            for p, d in files.items()
        }
        publish_tree(
            entries,
            objects,
            owner="bench",
            name="articles",
            base_url=f"https://{HOST}/",
            store=store,
            ledger=None,
            pack_limit=DEFAULT_PACK_LIMIT if args.layout == "packs" else None,
        )
        pages = [
            f"/posts/article-{i:05d}/" for i in range(0, args.articles, max(1, args.articles // 50))
        ]
        result: dict[str, Any] = {"articles": args.articles, "layout": args.layout}

        edge = Edge(work / "store", ttl=2)
        try:
            edge.command("reload")
            cold = edge.view(pages[0])
            warm = edge.view(pages[1])
            head_ops = edge.ops()
            time.sleep(2.1)  # past the TTL: the host claim is read again
            stale = edge.view(pages[2])
            edge.command("reload")
            cold_cached = edge.view(
                pages[3]
            )  # a new isolate; the Cache API still holds pointers and tree
            result["r2_ops_per_view"] = {
                "cold_isolate_and_cache": len(cold),
                "cold_ops": cold,
                "warm": len(warm),
                "after_root_ttl": len(stale),
                "cold_isolate_warm_cache_api": len(cold_cached),
                "idle": len(head_ops),
            }
            result["edge"] = rps(edge.port, pages, requests=args.requests)
        finally:
            edge.close()

        serve = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(work / "store"), str(work / "cache")],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert serve.stdout is not None
            port = int(serve.stdout.readline())
            result["render_serve"] = rps(port, pages, requests=args.requests)
        finally:
            serve.terminate()
            serve.wait(timeout=30)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
