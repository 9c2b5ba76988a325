"""The edge Worker in a real Workers runtime (workerd through Miniflare) on loopback, reading an
R2 bucket loaded from the local store: the bytes, the headers, switches and refusals."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgekit import EdgeRuntime, edge_runtime, stub_origin
from mirrorkit import HOST, publish_files, site_files
from test_routing import CASES

from render.config import load_host, load_site, site_dirs
from render.demo import init_host
from render.edge.routing import routing_js
from render.islands import worker_source
from render.pipeline import Options, run_site
from render.publish.gc import gc
from render.publish.history import rollback
from render.publish.manifest import blob_key, delta_key
from render.publish.store import LocalStore
from render.publish.versions import read_root, read_tree
from render.serve.live import LiveSites
from render.serve.routing import Target

REPO = Path(__file__).resolve().parent.parent
DEMO_HOST = "blog.example.com"
HASHED = re.compile(r"\.[0-9a-f]{8,}\.(?:css|js|mjs|woff2?|png|jpe?g|gif|svg|webp|avif)$", re.I)
ASSET = re.compile(
    r"\.(?:css|js|mjs|json|png|jpe?g|gif|svg|webp|avif|ico|woff2?|ttf|otf|pdf|mp4|webm)$", re.I
)


def mirror_cache_control(url: str) -> str:
    """ovh/nginx/render-mirror.conf's maps, in the same order."""
    if url == "/sw.js":
        return "no-cache"
    if HASHED.search(url):
        return "public, max-age=31536000, immutable"
    if ASSET.search(url):
        return "public, max-age=86400"
    if re.match(r"^/(?:robots\.txt|sitemap[^/]*\.xml)$", url):
        return "public, max-age=3600"
    return "public, max-age=60"


def url_of(path: str) -> str:
    return "/" + path.removesuffix("index.html")


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("edge-demo")
    init_host(folder, demo=True)
    host = load_host(folder / "render.toml")
    site = load_site(site_dirs(host)[0], host=host)
    report = run_site(site, host=host, options=Options(skip_lighthouse=True))
    assert report.build is not None
    return host.store_path


@pytest.fixture(scope="module")
def demo_edge(demo_store: Path) -> Iterator[EdgeRuntime]:
    with edge_runtime(demo_store) as edge:
        yield edge


def live_demo(store_path: Path) -> tuple[str, dict[str, object], LocalStore]:
    store = LocalStore(store_path)
    ((owner, name),) = store.sites()
    root, _ = read_root(store, owner=owner, name=name)
    assert root is not None
    tree = read_tree(store, owner=owner, name=name, version=root.version)
    return root.version, dict(tree.files), store


def test_edge_serves_every_file_of_the_demo_byte_for_byte(
    demo_store: Path, demo_edge: EdgeRuntime
) -> None:
    version, files, store = live_demo(demo_store)
    assert len(files) > 10
    for path, entry in sorted(files.items()):
        reply = demo_edge.get(url_of(path), host=DEMO_HOST)
        expected = store.get(blob_key("demo", "blog", entry.hash))  # type: ignore[attr-defined]
        assert (reply.status, reply.body) == (200, expected), path
        assert reply.header("content-type") == entry.type  # type: ignore[attr-defined]
        assert reply.header("etag") == f'"{entry.hash}"'  # type: ignore[attr-defined]
        assert reply.header("cache-control") == mirror_cache_control(url_of(path)), path
        assert reply.header("x-render-version") == version
        assert reply.header("x-content-type-options") == "nosniff"


