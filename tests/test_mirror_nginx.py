"""The mirror served by a real nginx with ovh/nginx/*.conf: pretty URLs, 404s, routing, switches,
shared folders."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from mirrorkit import HOST, Nginx, Reply, fetch, publish_files, site_files
from test_routing import CASES

from render.build.tree import sha256
from render.mirror.sync import SyncOutcome, sync, sync_site
from render.publish.history import rollback
from render.publish.manifest import blob_key
from render.publish.store import LocalStore
from render.serve.routing import route_request

pytestmark = pytest.mark.nginx


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path / "nginx", tmp_path / "mirror").start()
    try:
        yield server
    finally:
        server.stop()


def _publish(
    store: LocalStore, tmp_path: Path, files: dict[str, bytes], *, loose: bool = False
) -> str:
    return publish_files(
        store, files, objects=tmp_path / "objects", pack_limit=None if loose else 16 << 20
    )


def _publish_and_serve(
    store: LocalStore, nginx: Nginx, tmp_path: Path, files: dict[str, bytes]
) -> str:
    """Publish the site's first version and sync it: the first sync writes the site's host into
    hosts.map, and nginx reloads to read it."""
    version = _publish(store, tmp_path, files)
    report = sync(store, nginx.mirror_root)
    assert report.map_changed and not report.failed
    nginx.reload()
    return version


def _home(nginx: Nginx) -> tuple[int, str, bytes]:
    """The mirror's answer for "/": status, the version that served it, body."""
    page = fetch(nginx.mirror_port, "/")
    return page.status, page.header("x-render-version"), page.body


def _whole_version(reply: Reply, sites: Mapping[str, Mapping[str, bytes]], path: str) -> str | None:
    """The version that served ``reply`` when it is a 200 with exactly that version's ``path``."""
    version = reply.header("x-render-version")
    if reply.status == 200 and version in sites and reply.body == sites[version][path]:
        return version
    return None


def test_serves_the_live_release_with_pretty_urls_404s_sitemap_and_robots(
    store: LocalStore, nginx: Nginx, tmp_path: Path
) -> None:
    files = site_files("one")
    version = _publish_and_serve(store, nginx, tmp_path, files)
    port = nginx.mirror_port

    home = fetch(port, "/")
    assert (home.status, home.body) == (200, files["index.html"])
    assert home.header("content-type") == "text/html; charset=utf-8"
    assert home.header("cache-control") == "public, max-age=60"
    assert home.header("x-render-version") == version
    assert fetch(port, "/posts/hello/").body == files["posts/hello/index.html"]
    folder = fetch(port, "/posts/hello?x=1")
    assert (folder.status, folder.header("location")) == (301, "/posts/hello/?x=1")
    missing = fetch(port, "/posts/nope/")
    assert (missing.status, missing.body) == (404, files["404.html"])
    assert fetch(port, "/nope.css").body == files["404.html"]
    robots = fetch(port, "/robots.txt")
    assert (robots.status, robots.body) == (200, files["robots.txt"])
    assert robots.header("content-type").startswith("text/plain")
    sitemap = fetch(port, "/sitemap.xml")
    assert (sitemap.status, sitemap.body) == (200, files["sitemap.xml"])
    assert "xml" in sitemap.header("content-type")
    css = fetch(port, "/assets/common.css")
    assert (css.body, css.header("content-type")) == (
        files["assets/common.css"],
        "text/css; charset=utf-8",
    )
    assert css.header("cache-control") == "public, max-age=86400"
    zipped = fetch(port, "/", headers={"Accept-Encoding": "gzip"})
    assert zipped.header("content-encoding") == "gzip" and len(zipped.body) < len(
        files["index.html"]
    )
    assert fetch(port, "/", host="unknown.test").status == 404


