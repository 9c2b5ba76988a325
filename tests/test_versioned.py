"""The versioned URL space in ``render serve``: /_v/<version>/, live.json, tree.json, deltas.

Real store folders, real publishes and gc, the real loopback server on a free port.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from s3server import make_build, site_files

from render.check.loopback import serve
from render.publish.gc import gc
from render.publish.manifest import delta_key
from render.publish.store import LocalStore
from render.publish.versions import publish
from render.serve.live import LiveSites

HOST = "blog.acme.localhost"
IMMUTABLE = "public, max-age=31536000, immutable"


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Host": HOST})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _three_versions(store: LocalStore, work: Path) -> list[str]:
    v1 = site_files(3)
    v2 = v1 | {
        "posts/p1/index.html": b"<!doctype html><title>Post 1</title><h1>v2</h1>",
        "static/site.css": b"body{color:navy}",
    }
    v3 = {k: v for k, v in v2.items() if k != "posts/p2/index.html"} | {"new.html": b"<p>new"}
    return [
        publish(make_build(work / f"b{i}", files), store=store, ledger=None).version
        for i, files in enumerate((v1, v2, v3))
    ]


def test_each_kept_version_answers_under_its_own_prefix_with_immutable_caching(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    v1, v2, v3 = _three_versions(store, tmp_path)
    live = LiveSites(store, cache=tmp_path / "cache", refresh_seconds=0)
    with serve(live) as running:
        status, headers, body = _get(f"{running.url}/_render/live.json")
        assert status == 200 and headers["Cache-Control"] == "no-cache"
        doc = json.loads(body)
        assert (doc["version"], doc["parent"]) == (v3, v2) and len(doc["tree"]) == 64

        status, headers, body = _get(f"{running.url}/_v/{v1}/posts/p1/")
        assert (status, body) == (200, b"<!doctype html><title>Post 1</title><h1>Post 1</h1>")
        assert headers["Cache-Control"] == IMMUTABLE and headers["X-Render-Version"] == v1
        assert _get(f"{running.url}/_v/{v2}/posts/p1/")[2].endswith(b"<h1>v2</h1>")
        assert _get(f"{running.url}/_v/{v1}/static/site.css")[2] == b"body{font-family:sans-serif}"
        # a file a later version removed is still there under the version that has it
        assert _get(f"{running.url}/_v/{v2}/posts/p2/")[0] == 200
        assert _get(f"{running.url}/_v/{v3}/posts/p2/")[0] == 404
        # a redirect stays inside the version (urllib follows it)
        assert _get(f"{running.url}/_v/{v1}/posts/p1")[2].endswith(b"<h1>Post 1</h1>")

        status, headers, body = _get(f"{running.url}/_v/{v1}/_render/tree.json")
        tree = json.loads(body)
        assert headers["Cache-Control"] == IMMUTABLE
        assert tree["version"] == v1 and tree["parent"] is None
        assert sorted(tree["files"]) == sorted(site_files(3))

        # each publish wrote the delta from its parent
        assert store.exists(delta_key("acme", "blog", v2, v1))
        delta = json.loads(_get(f"{running.url}/_v/{v3}/_render/delta/{v2}.json")[2])
        assert (delta["version"], delta["from"], delta["from_parent"]) == (v3, v2, v1)
        assert list(delta["added"]) == ["new.html"] and delta["changed"] == {}
        assert delta["removed"] == ["posts/p2/index.html"]
        delta = json.loads(_get(f"{running.url}/_v/{v2}/_render/delta/{v1}.json")[2])
        assert sorted(delta["changed"]) == ["posts/p1/index.html", "static/site.css"]
        # a delta across two versions is computed from the kept trees
        delta = json.loads(_get(f"{running.url}/_v/{v3}/_render/delta/{v1}.json")[2])
        assert sorted(delta["changed"]) == ["posts/p1/index.html", "static/site.css"]

        assert _get(f"{running.url}/_v/20990101T000000Z-00000000/")[0] == 404
        assert _get(f"{running.url}/_v/../etc/passwd")[0] == 404
        # the live tree keeps answering as before
        assert _get(f"{running.url}/new.html")[2] == b"<p>new"

        gc(store, owner="acme", name="blog", keep=1, grace_hours=0)
        status, headers, body = _get(f"{running.url}/_v/{v1}/posts/p1/")
        assert status == 404 and b"not kept" in body and headers["Cache-Control"] == "no-cache"
        assert _get(f"{running.url}/_v/{v1}/_render/tree.json")[0] == 404
        assert _get(f"{running.url}/_v/{v3}/posts/p1/")[0] == 200
    assert not store.exists(delta_key("acme", "blog", v2, v1))
    assert not store.exists(delta_key("acme", "blog", v3, v2))
