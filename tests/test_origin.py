"""``render origin`` as a real server process on loopback: live versions, and stale pages rendered on request.

Each test writes a host, publishes it through the whole pipeline, starts
``python -m render origin`` on a free port of 127.0.0.1 and stops it at the end.
Waits are polls with generous deadlines; nothing asserts on speed (``bench/``).
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from s3server import moto_url, new_bucket, s3_env
from sitekit import Host, SiteSpec, html, make_host

from render.build.objects import Objects
from render.check.lhrunner import process_tree
from render.origin.app import from_loopback
from render.publish.gc import gc
from render.publish.manifest import pack_key
from render.publish.store import open_store
from render.publish.versions import read_tree

__all__ = ["moto_url", "s3_env"]  # fixtures used by name below

DEADLINE = 60.0  # seconds: only ever reached when something is wrong
SITE = "acme/blog"
HOST = "example.com"
IMMUTABLE = "public, max-age=31536000, immutable"

POST = html(
    "<article>{{ row.body }}</article>"
    "{% for i in range(row.slow) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
    "{% if row.body == 'boom' %}{{ 1 // row.slow }}{% endif %}",
    title="{{ row.title }}",
)
INDEX = html(
    '<ul>{% for r in rows %}<li><a href="/posts/{{ r.slug }}/">{{ r.title }}</a></li>{% endfor %}</ul>'
)


def _spec() -> SiteSpec:
    return SiteSpec(
        sql=[
            "create table posts (id integer primary key, slug text, title text, body text,"
            " slow int default 0, weight int default 0)",
            *(
                f"insert into posts (slug, title, body) values ('p{i}', 'Title {i}', 'Body {i}')"
                for i in range(1, 6)
            ),
        ],
        routes=[
            {
                "path": "/",
                "template": "index.html",
                "query": "select slug, title from posts order by id",
            },
            {
                "path": "/posts/{slug}/",
                "template": "post.html",
                # ``weight`` makes planning the route again slow (a count, within query_seconds)
                "query": "select p.*, (with recursive c(x) as (select 1 union all select x + 1"
                " from c where x < p.weight) select count(*) from c) as counted from posts p",
            },
        ],
        templates={"index.html": INDEX, "post.html": POST},
        static={
            "big.txt": "0123456789" * 1000,
            "app.css": "body{}",
            "app.css.gz": b"gzipped bytes",
        },
    )


def _host(
    tmp_path: Path,
    *,
    max_wait_ms: int = 20000,
    max_pending: int = 64,
    folder: str = "host",
    store: str = "",
    server: str = "granian",
) -> Host:
    return make_host(
        tmp_path,
        folder=folder,
        sites={SITE: _spec()},
        limits={"template_cpu_seconds": 30},
        extra_toml=(
            f"[origin]\nmax_wait_ms = {max_wait_ms}\nmax_pending = {max_pending}\n"
            f'server = "{server}"\n'
            "refresh_seconds = 0.1\n[mirror]\nenabled = false\n" + store
        ),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Origin:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    def get(
        self,
        path: str,
        *,
        host: str = HOST,
        method: str = "GET",
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        reply = conn.getresponse()
        reply.body = reply.read()  # type: ignore[attr-defined]
        conn.close()
        return reply

    def lines(self, word: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if word in line]


@contextmanager
def origin(host: Host, *, workers: int = 1) -> Iterator[Origin]:
    port = _free_port()
    log = host.root / f"origin-{port}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "render",
                "origin",
                "--config",
                str(host.config_path),
                "--bind",
                f"127.0.0.1:{port}",
                "--no-access-log",
                "--workers",
                str(workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    running = Origin(proc, port, log)
    try:
        give_up = time.monotonic() + DEADLINE
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < give_up, log.read_text()
                time.sleep(0.05)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=DEADLINE)


def _until(check: object, what: str) -> None:
    give_up = time.monotonic() + DEADLINE
    while not check():  # type: ignore[operator]
        assert time.monotonic() < give_up, what
        time.sleep(0.05)


def _sql(host: Host, *statements: str) -> None:
    db = sqlite3.connect(host.site_dir(SITE) / "site.db")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def _fresh_build(tmp_path: Path, host: Host) -> dict[str, bytes]:
    """Every file of a build from scratch of ``host``'s database as it is now."""
    other = make_host(
        tmp_path,
        folder=f"fresh-{time.monotonic_ns()}",
        sites={SITE: _spec()},
        limits={"template_cpu_seconds": 30},
    )
    shutil.copy(host.site_dir(SITE) / "site.db", other.site_dir(SITE) / "site.db")
    build = other.build(SITE)
    objects = Objects(build.objects)
    return {path: objects.read(entry.hash) for path, entry in build.files.items()}