def test_edge_answers_304_head_404_and_folder_redirects(
    demo_store: Path, demo_edge: EdgeRuntime
) -> None:
    version, files, store = live_demo(demo_store)
    page = demo_edge.get("/", host=DEMO_HOST)
    demo_edge.ops()
    again = demo_edge.get("/", host=DEMO_HOST, headers={"If-None-Match": page.header("etag")})
    assert (again.status, again.body, again.header("etag")) == (304, b"", page.header("etag"))
    assert demo_edge.ops() == []  # a warm 304 reads nothing: the ETag is the tree's hash
    other = demo_edge.get("/", host=DEMO_HOST, headers={"If-None-Match": '"0000", W/"1111"'})
    assert (other.status, other.body) == (200, page.body)

    demo_edge.ops()
    head = demo_edge.get("/", host=DEMO_HOST, method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert head.header("content-length") == str(len(page.body))
    assert head.header("etag") == page.header("etag")
    assert demo_edge.ops() == []

    missing = demo_edge.get("/no/such/page/", host=DEMO_HOST)
    expected = store.get(blob_key("demo", "blog", files["404.html"].hash))  # type: ignore[attr-defined]
    assert (missing.status, missing.body) == (404, expected)
    assert missing.header("content-type").startswith("text/html")
    head404 = demo_edge.get("/no/such/page/", host=DEMO_HOST, method="HEAD")
    assert (head404.status, head404.body) == (404, b"")

    folder = next(p for p in files if p.endswith("/index.html") and p.count("/") >= 2)
    bare = "/" + folder.removesuffix("/index.html")
    moved = demo_edge.get(bare + "?x=1", host=DEMO_HOST)
    assert (moved.status, moved.header("location")) == (301, bare + "/?x=1")

    unknown = demo_edge.get("/", host="nobody.example.org")
    assert unknown.status == 404


BAD_PATHS = [
    "/posts/a%2Fb/",  # an encoded slash
    "/posts/a%2fb",
    "/..%2f..%2fsites/demo/blog/root.json",
    "/%2e%2e%2fhosts/blog.example.com.json",
    "/a%5c..%5cb",  # an encoded backslash
    "/a%00b",  # NUL
    "/bad%zzescape",
    "/" + "a" * 300,  # a name longer than any file system's
    "/" + "a/" * 600,  # a path longer than 1 KiB
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_edge_refuses_bad_paths_without_reading_the_bucket(
    demo_edge: EdgeRuntime, path: str
) -> None:
    demo_edge.reload()  # a cold isolate: anything it read would show
    demo_edge.ops()
    reply = demo_edge.get(path, host=DEMO_HOST)
    assert reply.status == 400
    assert demo_edge.ops() == []


def test_edge_dot_segments_never_leave_the_site(demo_store: Path, demo_edge: EdgeRuntime) -> None:
    """The runtime folds `..` before the Worker sees it: what is left is a path in the tree."""
    _version, files, store = live_demo(demo_store)
    demo_edge.ops()
    reply = demo_edge.get("/posts/../../../sites/demo/blog/root.json", host=DEMO_HOST)
    expected = store.get(blob_key("demo", "blog", files["404.html"].hash))  # type: ignore[attr-defined]
    assert (reply.status, reply.body) == (404, expected)
    blobs = {f"sites/demo/blog/blobs/{e.hash}" for e in files.values()}  # type: ignore[attr-defined]
    allowed = {"hosts/blog.example.com.json", "sites/demo/blog/root.json"} | blobs
    for op in demo_edge.ops():
        key = op.split(" ", 1)[1]
        assert key in allowed or key.startswith("sites/demo/blog/versions/"), op


def test_edge_reads_one_object_per_warm_view_and_few_cold(demo_edge: EdgeRuntime) -> None:
    demo_edge.reload()
    demo_edge.ops()
    demo_edge.get("/", host=DEMO_HOST)
    cold = demo_edge.ops()
    # a new isolate: the host claim and tree, unless the Cache API holds them; the blob
    assert 1 <= len(cold) <= 3 and "/blobs/" in cold[-1], cold
    assert not any(op.endswith("/root.json") for op in cold), cold
    demo_edge.get("/", host=DEMO_HOST)
    warm = demo_edge.ops()
    assert len(warm) == 1 and "/blobs/" in warm[0], warm


# --- switches ------------------------------------------------------------------


def observe_until(
    edge: EdgeRuntime, files_by_version: dict[str, dict[str, bytes]], wanted: str, *, within: float
) -> None:
    """Request pages until ``wanted`` is served; every response must be one version's bytes."""
    deadline = time.monotonic() + within
    paths = ["index.html", "posts/hello/index.html", "assets/common.css", "robots.txt"]
    seen = ""
    while time.monotonic() < deadline:
        for path in paths:
            reply = edge.get(url_of(path), host=HOST)
            seen = reply.header("x-render-version")
            assert seen in files_by_version, seen
            assert (reply.status, reply.body) == (200, files_by_version[seen][path]), (path, seen)
        if seen == wanted:
            return
    raise AssertionError(f"still serving {seen} after {within} s, not {wanted}")


def test_edge_switches_to_a_new_publish_and_a_rollback_within_the_ttl(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ttl = 1.0
    first_files, second_files = site_files("one"), site_files("two")
    first = publish_files(store, first_files, objects=tmp_path / "objects")
    with edge_runtime(tmp_path / "store", ttl=ttl) as edge:
        by_version = {first: first_files}
        observe_until(edge, by_version, first, within=ttl + 5)
        second = publish_files(store, second_files, objects=tmp_path / "objects")
        by_version[second] = second_files
        assert edge.sync() > 0
        observe_until(edge, by_version, second, within=ttl + 5)
        rollback(store, owner="acme", name="blog")
        assert edge.sync() > 0
        observe_until(edge, by_version, first, within=ttl + 5)


# --- routing ---------------------------------------------------------------------


def test_edge_routing_js_is_the_generated_one() -> None:
    committed = (REPO / "edge" / "src" / "routing.js").read_text(encoding="utf-8")
    assert committed == routing_js(), "run: render edge routing"


def test_edge_routes_every_case_as_render_routing_does(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish_files(store, site_files("one"), objects=tmp_path / "objects")
    with (
        stub_origin() as origin,
        edge_runtime(tmp_path / "store", origin=f"http://127.0.0.1:{origin.port}") as edge,
    ):
        for user_agent, cookies, method, target in CASES:
            headers = {"User-Agent": user_agent or ""} if user_agent else {}
            if cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
            body = b"user=a" if method == "POST" else None
            reply = edge.get(
                "/posts/hello/?q=1", host=HOST, method=method, headers=headers, body=body
            )
            served = "origin" if target is Target.app else "r2"
            assert reply.header("x-render-served") == served, (user_agent, cookies, method)
            assert reply.status == 200


def test_edge_sends_a_session_to_the_origin(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish_files(store, site_files("one"), objects=tmp_path / "objects")
    with (
        stub_origin() as origin,
        edge_runtime(tmp_path / "store", origin=f"http://127.0.0.1:{origin.port}") as edge,
    ):
        edge.ops()
        reply = edge.get(
            "/posts/hello/?q=1", host=HOST, headers={"Cookie": "theme=dark; session=s3cr3t"}
        )
        assert (reply.status, reply.body) == (200, b"origin GET /posts/hello/?q=1")
        assert edge.ops() == []  # the bucket is not read for a logged-in person
        assert origin.seen[-1]["host"] == HOST
        assert "session=s3cr3t" in origin.seen[-1]["cookie"]
        posted = edge.get(
            "/login",
            host=HOST,
            method="POST",
            body=b"user=a",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert posted.body == b"origin POST /login"
        assert origin.seen[-1]["body"] == "user=a"


def test_edge_answers_byte_ranges(demo_store: Path, demo_edge: EdgeRuntime) -> None:
    _version, files, store = live_demo(demo_store)
    entry = files["index.html"]
    whole = store.get(blob_key("demo", "blog", entry.hash))  # type: ignore[attr-defined]
    assert whole is not None and len(whole) > 100
    part = demo_edge.get("/", host=DEMO_HOST, headers={"Range": "bytes=10-49"})
    assert (part.status, part.body) == (206, whole[10:50])
    assert part.header("content-range") == f"bytes 10-49/{len(whole)}"
    tail = demo_edge.get("/", host=DEMO_HOST, headers={"Range": "bytes=-20"})
    assert (tail.status, tail.body) == (206, whole[-20:])
    beyond = demo_edge.get("/", host=DEMO_HOST, headers={"Range": f"bytes={len(whole)}-"})
    assert (beyond.status, beyond.header("content-range")) == (416, f"bytes */{len(whole)}")
    stale = demo_edge.get("/", host=DEMO_HOST, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert (stale.status, stale.body) == (200, whole)


def test_edge_answers_503_for_a_corrupt_claim_or_root_and_recovers(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    files = site_files("one")
    version = publish_files(store, files, objects=tmp_path / "objects")
    claim = tmp_path / "store" / "hosts" / f"{HOST}.json"
    root = tmp_path / "store" / "sites" / "acme" / "blog" / "root.json"
    good_claim, good_root = claim.read_bytes(), root.read_bytes()
    with edge_runtime(tmp_path / "store", ttl=0) as edge:
        claim.write_bytes(b"{not json")
        edge.sync()
        broken = edge.get("/", host=HOST)
        assert broken.status == 503
        assert f"hosts/{HOST}.json".encode() in broken.body
        # a claim without its pointer (older publishers) sends the Worker to root.json
        legacy = json.loads(good_claim)
        del legacy["live"]
        claim.write_text(json.dumps(legacy))
        root.write_bytes(b"{not json")
        edge.sync()
        broken = edge.get("/", host=HOST)
        assert broken.status == 503
        assert b"sites/acme/blog/root.json" in broken.body
        claim.write_bytes(good_claim)
        root.write_bytes(good_root)
        edge.sync()
        back = edge.get("/", host=HOST)
        assert (back.status, back.body, back.header("x-render-version")) == (
            200,
            files["index.html"],
            version,
        )


def test_edge_answers_502_when_the_origin_is_down(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish_files(store, site_files("one"), objects=tmp_path / "objects")
    with stub_origin() as origin:
        closed = origin.port  # stopped below: nothing listens there any more
    with edge_runtime(tmp_path / "store", origin=f"http://127.0.0.1:{closed}") as edge:
        reply = edge.get("/", host=HOST, headers={"Cookie": "session=s3cr3t"})
        assert (reply.status, reply.header("x-render-served")) == (502, "origin")
        assert edge.get("/", host=HOST).status == 200  # newcomers are still served from R2


def test_edge_reads_three_objects_cold_and_one_warm(tmp_path: Path) -> None:
    """The host claim names the live version: a cold view never reads root.json."""
    store = LocalStore(tmp_path / "store")
    files = site_files("one")
    version = publish_files(store, files, objects=tmp_path / "objects")
    tree = read_tree(store, owner="acme", name="blog", version=version)
    with edge_runtime(tmp_path / "store") as edge:
        edge.ops()
        assert edge.get("/", host=HOST).body == files["index.html"]
        assert edge.ops() == [
            f"get hosts/{HOST}.json",
            f"get sites/acme/blog/versions/{version}.json",
            f"get sites/acme/blog/blobs/{tree.files['index.html'].hash}",
        ]
        assert edge.get("/posts/hello/", host=HOST).body == files["posts/hello/index.html"]
        assert edge.ops() == [
            f"get sites/acme/blog/blobs/{tree.files['posts/hello/index.html'].hash}"
        ]


# --- the versioned URL space (render/serve/versioned.py, issue 13) ---------------------

IMMUTABLE = "public, max-age=31536000, immutable"


def with_worker(tag: str) -> dict[str, bytes]:
    return {**site_files(tag), "sw.js": worker_source()}


def test_edge_serves_every_kept_version_under_v_as_render_serve_does(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    objects = tmp_path / "objects"
    by_version = {}
    for tag in ("one", "two", "three"):
        files = with_worker(tag)
        by_version[publish_files(store, files, objects=objects)] = files
    v1, v2, v3 = by_version
    serve = LiveSites(store, cache=tmp_path / "cache", refresh_seconds=0)
    with edge_runtime(tmp_path / "store", ttl=0) as edge:
        for version in (v1, v2):
            tree = read_tree(store, owner="acme", name="blog", version=version)
            for path, entry in tree.files.items():
                reply = edge.get(f"/_v/{version}/{path.removesuffix('index.html')}", host=HOST)
                expected = store.get(blob_key("acme", "blog", entry.hash))
                assert (reply.status, reply.body) == (200, expected), (version, path)
                assert expected == by_version[version][path]
                assert reply.header("cache-control") == IMMUTABLE
                assert reply.header("x-render-version") == version
                assert reply.header("content-type") == entry.type
            bare = edge.get(f"/_v/{version}/posts/hello", host=HOST)
            assert (bare.status, bare.header("location")) == (301, f"/_v/{version}/posts/hello/")
            missing = edge.get(f"/_v/{version}/no/such/", host=HOST)
            assert (missing.status, missing.body) == (404, by_version[version]["404.html"])
            assert missing.header("cache-control") == "no-cache"

            # tree.json: the bytes render serve answers for the same version
            reply = edge.get(f"/_v/{version}/_render/tree.json", host=HOST)
            python = serve(HOST, f"/_v/{version}/_render/tree.json")
            assert (reply.status, reply.body) == (python.status, python.body)
            assert reply.header("cache-control") == python.headers["Cache-Control"] == IMMUTABLE
            assert reply.header("x-render-version") == version
            assert reply.header("content-type") == "application/json"

        # the delta each publish wrote, as stored
        delta = edge.get(f"/_v/{v2}/_render/delta/{v1}.json", host=HOST)
        assert (delta.status, delta.body) == (200, store.get(delta_key("acme", "blog", v2, v1)))
        assert delta.header("cache-control") == IMMUTABLE
        assert json.loads(delta.body)["from"] == v1
        # one no publish wrote (v1 is not v3's parent): computed, as render serve computes it
        assert store.get(delta_key("acme", "blog", v3, v1)) is None
        far = edge.get(f"/_v/{v3}/_render/delta/{v1}.json", host=HOST)
        python = serve(HOST, f"/_v/{v3}/_render/delta/{v1}.json")
        assert (far.status, far.body) == (python.status, python.body) == (200, python.body)
        assert json.loads(far.body)["removed"] == ["assets/app-one.css"]

        # /sw.js: the live tree's worker, the bytes of render/assets/sw.js, no-cache
        worker = edge.get("/sw.js", host=HOST)
        assert (worker.status, worker.body) == (200, worker_source())
        assert worker.header("cache-control") == "no-cache"
        assert worker.header("x-render-version") == v3
        assert worker.body == serve(HOST, "/sw.js").body

        # a version gc collected (and names that are no version) answer a plain 404
        edge.get(f"/_v/{v1}/", host=HOST)  # its tree is now cached in the isolate
        gc(store, owner="acme", name="blog", keep=2, grace_hours=0)
        assert store.get(f"sites/acme/blog/versions/{v1}.json") is None
        edge.sync()
        for path in (f"/_v/{v1}/", f"/_v/{v1}/_render/tree.json", f"/_v/{v1}/static/logo.svg"):
            gone = edge.get(path, host=HOST)
            assert gone.status == 404 == serve(HOST, path).status, path
            assert gone.body == f"version {v1} is not kept here\n".encode()
            assert gone.header("x-render-version") == ""
            assert gone.header("cache-control") == "no-cache"
        edge.ops()
        for bad in ("/_v/latest/", "/_v/20261127T030000Z-XYZ/", "/_v/"):
            reply = edge.get(bad, host=HOST)
            assert reply.status in (400, 404) and reply.header("x-render-version") == "", bad
        reads = [op for op in edge.ops() if "/versions/" in op or "/deltas/" in op]
        assert reads == [], reads  # invalid ids read nothing under versions/ or deltas/


def test_edge_live_json_follows_a_publish(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    objects = tmp_path / "objects"
    first = publish_files(store, with_worker("one"), objects=objects)
    serve = LiveSites(store, cache=tmp_path / "cache", refresh_seconds=0)
    with edge_runtime(tmp_path / "store", ttl=0) as edge:
        live = edge.get("/_render/live.json", host=HOST)
        assert (live.status, live.body) == (200, serve(HOST, "/_render/live.json").body)
        assert json.loads(live.body)["version"] == first
        assert live.header("cache-control") == "no-cache"
        assert live.header("content-type") == "application/json"
        second = publish_files(store, with_worker("two"), objects=objects)
        edge.sync()
        after = edge.get("/_render/live.json", host=HOST)
        root, _ = read_root(store, owner="acme", name="blog")
        assert root is not None
        assert json.loads(after.body) == {
            "version": second,
            "parent": first,
            "tree": root.files_hash,
        }
        assert after.body == serve(HOST, "/_render/live.json").body
        assert after.header("x-render-version") == second
        head = edge.get("/_render/live.json", host=HOST, method="HEAD")
        assert (head.status, head.body) == (200, b"")