def test_crawlers_and_logged_out_visitors_get_the_mirror_through_the_front_proxy(
    store: LocalStore, nginx: Nginx, tmp_path: Path
) -> None:
    files = site_files("one")
    _publish_and_serve(store, nginx, tmp_path, files)

    for agent, cookies, method, _target in CASES:
        headers = {"User-Agent": agent} if agent is not None else {}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        reply = fetch(nginx.route_port, "/", method=method, headers=headers)
        expected = route_request(user_agent=agent, cookies=cookies, method=method)
        went = {"render_mirror": "mirror", "render_app": "app"}[reply.header("x-render-route")]
        assert went == expected.value, (agent, cookies, method)
        if expected.value == "app":
            assert reply.body == (b"app\n" if method != "HEAD" else b"")
        elif method == "GET":
            assert (reply.status, reply.body) == (200, files["index.html"])  # crawler == logged out


def test_switching_100_times_under_load_serves_whole_versions_and_no_errors(
    store: LocalStore, nginx: Nginx, tmp_path: Path
) -> None:
    one, two = site_files("one"), site_files("two")
    v1 = _publish_and_serve(store, nginx, tmp_path, one)
    v2 = _publish(store, tmp_path, two)
    sync(store, nginx.mirror_root)
    sites = {v1: one, v2: two}
    tags = {v1: "one", v2: "two"}
    # A switch is counted as started before sync_site begins (it may move the links at any
    # moment after that) and as done only when sync_site returns. A page and the assets it
    # names must match when at most one switch overlapped the visit: one started after the
    # last switch done before the page was asked for. (Counting a switch only once sync_site
    # returned missed the one still in flight while the asset was fetched: a visit that two
    # switches overlapped was then held to the one-switch promise.)
    started = done_switches = 0
    done = threading.Event()
    problems: list[str] = []
    counts: dict[str, int] = {v1: 0, v2: 0}
    pairs_checked = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", nginx.mirror_port, timeout=10)
        try:
            for _ in range(20_000):
                if done.is_set() or time.monotonic() > deadline:
                    return
                with lock:
                    before = done_switches
                page = fetch(nginx.mirror_port, "/", conn=conn)
                version = _whole_version(page, sites, "index.html")
                if version is None:
                    served = page.header("x-render-version")
                    problems.append(f"/ -> {page.status} {served!r} {page.body[:80]!r}")
                    continue
                asset = f"assets/app-{tags[version]}.css"
                assert f'href="/{asset}"'.encode() in page.body
                css = fetch(nginx.mirror_port, f"/{asset}", conn=conn)
                with lock:
                    overlapping = started - before  # switches that may have run during the visit
                common = fetch(nginx.mirror_port, "/assets/common.css", conn=conn)
                with lock:
                    counts[version] += 1
                    if overlapping <= 1:  # one switch in between: the page's assets stay served
                        pairs_checked[0] += 1
                        if (css.status, css.body) != (200, sites[version][asset]):
                            problems.append(
                                f"{asset} after page {version} -> {css.status}"
                                f" ({overlapping} switch overlapped)"
                            )
                if _whole_version(common, sites, "assets/common.css") is None:
                    served = common.header("x-render-version")
                    problems.append(f"common.css -> {common.status} {served!r} {common.body!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(100):
            target = v1 if i % 2 == 0 else v2
            rollback(store, owner="acme", name="blog", to=target)
            with lock:
                started += 1
            result = sync_site(store, nginx.mirror_root, "acme", "blog")
            with lock:
                done_switches += 1
            assert (result.outcome, result.fetched) == (SyncOutcome.switched, 0), result
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    assert started == done_switches == 100
    assert problems == []
    assert counts[v1] > 0 and counts[v2] > 0, counts
    assert pairs_checked[0] > 0
    errors = [
        line for line in nginx.error_log().splitlines() if "[error]" in line or "[crit]" in line
    ]
    assert errors == []


_SLOW_SYNC = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from render.mirror.sync import sync
    from render.publish.store import LocalStore

    class Slow:  # a slow link to the store, so that the kill lands half way
        def __init__(self, inner):
            self.inner, self.description = inner, inner.description
        def get(self, key):
            return self.inner.get(key)
        def sites(self):
            return self.inner.sites()
        def download(self, key, dest):
            time.sleep(0.05)
            return self.inner.download(key, dest)

    sync(Slow(LocalStore(Path(sys.argv[1]))), Path(sys.argv[2]), concurrency=2)
    """
)


def test_a_sync_killed_half_way_leaves_the_old_release_served(
    store: LocalStore, nginx: Nginx, tmp_path: Path
) -> None:
    old = site_files("one")
    v1 = _publish_and_serve(store, nginx, tmp_path, old)
    posts = {f"posts/p{i}/index.html": f"<h1>post {i}</h1>".encode() for i in range(60)}
    new = {**site_files("two"), **posts}
    v2 = _publish(store, tmp_path, new, loose=True)  # one slow download per blob
    script = tmp_path / "slow_sync.py"
    script.write_text(_SLOW_SYNC)
    incoming = nginx.mirror_root / "releases/acme/blog/.incoming"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store.root), str(nginx.mirror_root)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        deadline = time.monotonic() + 30
        while not (
            incoming.is_dir()
            and len([p for p in incoming.iterdir() if not p.name.startswith(".")]) >= 6
        ):
            assert proc.poll() is None, "the sync ended before it could be killed"
            assert time.monotonic() < deadline, "the sync did not start fetching"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert (nginx.mirror_root / "releases/acme/blog" / f".partial-{v2}").is_dir()  # half way
    assert not (nginx.mirror_root / "releases/acme/blog" / v2).exists()
    assert _home(nginx) == (200, v1, old["index.html"])
    assert fetch(nginx.mirror_port, "/posts/p1/").status == 404

    (site,) = sync(store, nginx.mirror_root).sites  # the next sync finishes the job
    new_blobs = {sha256(b) for b in new.values()} - {sha256(b) for b in old.values()}
    assert site.outcome is SyncOutcome.switched
    assert site.fetched <= len(new_blobs) - 6  # the blobs checked before the kill are kept
    assert _home(nginx) == (200, v2, new["index.html"])
    assert fetch(nginx.mirror_port, "/posts/p1/").body == posts["posts/p1/index.html"]


def test_a_blob_with_wrong_bytes_is_refused_and_the_old_release_stays_served(
    store: LocalStore, nginx: Nginx, tmp_path: Path
) -> None:
    old = site_files("one")
    v1 = _publish_and_serve(store, nginx, tmp_path, old)
    new = site_files("two")
    _publish(store, tmp_path, new, loose=True)  # packs: see test_mirror.py
    key = blob_key("acme", "blog", sha256(new["index.html"]))
    (store.root / key).chmod(0o644)
    (store.root / key).write_bytes(b"<h1>tampered</h1>")

    (site,) = sync(store, nginx.mirror_root).sites

    assert site.outcome is SyncOutcome.refused
    assert site.error is not None and site.error.startswith(
        f"{key} (index.html) does not match its hash"
    )
    assert _home(nginx) == (200, v1, old["index.html"])
    assert b"tampered" not in fetch(nginx.mirror_port, "/").body
    assert re.search(rb"version one", fetch(nginx.mirror_port, "/").body)
    assert HOST in (nginx.mirror_root / "hosts.map").read_text()


IMMUTABLE = "public, max-age=31536000, immutable"


def test_kept_releases_answer_under_v_and_a_pruned_one_is_a_plain_404(
    store: LocalStore, nginx: Nginx, tmp_path: Path
) -> None:
    one, two, three = site_files("one"), site_files("two"), site_files("three")
    v1 = _publish_and_serve(store, nginx, tmp_path, one)
    v2 = _publish(store, tmp_path, two)
    sync(store, nginx.mirror_root, keep=2)
    port = nginx.mirror_port

    live = fetch(port, "/_render/live.json")
    assert live.status == 200 and live.header("cache-control") == "no-cache"
    doc = json.loads(live.body)
    assert (doc["version"], doc["parent"], len(doc["tree"])) == (v2, v1, 64)
    for version, files in ((v1, one), (v2, two)):
        page = fetch(port, f"/_v/{version}/posts/hello/")
        assert (page.status, page.body) == (200, files["posts/hello/index.html"])
        assert page.header("cache-control") == IMMUTABLE
        assert page.header("x-render-version") == version
        home = fetch(port, f"/_v/{version}/")
        assert (home.status, home.body) == (200, files["index.html"])
        css = fetch(port, f"/_v/{version}/assets/common.css")
        assert (css.body, css.header("cache-control")) == (files["assets/common.css"], IMMUTABLE)
        folder = fetch(port, f"/_v/{version}/posts/hello?x=1")
        assert (folder.status, folder.header("location")) == (
            301,
            f"/_v/{version}/posts/hello/?x=1",
        )
        missing = fetch(port, f"/_v/{version}/posts/nope/")
        assert (missing.status, missing.body) == (404, files["404.html"])
        assert missing.header("x-render-version") == version
    # the two releases share their unchanged folders: symlinks into the site's pool
    releases = nginx.mirror_root / "releases/acme/blog"
    for version in (v1, v2):
        assert os.readlink(releases / version / "static").startswith("../.d/")
        assert os.readlink(releases / version / "posts").startswith("../.d/")
        assert os.readlink(releases / version / "posts" / "hello").startswith("../")
    assert (releases / v1 / "static").stat().st_ino == (releases / v2 / "static").stat().st_ino
    for url in (f"/_v/{v1}/static/logo.svg", f"/_v/{v2}/static/logo.svg", "/static/logo.svg"):
        logo = fetch(port, url)
        assert (logo.status, logo.body) == (200, one["static/logo.svg"]), url
    # a file only the older release has is there under its name, not the live one's
    assert fetch(port, f"/_v/{v1}/assets/app-one.css").status == 200
    assert fetch(port, f"/_v/{v2}/assets/app-one.css").status == 404

    tree = fetch(port, f"/_v/{v1}/_render/tree.json")
    assert tree.header("cache-control") == IMMUTABLE
    assert sorted(json.loads(tree.body)["files"]) == sorted(one)
    delta = json.loads(fetch(port, f"/_v/{v2}/_render/delta/{v1}.json").body)
    assert (delta["version"], delta["from"]) == (v2, v1)
    assert "assets/app-two.css" in delta["added"] and "assets/app-one.css" in delta["removed"]
    assert "static/logo.svg" not in delta["changed"]

    # a third version: keep=2 prunes the first release, which is then a plain 404
    v3 = _publish(store, tmp_path, three)
    sync(store, nginx.mirror_root, keep=2)
    assert json.loads(fetch(port, "/_render/live.json").body)["version"] == v3
    for path in (
        "posts/hello/",
        "",
        "assets/common.css",
        "_render/tree.json",
        f"_render/delta/{v1}.json",
    ):
        gone = fetch(port, f"/_v/{v1}/{path}")
        assert (gone.status, gone.body) == (404, b"version not kept here\n"), path
        assert gone.header("x-render-version") == "" and gone.header("cache-control") == "no-cache"
    assert fetch(port, "/_v/not-a-version/").status == 404
    assert fetch(port, f"/_v/{v2}/posts/hello/").body == two["posts/hello/index.html"]
    assert fetch(port, "/").body == three["index.html"]
    assert fetch(port, "/posts/hello/").body == three["posts/hello/index.html"]
    assert fetch(port, "/static/logo.svg").body == three["static/logo.svg"]  # shared, kept
    assert fetch(port, "/sw.js").header("cache-control") == "no-cache"
    assert not [line for line in nginx.error_log().splitlines() if "[emerg]" in line]