# --- serving the live version ------------------------------------------------------


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_live_version_by_host_etag_head_range_and_root_reread(tmp_path: Path, server: str) -> None:
    host = _host(tmp_path, server=server)
    first = host.run(SITE)
    assert first.version
    with origin(host) as o:
        page = o.get("/posts/p1/")
        assert page.status == 200, o.log.read_text()[-3000:]  # the origin says why
        assert b"Body 1" in page.body  # type: ignore[attr-defined]
        assert page.getheader("X-Render-Version") == first.version
        assert page.getheader("Cache-Control") == "public, max-age=60"
        assert page.getheader("X-Content-Type-Options") == "nosniff"
        etag = page.getheader("ETag")
        assert etag and etag.startswith('"') and len(etag) == 66
        assert o.get("/posts/p1/", headers={"If-None-Match": etag}).status == 304
        head = o.get("/posts/p1/", method="HEAD")
        assert head.status == 200 and head.body == b""  # type: ignore[attr-defined]
        assert head.getheader("Content-Length") == str(len(page.body))  # type: ignore[attr-defined]
        part = o.get("/big.txt", headers={"Range": "bytes=10-19"})
        assert part.status == 206 and part.body == b"0123456789"  # type: ignore[attr-defined]
        assert part.getheader("Content-Range") == "bytes 10-19/10000"
        assert o.get("/big.txt", headers={"Range": "bytes=-5"}).body == b"56789"  # type: ignore[attr-defined]
        assert o.get("/big.txt", headers={"Range": "bytes=20000-"}).status == 416
        zipped = o.get("/app.css", headers={"Accept-Encoding": "gzip, deflate"})
        assert zipped.body == b"gzipped bytes"  # type: ignore[attr-defined]
        assert zipped.getheader("Content-Encoding") == "gzip"
        assert zipped.getheader("Content-Type") == "text/css; charset=utf-8"
        assert zipped.getheader("Vary") == "Accept-Encoding"
        assert zipped.getheader("Cache-Control") == "public, max-age=86400"
        plain = o.get("/app.css")
        assert plain.body == b"body{}" and plain.getheader("Content-Encoding") is None  # type: ignore[attr-defined]
        assert o.get("/posts/p1").getheader("Location") == "/posts/p1/"
        assert o.get("/nope/").status == 404
        assert o.get("/posts/p1/", method="POST").status == 405
        # by the .localhost name too, as render serve does
        assert o.get("/posts/p1/", host="blog.acme.localhost").body == page.body  # type: ignore[attr-defined]
        # a publish shows without a restart (root.json re-read)
        (host.site_dir(SITE) / "static" / "new.txt").write_text("new file")
        second = host.run(SITE)
        assert second.version != first.version
        _until(lambda: o.get("/new.txt").status == 200, "the new version is served")
        assert o.get("/new.txt").getheader("X-Render-Version") == second.version
        o.proc.send_signal(signal.SIGTERM)
        assert o.proc.wait(timeout=DEADLINE) == 0


