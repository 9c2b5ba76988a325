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
from render.publish.manifest import VersionTree, blob_key, delta_key, pack_key
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
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The demo published into a local store (packs, the default layout): the store folder,
    and the build's bytes of every file (path -> bytes)."""
    folder = tmp_path_factory.mktemp("edge-demo")
    init_host(folder, demo=True)
    with (folder / "render.toml").open("a", encoding="utf-8") as config:
        config.write("\n[mirror]\nenabled = false\n")  # the Worker reads the store alone
    host = load_host(folder / "render.toml")
    site = load_site(site_dirs(host)[0], host=host)
    report = run_site(site, host=host, options=Options(skip_lighthouse=True))
    assert report.build is not None
    return host.store_path, {path: report.build.read(path) for path in report.build.files}


@pytest.fixture(scope="module")
def demo_store(demo_build: tuple[Path, dict[str, bytes]]) -> Path:
    return demo_build[0]


@pytest.fixture(scope="module")
def built(demo_build: tuple[Path, dict[str, bytes]]) -> dict[str, bytes]:
    return demo_build[1]


@pytest.fixture(scope="module")
def demo_edge(demo_store: Path) -> Iterator[EdgeRuntime]:
    with edge_runtime(demo_store) as edge:
        yield edge


def live_demo(store_path: Path) -> tuple[str, VersionTree]:
    store = LocalStore(store_path)
    ((owner, name),) = store.sites()
    root, _ = read_root(store, owner=owner, name=name)
    assert root is not None
    return root.version, read_tree(store, owner=owner, name=name, version=root.version)


def blob_read(
    store: LocalStore, version: str, path: str, *, owner: str = "acme", name: str = "blog"
) -> str:
    """The R2 operation that reads ``path``'s blob: one ranged get of its pack, else its loose key."""
    tree = read_tree(store, owner=owner, name=name, version=version)
    entry = tree.files[path]
    where = tree.locate(entry.hash)
    if where is None:
        return f"get {blob_key(owner, name, entry.hash)}"
    pack, offset = where
    return f"get {pack_key(owner, name, pack)} bytes={offset}-{offset + entry.size - 1}"


def test_edge_serves_every_file_of_the_demo_byte_for_byte(
    demo_store: Path, demo_edge: EdgeRuntime, built: dict[str, bytes]
) -> None:
    version, tree = live_demo(demo_store)
    assert len(tree.files) > 10 and set(tree.files) == set(built)
    assert set(tree.index) == tree.hashes()  # every blob is in a pack: none is a loose key
    for path, entry in sorted(tree.files.items()):
        reply = demo_edge.get(url_of(path), host=DEMO_HOST)
        assert (reply.status, reply.body) == (200, built[path]), path
        assert reply.header("content-type") == entry.type
        assert reply.header("etag") == f'"{entry.hash}"'
        assert reply.header("cache-control") == mirror_cache_control(url_of(path)), path
        assert reply.header("x-render-version") == version
        assert reply.header("x-content-type-options") == "nosniff"


def test_edge_answers_304_head_404_and_folder_redirects(
    demo_store: Path, demo_edge: EdgeRuntime, built: dict[str, bytes]
) -> None:
    _version, tree = live_demo(demo_store)
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
    assert (missing.status, missing.body) == (404, built["404.html"])
    assert missing.header("content-type").startswith("text/html")
    head404 = demo_edge.get("/no/such/page/", host=DEMO_HOST, method="HEAD")
    assert (head404.status, head404.body) == (404, b"")

    folder = next(p for p in tree.files if p.endswith("/index.html") and p.count("/") >= 2)
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


