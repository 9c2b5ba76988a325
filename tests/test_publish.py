"""Publishing versions, forward deltas, the root switch, rollback, gc, serving the live version."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from faultproxy import FaultProxy
from s3server import admin_client, make_build, moto_url, new_bucket, s3_config, s3_env, site_files

from render.build.tree import sha256
from render.check.loopback import serve
from render.errors import ConflictError, PublishError
from render.publish.gc import gc
from render.publish.history import list_versions, rollback
from render.publish.manifest import Root, root_key, version_key
from render.publish.packs import StoredBlobs
from render.publish.store import LocalStore, S3Store, Store, StoredObject
from render.publish.versions import (
    DEFAULT_PACK_LIMIT,
    PublishOutcome,
    publish,
    read_root,
    read_tree,
)
from render.run.ledger import Ledger
from render.serve.live import LiveSites

__all__ = ["moto_url", "s3_env"]

logging.getLogger("werkzeug").setLevel(logging.ERROR)


@dataclass
class Target:
    store: Store
    proxy: FaultProxy | None  # in front of moto, counting requests


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "local":
        yield Target(LocalStore(tmp_path / "store"), None)
        return
    endpoint = request.getfixturevalue("moto_url")
    with FaultProxy(endpoint).running() as proxy:
        store = S3Store(s3_config(proxy.url, new_bucket(endpoint)))
        yield Target(store, proxy)
        store.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite") as led:
        yield led


@pytest.mark.parametrize("layout", ["packs", "loose"])
def test_first_publish_writes_blobs_tree_and_root_last(
    target: Target, ledger: Ledger, tmp_path: Path, layout: str
) -> None:
    build = make_build(tmp_path / "b1", site_files(3))
    limit = DEFAULT_PACK_LIMIT if layout == "packs" else None
    pub = publish(build, store=target.store, ledger=ledger, pack_limit=limit)
    assert pub.outcome is PublishOutcome.published
    assert pub.parent is None
    assert pub.uploaded_blobs == pub.files == 6
    root, _ = read_root(target.store, owner="acme", name="blog")
    assert root is not None
    assert (root.version, root.site, root.base_url, root.previous) == (
        pub.version,
        "acme/blog",
        "https://blog.example.com",
        None,
    )
    raw = target.store.get(version_key("acme", "blog", pub.version))
    assert raw is not None
    tree = json.loads(raw)
    assert tree["files"]["posts/p1/index.html"] == build.files["posts/p1/index.html"].to_json()
    if layout == "loose":
        assert set(tree) == {"version", "parent", "created", "files"}
        for path, entry in build.files.items():
            assert target.store.get(f"sites/acme/blog/blobs/{entry.hash}") == build.read(path)
    else:  # one pack of the six blobs, and the index that places each
        assert set(tree) == {"version", "parent", "created", "files", "packs", "index"}
        (pack,) = tree["packs"]
        body = target.store.get(f"sites/acme/blog/packs/{pack}.pack")
        assert body is not None and sha256(body) == pack
        for path, entry in build.files.items():
            _, at = tree["index"][entry.hash]
            assert body[at : at + entry.size] == build.read(path)
        assert target.store.list("sites/acme/blog/blobs/") == []
    if target.proxy is not None:  # the root is the version's last write; then the edge pointer
        writes = [e.path for e in target.proxy.entries() if e.method == "PUT"]
        assert writes[-1].endswith("/hosts/blog.example.com.json")
        assert writes[-2].endswith("/root.json") and writes[-3].endswith(
            f"/versions/{pub.version}.json"
        )
    assert ledger.live_version("acme", "blog") == pub.version
    (row,) = ledger.versions("acme", "blog")
    assert (row["files"], row["new_blobs"], row["live"]) == (6, 6, 1)


def test_republish_after_one_page_changed_costs_exactly_what_changed(
    target: Target, ledger: Ledger, tmp_path: Path
) -> None:
    first = publish(make_build(tmp_path / "b1", site_files(20)), store=target.store, ledger=ledger)
    changed = site_files(20) | {
        "posts/p7/index.html": b"<!doctype html><title>Post 7, edited</title>"
    }
    mark = target.proxy.mark() if target.proxy else 0
    pub = publish(make_build(tmp_path / "b2", changed), store=target.store, ledger=ledger)
    assert pub.outcome is PublishOutcome.published
    assert pub.parent == first.version and pub.version > first.version
    assert (pub.uploaded_blobs, pub.uploaded_bytes) == (1, len(changed["posts/p7/index.html"]))
    assert pub.diff.paths == ("posts/p7/index.html",)
    # two reads (root, live tree) + the changed blob's pack + the version tree + its delta + the root,
    # and the host claim read before the switch and pointed at the new version after it
    assert pub.requests == 8
    if target.proxy is not None:
        sent = [
            (e.method, e.path.partition("/sites/acme/blog/")[2] or e.path.split("/", 2)[2], e.query)
            for e in target.proxy.entries(mark)
        ]
        # the version's pack holds its one new blob: the same bytes, so the same name
        blob = pub_blob = f"packs/{sha256(changed['posts/p7/index.html'])}.pack"
        assert sent == [
            ("GET", "root.json", ""),
            ("GET", f"versions/{first.version}.json", ""),
            ("PUT", pub_blob, ""),
            ("PUT", f"versions/{pub.version}.json", ""),
            ("PUT", f"deltas/{pub.version}/{first.version}.json", ""),
            ("GET", "hosts/blog.example.com.json", ""),
            ("PUT", "root.json", ""),
            ("PUT", "hosts/blog.example.com.json", ""),
        ]
        assert blob
    assert ledger.live_version("acme", "blog") == pub.version


def test_publish_with_nothing_changed_makes_no_version_and_reads_only_the_root(
    target: Target, ledger: Ledger, tmp_path: Path
) -> None:
    first = publish(make_build(tmp_path / "b1", site_files(5)), store=target.store, ledger=ledger)
    mark = target.proxy.mark() if target.proxy else 0
    again = publish(make_build(tmp_path / "b2", site_files(5)), store=target.store, ledger=ledger)
    assert again.outcome is PublishOutcome.unchanged
    assert (again.version, again.uploaded_blobs, again.requests) == (first.version, 0, 1)
    if target.proxy is not None:
        assert [(e.method, e.path.rsplit("/", 1)[1]) for e in target.proxy.entries(mark)] == [
            ("GET", "root.json")
        ]
    assert [v.version for v in list_versions(target.store, owner="acme", name="blog")] == [
        first.version
    ]


def test_blobs_are_immutable_and_the_root_is_never_cached(moto_url: str, tmp_path: Path) -> None:
    bucket = new_bucket(moto_url)
    store = S3Store(s3_config(moto_url, bucket))
    build = make_build(tmp_path / "b", site_files(1))
    pub = publish(build, store=store, ledger=None)
    client = admin_client(moto_url)
    entry = build.files["static/site.css"]
    (pack,) = read_tree(store, owner="acme", name="blog", version=pub.version).packs
    head = client.head_object(Bucket=bucket, Key=f"sites/acme/blog/packs/{pack}.pack")  # type: ignore[attr-defined]
    assert head["ContentType"] == "application/octet-stream"
    assert "immutable" in head["CacheControl"] and "max-age=31536000" in head["CacheControl"]
    store_b = S3Store(s3_config(moto_url, bucket, prefix="loose"))
    loose = publish(
        make_build(tmp_path / "c", site_files(1)), store=store_b, ledger=None, pack_limit=None
    )
    head = client.head_object(Bucket=bucket, Key=f"loose/sites/acme/blog/blobs/{entry.hash}")  # type: ignore[attr-defined]
    assert head["ContentType"] == "text/css; charset=utf-8"  # a loose key serves as it is
    assert "immutable" in head["CacheControl"] and "max-age=31536000" in head["CacheControl"]
    root = client.head_object(Bucket=bucket, Key="sites/acme/blog/root.json")  # type: ignore[attr-defined]
    assert "no-store" in root["CacheControl"] and root["ContentType"] == "application/json"
    assert pub.outcome is loose.outcome is PublishOutcome.published


class _GateStore:
    """A store that stops before the root write until released: a publisher caught mid-flight."""

    def __init__(self, inner: Store, *, stop_in: str, after: int = 0) -> None:
        self._inner = inner
        self.description = inner.description
        self.concurrency = 1
        self.stop_in = stop_in
        self.after = after
        self.calls = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._inner, name)
        if name != self.stop_in:
            return attr

        def gated(*args: object, **kwargs: object) -> object:
            self.calls += 1
            if self.calls > self.after:
                self.reached.set()
                assert self.release.wait(30)
            return attr(*args, **kwargs)

        return gated


def _in_thread(
    fn: object, *args: object, **kwargs: object
) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn(*args, **kwargs))  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_two_publishers_racing_cannot_both_win(target: Target, tmp_path: Path) -> None:
    base = publish(make_build(tmp_path / "b0", site_files(3)), store=target.store, ledger=None)
    slow = _GateStore(target.store, stop_in="put_if")
    thread, out = _in_thread(
        publish,
        make_build(tmp_path / "slow", site_files(3, edition="nightly")),
        store=slow,
        ledger=None,
    )
    assert slow.reached.wait(30)  # the nightly read the root and uploaded; it is about to switch
    fast = publish(
        make_build(tmp_path / "fast", site_files(3, edition="force")),
        store=target.store,
        ledger=None,
    )
    slow.release.set()
    thread.join(30)
    (error,) = out
    assert isinstance(error, ConflictError)
    assert (
        f"switched the root to {fast.version}" in error.message
        and f"{fast.version} stays live" in error.message
    )
    root, _ = read_root(target.store, owner="acme", name="blog")
    assert root is not None and root.version == fast.version and root.previous == base.version
    assert [v.version for v in list_versions(target.store, owner="acme", name="blog")] == [
        fast.version,
        base.version,
    ]


def test_rollback_makes_the_previous_version_live_in_one_write(
    target: Target, ledger: Ledger, tmp_path: Path
) -> None:
    v1 = publish(make_build(tmp_path / "b1", site_files(3)), store=target.store, ledger=ledger)
    v2 = publish(
        make_build(tmp_path / "b2", site_files(3, edition="2")), store=target.store, ledger=ledger
    )
    mark = target.proxy.mark() if target.proxy else 0
    done = rollback(target.store, owner="acme", name="blog", ledger=ledger)
    assert (done.version, done.previous) == (v1.version, v2.version)
    if target.proxy is not None:
        puts = [e.path for e in target.proxy.entries(mark) if e.method != "GET"]
        assert len(puts) == 2  # the root, then the host claim's pointer
        assert puts[0].endswith("/root.json") and puts[1].endswith("/hosts/blog.example.com.json")
    assert ledger.live_version("acme", "blog") == v1.version
    infos = list_versions(target.store, owner="acme", name="blog")
    assert [(v.version, v.live) for v in infos] == [(v2.version, False), (v1.version, True)]
    forward = rollback(target.store, owner="acme", name="blog", to=v2.version, ledger=ledger)
    assert forward.version == v2.version
    with pytest.raises(PublishError, match="no version 'nope'"):
        rollback(target.store, owner="acme", name="blog", to="nope")
    # a publish after a rollback goes on top of what is live, and costs only its changes
    v3 = publish(
        make_build(tmp_path / "b3", site_files(3, edition="2")), store=target.store, ledger=ledger
    )
    assert v3.outcome is PublishOutcome.unchanged


def test_versions_listing_counts_new_blobs(target: Target, tmp_path: Path) -> None:
    v1 = publish(make_build(tmp_path / "b1", site_files(4)), store=target.store, ledger=None)
    files = site_files(4) | {"posts/p9/index.html": b"new page"}
    v2 = publish(make_build(tmp_path / "b2", files), store=target.store, ledger=None)
    infos = list_versions(target.store, owner="acme", name="blog")
    assert [(i.version, i.files, i.new_blobs, i.new_bytes, i.live) for i in infos] == [
        (v2.version, 8, 1, 8, True),
        (v1.version, 7, 7, v1.bytes, False),
    ]


def _age(store: LocalStore, keys: Sequence[str], hours: float) -> None:
    past = time.time() - hours * 3600
    for key in keys:
        os.utime(store.root / key, (past, past))


def _publish_series(
    store: Store,
    tmp_path: Path,
    editions: Sequence[str],
    *,
    pack_limit: int | None = DEFAULT_PACK_LIMIT,
) -> list[str]:
    out = []
    for i, edition in enumerate(editions):
        files = site_files(3, edition=edition) | {"static/site.css": f"/* {edition} */".encode()}
        build = make_build(tmp_path / f"s{i}", files)
        out.append(publish(build, store=store, ledger=None, pack_limit=pack_limit).version)
    return out


def _assert_whole(store: Store, version: str) -> None:
    """Every blob of ``version`` reads back from the store (its pack or its key), checked."""
    tree = read_tree(store, owner="acme", name="blog", version=version)
    blobs = StoredBlobs(store, owner="acme", name="blog", tree=tree)
    assert all(blobs.read(h) is not None for h in tree.hashes())


layouts = pytest.mark.parametrize("layout", [DEFAULT_PACK_LIMIT, None], ids=["packs", "loose"])


@layouts
def test_gc_keeps_what_kept_versions_name_and_removes_the_rest(
    tmp_path: Path, layout: int | None
) -> None:
    store = LocalStore(tmp_path / "store")
    versions = _publish_series(store, tmp_path, ["a", "b", "c", "d"], pack_limit=layout)
    _age(store, [o.key for o in store.list("sites/")], hours=72)
    before = {o.key for o in store.list("sites/acme/blog/")}
    dry = gc(store, owner="acme", name="blog", keep=2, dry_run=True)
    assert {o.key for o in store.list("sites/acme/blog/")} == before
    report = gc(store, owner="acme", name="blog", keep=2)
    assert report.removed_versions == dry.removed_versions == (versions[1], versions[0])
    assert report.kept == (versions[3], versions[2])
    # each old edition had 4 own blobs (3 posts + css); home and 404 are shared. Loose, those
    # 8 blobs go; packed, edition b's pack goes, and a's stays: it holds the home and 404 pages
    gone = (report.removed_blobs, report.removed_packs)
    assert gone == (dry.removed_blobs, dry.removed_packs) == ((8, 0) if layout is None else (0, 1))
    assert report.freed_bytes == dry.freed_bytes > 0
    for version in report.kept:
        _assert_whole(store, version)
    if layout is not None:
        named = set()
        for version in report.kept:
            named |= set(read_tree(store, owner="acme", name="blog", version=version).packs)
        stored = {o.key.rsplit("/", 1)[1] for o in store.list("sites/acme/blog/packs/")}
        assert stored == {f"{p}.pack" for p in named} and len(named) == 3
    # the live version is never removed, even when it is not among the newest
    rollback(store, owner="acme", name="blog", to=versions[2])
    after = gc(store, owner="acme", name="blog", keep=1)
    assert after.kept == (versions[3], versions[2])


@layouts
def test_gc_with_a_publish_in_flight_takes_nothing_from_it(
    tmp_path: Path, layout: int | None
) -> None:
    inner = LocalStore(tmp_path / "store")
    _publish_series(inner, tmp_path, ["a", "b", "c"], pack_limit=layout)
    _age(inner, [o.key for o in inner.list("sites/")], hours=72)
    # loose, the local store takes the new blobs in one batch; packed, its one pack is the
    # first put: the gate holds the tree's write
    flying = _GateStore(inner, stop_in="put", after=0 if layout is None else 1)
    files = site_files(6, edition="new")
    build = make_build(tmp_path / "new", files)
    named = {o.key.rsplit("/", 1)[1] for o in inner.list("sites/acme/blog/blobs/")}
    thread, out = _in_thread(publish, build, store=flying, ledger=None, pack_limit=layout)
    assert flying.reached.wait(30)  # the new blobs are in the store, no tree names them yet
    new = {e.hash for e in build.files.values()} - named
    assert len(new) >= 3
    report = gc(inner, owner="acme", name="blog", keep=1)
    young = (report.young_blobs, report.young_packs)
    assert young == ((len(new), 0) if layout is None else (0, 1))
    assert len(report.removed_versions) == 2
    flying.release.set()
    thread.join(30)
    (pub,) = out
    assert not isinstance(pub, BaseException), pub
    root, _ = read_root(inner, owner="acme", name="blog")
    assert root is not None and root.version == pub.version  # type: ignore[union-attr]
    _assert_whole(inner, root.version)


@layouts
def test_gc_on_s3_deletes_in_batches(moto_url: str, tmp_path: Path, layout: int | None) -> None:
    store = S3Store(s3_config(moto_url, new_bucket(moto_url)))
    versions = _publish_series(store, tmp_path, ["a", "b", "c"], pack_limit=layout)
    report = gc(store, owner="acme", name="blog", keep=1, grace_hours=0)
    assert report.removed_versions == (versions[1], versions[0])
    assert [o.key.rsplit("/", 1)[1] for o in store.list("sites/acme/blog/versions/")] == [
        f"{versions[2]}.json"
    ]
    left = (len(store.list("sites/acme/blog/blobs/")), len(store.list("sites/acme/blog/packs/")))
    if layout is None:
        assert (report.removed_blobs, report.removed_packs) == (8, 0) and left == (6, 0)
    else:  # edition b's pack went; a's holds the home and 404 pages c still shows
        assert (report.removed_blobs, report.removed_packs) == (0, 1) and left == (0, 2)
    _assert_whole(store, versions[2])


@pytest.mark.parametrize("which", ["root", "tree"])
def test_a_corrupt_root_or_tree_is_reported_not_replaced(
    target: Target, tmp_path: Path, which: str
) -> None:
    v1 = publish(make_build(tmp_path / "b1", site_files(2)), store=target.store, ledger=None)
    key = root_key("acme", "blog") if which == "root" else version_key("acme", "blog", v1.version)
    target.store.put(key, b'{"version": "oops"', content_type="application/json", cache_control="x")
    with pytest.raises(PublishError) as info:
        publish(
            make_build(tmp_path / "b2", site_files(2, edition="x")), store=target.store, ledger=None
        )
    assert info.value.site == "acme/blog"
    assert info.value.message.startswith(f"{key} in the store is corrupt: not valid JSON")
    assert target.store.get(key) == b'{"version": "oops"'


def test_serve_shows_each_live_version_by_host_and_by_path(target: Target, tmp_path: Path) -> None:
    publish(make_build(tmp_path / "a", site_files(2)), store=target.store, ledger=None)
    docs = make_build(
        tmp_path / "d",
        {"index.html": b"docs home", "guide/index.html": b"the guide"},
        name="docs",
        base_url="https://docs.example.org/",
    )
    publish(docs, store=target.store, ledger=None)
    live = LiveSites(target.store, cache=tmp_path / "cache", refresh_seconds=0)

    def get(url: str, host: str | None = None) -> tuple[int, bytes, str]:
        req = urllib.request.Request(url, headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read(), resp.headers.get("X-Render-Version", "")
        except urllib.error.HTTPError as err:
            return err.code, err.read(), ""

    with serve(live) as running:
        status, body, _ = get(f"{running.url}/guide/", host="docs.example.org")
        assert (status, body) == (200, b"the guide")
        assert get(f"{running.url}/acme/blog/posts/p1/")[1] == site_files(2)["posts/p1/index.html"]
        assert get(f"{running.url}/acme/docs/")[1] == b"docs home"
        assert get(f"{running.url}/", host="blog.acme.localhost")[1] == site_files(2)["index.html"]
        assert get(f"{running.url}/acme/blog/nope/")[0] == 404
        assert b"acme/docs" in get(f"{running.url}/")[1]
        v2 = publish(
            make_build(tmp_path / "a2", site_files(2, edition="v2")),
            store=target.store,
            ledger=None,
        )
        status, body, version = get(f"{running.url}/posts/p1/", host="blog.example.com")
        assert body.endswith(b"v2") and version == v2.version
        rollback(target.store, owner="acme", name="blog")
        assert not get(f"{running.url}/posts/p1/", host="blog.example.com")[1].endswith(b"v2")


def _host(tmp_path: Path, store_lines: str) -> Path:
    (tmp_path / "render.toml").write_text(f"[store]\n{store_lines}\n")
    site = tmp_path / "sites" / "acme" / "blog"
    site.mkdir(parents=True)
    (site / "site.toml").write_text('[site]\nbase_url = "https://blog.example.com"\n')
    return tmp_path / "render.toml"


@layouts
def test_cli_versions_rollback_gc(tmp_path: Path, layout: int | None) -> None:
    from render.cli.publish import gc_command, rollback_command, versions

    config = _host(tmp_path, 'path = "bucket"' + ("" if layout else '\nlayout = "loose"'))
    store = LocalStore(tmp_path / "bucket")
    v1, v2, v3 = _publish_series(store, tmp_path / "w", ["a", "b", "c"], pack_limit=layout)
    _age(store, [o.key for o in store.list("sites/")], hours=72)
    runner = CliRunner()
    result = runner.invoke(versions, ["--config", str(config), "blog"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[2:]]
    assert [(r[0], r[-1]) for r in rows] == [(v3, "live"), (v2, "4"), (v1, "6")]
    result = runner.invoke(rollback_command, ["--config", str(config), "acme/blog"])
    assert result.exit_code == 0 and result.output == f"acme/blog: {v2} is live (was {v3})\n"
    result = runner.invoke(gc_command, ["--config", str(config), "--keep", "1", "--dry-run"])
    assert result.exit_code == 0, result.output
    own = [v for k, v in site_files(3, edition="a").items() if k.startswith("posts/")]
    own_bytes = sum(map(len, own)) + len(b"/* a */")
    # packed, v1's one pack also holds the home and 404 pages v2 and v3 show: it stays
    gone = f"4 blobs and 0 packs, {own_bytes} B" if layout is None else "0 blobs and 0 packs, 0 B"
    lines = result.output.splitlines()
    assert lines[:2] == [
        f"acme/blog: would remove version {v1}",
        f"acme/blog: would remove 1 versions, {gone}",
    ]
    assert store.exists(version_key("acme", "blog", v1))
    result = runner.invoke(gc_command, ["--config", str(config), "--keep", "1"])
    assert result.exit_code == 0 and f"acme/blog: removed version {v1}" in result.output
    assert not store.exists(version_key("acme", "blog", v1))
    assert [v.version for v in list_versions(store, owner="acme", name="blog")] == [v3, v2]


def test_cli_missing_bucket_is_one_line_and_nothing_goes_live(
    moto_url: str, tmp_path: Path
) -> None:
    from render.cli.publish import versions

    config = _host(
        tmp_path,
        f'kind = "s3"\nbucket = "absent"\nendpoint_url = "{moto_url}"\nregion = "us-east-1"',
    )
    result = CliRunner().invoke(versions, ["--config", str(config), "acme/blog"])
    assert result.exit_code == 1
    assert (
        result.output.splitlines()[0]
        == f"Error: acme/blog: publish: bucket 'absent' does not exist at {moto_url}"
    )
    with Ledger(tmp_path / "ledger.sqlite") as led:
        with pytest.raises(PublishError, match="does not exist"):
            publish(
                make_build(tmp_path / "b", site_files(1)),
                store=S3Store(s3_config(moto_url, "absent")),
                ledger=led,
            )
        assert led.live_version("acme", "blog") is None


def test_version_ids_sort_by_time_and_never_collide() -> None:
    from datetime import UTC, datetime

    from render.publish.manifest import is_version_id, new_version_id

    now = datetime(2026, 11, 27, 3, 0, 0, tzinfo=UTC)
    ids = {new_version_id(now=now) for _ in range(200)}
    assert len(ids) == 200 and all(
        i.startswith("20261127T030000Z-") and is_version_id(i) for i in ids
    )
    later = new_version_id(now=now, after="20261127T030005Z-00000000")  # a clock behind the parent
    assert later > "20261127T030005Z-ffffffff" and later.startswith("20261127T030006Z-")
    assert (
        Root.from_bytes(
            Root(version=later, site="a/b", base_url="", previous=None, published="").to_bytes(),
            key="k",
        ).version
        == later
    )
    assert StoredObject(key="k", size=1, modified=0.0).key == "k"