def test_the_live_version_and_fresh_pages_with_an_s3_store(tmp_path: Path, moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    host = _host(
        tmp_path,
        store=f'[store]\nkind = "s3"\nbucket = "{bucket}"\nendpoint_url = "{moto_url}"\n'
        'region = "us-east-1"\n',
    )
    first = host.run(SITE)
    assert first.version
    store = open_store(host.config)
    with origin(host) as o:  # the test's fake credentials are in the environment it inherits
        page = o.get("/posts/p1/")
        assert page.status == 200, o.log.read_text()[-3000:]
        assert page.getheader("X-Render-Version") == first.version
        digest = page.getheader("ETag").strip('"')
        owner, name = SITE.split("/")
        tree = read_tree(store, owner=owner, name=name, version=first.version)
        pack, offset = tree.locate(digest) or ("", 0)  # the bucket's pack holds the same bytes
        stored = store.get_range(pack_key(owner, name, pack), offset, tree.sizes[digest])
        assert stored == page.body  # type: ignore[attr-defined]
        assert o.get("/big.txt", headers={"Range": "bytes=10-19"}).body == b"0123456789"  # type: ignore[attr-defined]
        _sql(host, "update posts set body = 'From the bucket' where slug = 'p1'")
        fresh = o.get("/posts/p1/")
        assert fresh.getheader("X-Render-Page") == "fresh"
        assert b"From the bucket" in fresh.body  # type: ignore[attr-defined]
        second = host.run(SITE)
        assert second.rendered == 0 and second.version != first.version
        _until(
            lambda: o.get("/").getheader("X-Render-Version") == second.version, "the new version"
        )
        assert o.get("/posts/p1/").body == fresh.body  # type: ignore[attr-defined]
        assert o.get("/posts/p1/").getheader("X-Render-Page") is None  # published now


def test_versioned_paths_answer_every_kept_version_as_render_serve_does(tmp_path: Path) -> None:
    host = _host(tmp_path)
    first = host.run(SITE)
    (host.site_dir(SITE) / "static" / "new.txt").write_text("new file")
    second = host.run(SITE)
    v1, v2 = first.version, second.version
    assert v1 and v2 and v1 != v2
    with origin(host) as o:
        live = o.get("/_render/live.json")
        assert live.status == 200 and live.getheader("Cache-Control") == "no-cache"
        doc = json.loads(live.body)  # type: ignore[attr-defined]
        assert (doc["version"], doc["parent"]) == (v2, v1)
        worker = o.get("/sw.js")
        assert worker.status == 200 and worker.getheader("Cache-Control") == "no-cache"
        assert worker.getheader("X-Render-Version") == v2
        # an old kept version's files, immutable, under its own prefix
        old = o.get(f"/_v/{v1}/posts/p1/")
        assert old.status == 200 and b"Body 1" in old.body  # type: ignore[attr-defined]
        assert old.getheader("Cache-Control") == IMMUTABLE
        assert old.getheader("X-Render-Version") == v1
        assert o.get(f"/_v/{v1}/new.txt").status == 404
        assert o.get(f"/_v/{v2}/new.txt").body == b"new file"  # type: ignore[attr-defined]
        assert o.get(f"/_v/{v1}/posts/p1").getheader("Location") == f"/_v/{v1}/posts/p1/"
        head = o.get(f"/_v/{v1}/posts/p1/", method="HEAD")
        assert head.status == 200 and head.body == b""  # type: ignore[attr-defined]
        tree = o.get(f"/_v/{v2}/_render/tree.json")
        assert tree.getheader("Cache-Control") == IMMUTABLE
        assert "new.txt" in json.loads(tree.body)["files"]  # type: ignore[attr-defined]
        delta = json.loads(o.get(f"/_v/{v2}/_render/delta/{v1}.json").body)  # type: ignore[attr-defined]
        assert (delta["version"], delta["from"], list(delta["added"])) == (v2, v1, ["new.txt"])
        # a fresh page is the live public path's; /_v/<live>/ keeps the published bytes
        _sql(host, "update posts set body = 'Edited' where slug = 'p1'")
        _until(lambda: b"Edited" in o.get("/posts/p1/").body, "the fresh page")  # type: ignore[attr-defined]
        pinned = o.get(f"/_v/{v2}/posts/p1/")
        assert b"Body 1" in pinned.body and pinned.getheader("X-Render-Page") is None  # type: ignore[attr-defined]
        # a publish: live.json names it; a version gc collects answers 404
        v3 = host.run(SITE).version
        assert v3 and v3 != v2
        _until(
            lambda: json.loads(o.get("/_render/live.json").body)["version"] == v3,  # type: ignore[attr-defined]
            "live.json names the new version",
        )
        assert b"Edited" in o.get(f"/_v/{v3}/posts/p1/").body  # type: ignore[attr-defined]
        gc(open_store(host.config), owner="acme", name="blog", keep=1, grace_hours=0)
        _until(lambda: o.get(f"/_v/{v1}/posts/p1/").status == 404, "v1 is collected")
        gone = o.get(f"/_v/{v1}/posts/p1/")
        assert b"not kept" in gone.body and gone.getheader("Cache-Control") == "no-cache"  # type: ignore[attr-defined]
        assert o.get(f"/_v/{v3}/posts/p1/").status == 200


# --- fresh pages ------------------------------------------------------------------


def test_stale_new_and_deleted_pages_are_a_fresh_builds_bytes(tmp_path: Path) -> None:
    host = _host(tmp_path)
    host.run(SITE)
    with origin(host) as o:
        before = o.get("/posts/p2/").body  # type: ignore[attr-defined]
        _sql(
            host,
            "update posts set body = 'Edited body' where slug = 'p1'",
            "update posts set title = 'New title' where slug = 'p2'",
            "insert into posts (slug, title, body) values ('p9', 'Nine', 'Body nine')",
            "delete from posts where slug = 'p3'",
        )
        fresh = _fresh_build(tmp_path, host)
        for url, path in [
            ("/posts/p1/", "posts/p1/index.html"),
            ("/posts/p2/", "posts/p2/index.html"),
            ("/", "index.html"),
            ("/posts/p9/", "posts/p9/index.html"),
        ]:
            reply = o.get(url)
            assert reply.status == 200, url
            assert reply.getheader("X-Render-Page") == "fresh", url
            assert reply.body == fresh[path], url  # type: ignore[attr-defined]
        assert o.get("/posts/p2/").body != before  # type: ignore[attr-defined]
        gone = o.get("/posts/p3/")
        assert gone.status == 404
        # pages whose data did not change are the published ones
        assert o.get("/posts/p4/").getheader("X-Render-Page") is None
        assert o.get("/posts/p4/").body == fresh["posts/p4/index.html"]  # type: ignore[attr-defined]
        assert len(o.lines("origin.rendered")) == 4
        # the next build renders none of them again, and publishes them
        report = host.run(SITE)
        assert report.rendered == 0, report
        assert report.build is not None
        objects = Objects(report.build.objects)
        built = {p: objects.read(e.hash) for p, e in report.build.files.items()}
        assert {p: built[p] for p in fresh} == fresh  # (the pipeline adds robots.txt and sitemaps)
        _until(
            lambda: o.get("/").getheader("X-Render-Version") == report.version, "the new version"
        )
        assert o.get("/posts/p1/").body == fresh["posts/p1/index.html"]  # type: ignore[attr-defined]
        assert o.get("/posts/p3/").status == 404


def test_pages_of_unchanged_routes_do_not_wait_while_a_change_is_read(tmp_path: Path) -> None:
    host = _host(tmp_path)
    host.run(SITE)
    with origin(host) as o:
        published = o.get("/").body  # type: ignore[attr-defined]
        assert not o.lines("origin.analysed")
        # the post route reads ``weight``: planning it again takes a while; the index does not
        _sql(host, "update posts set body = 'Heavy', weight = 6000000 where slug = 'p1'")
        index = o.get("/")
        assert index.body == published  # type: ignore[attr-defined]
        assert index.getheader("X-Render-Page") is None
        assert not o.lines("origin.analysed"), "the index waited for the post route's analysis"
        post = o.get("/posts/p1/")
        assert post.getheader("X-Render-Page") == "fresh"
        assert b"Heavy" in post.body  # type: ignore[attr-defined]
        assert len(o.lines("origin.analysed")) == 1


def _at_once(o: Origin, path: str, count: int) -> list[bytes]:
    """The bodies of ``count`` requests for ``path`` made at the same time."""
    bodies: list[bytes] = []
    lock = threading.Lock()

    def fetch() -> None:
        reply = o.get(path)
        with lock:
            bodies.append(reply.body)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=fetch) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    return bodies