def test_edge_dot_segments_never_leave_the_site(
    demo_store: Path, demo_edge: EdgeRuntime, built: dict[str, bytes]
) -> None:
    """The runtime folds `..` before the Worker sees it: what is left is a path in the tree."""
    _version, tree = live_demo(demo_store)
    demo_edge.ops()
    reply = demo_edge.get("/posts/../../../sites/demo/blog/root.json", host=DEMO_HOST)
    assert (reply.status, reply.body) == (404, built["404.html"])
    packs = {pack_key("demo", "blog", pack) for pack in tree.packs}
    allowed = {"hosts/blog.example.com.json", "sites/demo/blog/root.json"} | packs
    for op in demo_edge.ops():
        key = op.split(" ")[1]
        assert key in allowed or key.startswith("sites/demo/blog/versions/"), op


def test_edge_reads_one_object_per_warm_view_and_few_cold(demo_edge: EdgeRuntime) -> None:
    demo_edge.reload()
    demo_edge.ops()
    demo_edge.get("/", host=DEMO_HOST)
    cold = demo_edge.ops()
    # a new isolate: the host claim and tree, unless the Cache API holds them; the blob
    assert 1 <= len(cold) <= 3 and "/packs/" in cold[-1], cold
    assert not any(op.endswith("/root.json") for op in cold), cold
    demo_edge.get("/", host=DEMO_HOST)
    warm = demo_edge.ops()
    assert len(warm) == 1 and "/packs/" in warm[0] and " bytes=" in warm[0], warm


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


def test_edge_answers_byte_ranges(demo_edge: EdgeRuntime, built: dict[str, bytes]) -> None:
    whole = built["index.html"]
    assert len(whole) > 100
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
    """The host claim names the live version: a cold view never reads root.json, and the page
    is one ranged get of its pack."""
    store = LocalStore(tmp_path / "store")
    files = site_files("one")
    version = publish_files(store, files, objects=tmp_path / "objects")
    tree = read_tree(store, owner="acme", name="blog", version=version)
    ((pack, offset),) = {tree.locate(tree.files["index.html"].hash)}
    size = tree.files["index.html"].size
    with edge_runtime(tmp_path / "store") as edge:
        edge.ops()
        assert edge.get("/", host=HOST).body == files["index.html"]
        assert edge.ops() == [
            f"get hosts/{HOST}.json",
            f"get sites/acme/blog/versions/{version}.json",
            f"get sites/acme/blog/packs/{pack}.pack bytes={offset}-{offset + size - 1}",
        ]
        assert edge.get("/posts/hello/", host=HOST).body == files["posts/hello/index.html"]
        assert edge.ops() == [blob_read(store, version, "posts/hello/index.html")]
        # a byte range of a page: still the whole blob (only the whole can be checked), one get
        part = edge.get("/", host=HOST, headers={"Range": "bytes=5-14"})
        assert (part.status, part.body) == (206, files["index.html"][5:15])
        assert edge.ops() == [blob_read(store, version, "index.html")]


# --- packs and loose keys ------------------------------------------------------------


def test_edge_never_serves_a_blob_of_a_corrupted_or_truncated_pack(tmp_path: Path) -> None:
    """Each blob is checked against its sha256: a bad one is a 502 nothing may cache, read
    again on every request, and the good pack serves again once it is back."""
    store = LocalStore(tmp_path / "store")
    files = site_files("one")
    version = publish_files(store, files, objects=tmp_path / "objects")
    tree = read_tree(store, owner="acme", name="blog", version=version)
    (pack,) = tree.packs
    assert set(tree.index) == tree.hashes() and len(tree.hashes()) == len(files) == 8
    pack_file = tmp_path / "store" / pack_key("acme", "blog", pack)
    good = pack_file.read_bytes()
    pack_file.chmod(0o644)
    by_offset = sorted(files, key=lambda path: tree.index[tree.files[path].hash][1])

    def spot(path: str) -> tuple[str, int, int]:
        entry = tree.files[path]
        return entry.hash, tree.index[entry.hash][1], entry.size

    def refused(path: str, problem: str) -> None:
        digest, offset, _ = spot(path)
        for headers in ({}, {"Range": "bytes=0-9"}):
            reply = edge.get(url_of(path), host=HOST, headers=headers)
            assert (reply.status, reply.body) == (
                502,
                f"blob {digest} is corrupt in sites/acme/blog/packs/{pack}.pack"
                f" at offset {offset}: {problem}\n".encode(),
            )
            assert reply.header("cache-control") == "no-store"

    def served(paths: list[str]) -> None:
        for path in paths:
            reply = edge.get(url_of(path), host=HOST)
            assert (reply.status, reply.body) == (200, files[path]), path

    with edge_runtime(tmp_path / "store") as edge:
        served(by_offset)
        # one byte of the home page flipped
        _digest, offset, size = spot("index.html")
        corrupt = bytearray(good)
        corrupt[offset + size // 2] ^= 0x20
        pack_file.write_bytes(corrupt)
        assert edge.sync() == 1
        edge.ops()
        refused("index.html", "the bytes there do not hash to it")
        refused("index.html", "the bytes there do not hash to it")
        # read again each time (never a copy kept), and read as one ranged get
        assert edge.ops() == [blob_read(store, version, "index.html")] * 4
        served([path for path in files if path != "index.html"])

        # cut in the middle of one blob: it is short, and the blobs after it start past the end
        cut_in, after = by_offset[4], by_offset[5:]
        _digest, offset, size = spot(cut_in)
        pack_file.write_bytes(good[: offset + size // 2])
        assert edge.sync() == 1
        refused(cut_in, f"{size // 2} of its {size} bytes are there")
        for path in after:
            refused(path, f"0 of its {spot(path)[2]} bytes are there")
        served(by_offset[:4])

        pack_file.write_bytes(good)
        assert edge.sync() == 1
        served(by_offset)


def test_edge_serves_a_loose_site_and_a_version_mixing_loose_and_packed_blobs(
    tmp_path: Path,
) -> None:
    """``[store] layout = "loose"``: one key per blob; a packed version after it keeps the
    blobs it did not change as loose keys, and the Worker reads each where the index says."""
    store = LocalStore(tmp_path / "store")
    objects = tmp_path / "objects"
    loose_files = site_files("one")
    loose = publish_files(store, loose_files, objects=objects, pack_limit=None)
    tree = read_tree(store, owner="acme", name="blog", version=loose)
    assert tree.packs == () and not tree.index
    with edge_runtime(tmp_path / "store", ttl=0) as edge:
        edge.ops()
        for path in sorted(loose_files):
            reply = edge.get(url_of(path), host=HOST)
            assert (reply.status, reply.body) == (200, loose_files[path]), path
        reads = [op for op in edge.ops() if not op.startswith("get hosts/")]
        assert reads == [
            f"get sites/acme/blog/versions/{loose}.json",
            *(f"get {blob_key('acme', 'blog', tree.files[p].hash)}" for p in sorted(loose_files)),
        ]

        mixed_files = {**site_files("two"), "empty.txt": b""}
        mixed = publish_files(store, mixed_files, objects=objects)
        mixed_tree = read_tree(store, owner="acme", name="blog", version=mixed)
        logo = mixed_tree.files["static/logo.svg"].hash  # the same bytes in both versions
        assert mixed_tree.locate(logo) is None
        assert set(mixed_tree.index) == mixed_tree.hashes() - {logo}
        assert mixed_tree.locate(mixed_tree.files["empty.txt"].hash) is not None
        edge.sync()
        edge.ops()
        for path in sorted(mixed_files):
            reply = edge.get(url_of(path), host=HOST)
            assert (reply.status, reply.body) == (200, mixed_files[path]), path
            assert reply.header("x-render-version") == mixed
        reads = [op for op in edge.ops() if not op.startswith("get hosts/")]
        assert reads == [
            f"get sites/acme/blog/versions/{mixed}.json",
            *(blob_read(store, mixed, p) for p in sorted(mixed_files) if p != "empty.txt"),
        ]  # the empty file's bytes are known without a read
        assert f"get {blob_key('acme', 'blog', logo)}" in reads


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
                assert (reply.status, reply.body) == (200, by_version[version][path]), path
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