def test_concurrent_requests_share_one_render(tmp_path: Path) -> None:
    host = _host(tmp_path)
    host.run(SITE)
    with origin(host) as o:
        o.get("/")  # the database's state is known
        _sql(host, "update posts set body = 'Shared', slow = 3000 where slug = 'p1'")
        bodies = _at_once(o, "/posts/p1/", 100)
        assert len(bodies) == 100
        assert len(set(bodies)) == 1 and b"Shared" in bodies[0]
        assert len(o.lines("origin.rendered")) == 1


def test_processes_of_one_origin_share_one_render_of_a_page(tmp_path: Path) -> None:
    host = _host(tmp_path)
    host.run(SITE)
    with origin(host, workers=2) as o:
        _sql(host, "update posts set body = 'Shared', slow = 1500 where slug = 'p1'")
        bodies = _at_once(o, "/posts/p1/", 100)
        assert len(bodies) == 100
        assert len(set(bodies)) == 1 and b"Shared" in bodies[0]
        rendered = [line for line in o.lines("origin.rendered") if "elsewhere" not in line]
        assert len(rendered) == 1, rendered
    left = list((host.state_dir / "origin").rglob("p*"))
    assert not left, f"stopped processes left their scratch folders: {left}"


def test_slow_render_serves_the_published_page_then_the_fresh_one(tmp_path: Path) -> None:
    host = _host(tmp_path, max_wait_ms=50)
    host.run(SITE)
    with origin(host) as o:
        published = o.get("/posts/p1/").body  # type: ignore[attr-defined]
        _sql(host, "update posts set body = 'Slow body', slow = 3000 where slug = 'p1'")
        first = o.get("/posts/p1/")
        assert first.body == published  # type: ignore[attr-defined]
        assert first.getheader("Warning") == '110 - "Response is Stale"'
        assert first.getheader("X-Render-Page") == "published; timeout"
        _until(lambda: b"Slow body" in o.get("/posts/p1/").body, "the render finishes")  # type: ignore[attr-defined]
        assert len(o.lines("origin.rendered")) == 1


def test_pending_renders_are_bounded_per_site(tmp_path: Path) -> None:
    host = _host(tmp_path, max_wait_ms=0, max_pending=1)
    host.run(SITE)
    with origin(host) as o:
        o.get("/")
        _sql(host, "update posts set slow = 30000, body = 'b' || id")  # seconds of rendering each
        assert o.get("/posts/p1/").getheader("X-Render-Page") == "published; timeout"
        # p1 was asked for while the change was being looked at: its render is queued then
        _until(
            lambda: [x for x in o.lines("origin.analysed") if "stale=5 " in x],
            "the stale pages are known",
        )
        busy = o.get("/posts/p2/")
        assert busy.status == 200 and busy.getheader("X-Render-Page") == "published; busy"


def test_a_page_asked_for_during_an_older_states_analysis_is_rendered(tmp_path: Path) -> None:
    host = _host(tmp_path, max_wait_ms=0)
    host.run(SITE)
    with origin(host) as o:
        o.get("/")
        # state 1: p5's row changes a column the post route reads (slow to plan again)
        _sql(host, "update posts set weight = 6000000 where slug = 'p5'")
        _until(
            lambda: o.get("/").getheader("X-Render-Page") is None,
            "state 1's analysis let the index through: it is planning the post route",
        )
        # state 2, while state 1 is still being planned: nobody waits for p1's render
        _sql(host, "update posts set body = 'Asked early' where slug = 'p1'")
        assert o.get("/posts/p1/").getheader("X-Render-Page") == "published; timeout"
        _until(
            lambda: [x for x in o.lines("origin.rendered") if "posts/p1/index.html" in x],
            "p1, asked for under state 2, is rendered once state 2 is known",
        )
        assert b"Asked early" in o.get("/posts/p1/").body  # type: ignore[attr-defined]


def test_failing_render_serves_the_last_good_page(tmp_path: Path) -> None:
    host = _host(tmp_path)
    host.run(SITE)
    with origin(host) as o:
        good = o.get("/posts/p1/").body  # type: ignore[attr-defined]
        _sql(host, "update posts set body = 'boom' where slug = 'p1'")
        reply = o.get("/posts/p1/")
        assert reply.status == 200 and reply.body == good  # type: ignore[attr-defined]
        assert reply.getheader("X-Render-Page") == "published; failed"
        assert reply.getheader("Warning") == '110 - "Response is Stale"'
        (failed,) = o.lines("origin.render_failed")
        assert (
            "posts/p1/index.html" in failed
            and "templates/post.html, line 11: ZeroDivisionError" in failed
        )


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_sigterm_during_a_render_ends_cleanly(tmp_path: Path, server: str) -> None:
    host = _host(tmp_path, max_wait_ms=50, server=server)
    host.run(SITE)
    with origin(host) as o:
        o.get("/")
        _sql(host, "update posts set body = 'Slow', slow = 3000 where slug = 'p1'")
        assert o.get("/posts/p1/").getheader("X-Render-Page") == "published; timeout"
        # every process under the server (its workers, the render processes), seen while it
        # lives (after it exits they are re-parented); render processes start once the change
        # is found, a moment after the request under load
        workers: list[int] = []

        def started() -> bool:
            workers[:] = process_tree(o.proc.pid)[1:]  # [0] is the server itself
            return bool(workers) and bool(o.lines("origin.analysed"))

        _until(started, "a render is under way in a render process")
        o.proc.send_signal(signal.SIGTERM)  # the render is under way
        assert o.proc.wait(timeout=DEADLINE) == 0
    assert "Traceback" not in o.log.read_text()
    # they end with it (a moment after: they see their pipe to it close)
    _until(lambda: not [pid for pid in workers if _alive(pid)], "the render processes end")


def _alive(pid: int) -> bool:
    """Still running (a zombie counts as gone: it has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_byte_cache_is_bounded() -> None:
    from render.origin.cache import BytesCache

    cache = BytesCache(800)
    for n in range(20):
        cache.put(f"k{n}", bytes(100))
    assert cache.size <= 800 and len(cache) == 8
    assert cache.get("k0") is None and cache.get("k19") == bytes(100)
    cache.put("huge", bytes(101))  # over an eighth of the bound: never kept
    assert cache.get("huge") is None


# --- the operator's dashboard ---------------------------------------------------


def test_the_dashboard_shows_to_a_loopback_client_by_a_loopback_name_only(tmp_path: Path) -> None:
    host = _host(tmp_path)
    assert host.run(SITE).version
    with origin(host) as o:
        page = o.get("/_dashboard/", host="localhost")
        assert page.status == 200, o.log.read_text()[-3000:]  # the origin says why
        assert page.getheader("Cache-Control") == "no-cache"
        assert b"acme/blog" in page.body  # type: ignore[attr-defined]
        assert o.get("/_dashboard", host="127.0.0.1").getheader("Location") == "/_dashboard/"
        # under a site's own host name the path is the site's (no such page)
        assert o.get("/_dashboard/", host=HOST).status == 404
    # a client that is not on this machine never sees it, whatever Host it sends
    assert from_loopback({"client": ("127.0.0.1", 50000)})
    assert from_loopback({"client": ("::1", 50000)})
    assert not from_loopback({"client": ("203.0.113.7", 50000)})
    assert not from_loopback({"client": None})
