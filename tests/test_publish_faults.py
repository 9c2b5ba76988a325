"""Faults between the publisher and S3: the old version stays live, a re-run finishes the job.

A fault-injecting proxy (tests/faultproxy.py) sits between boto3 and the moto
server on loopback and counts what the store really received. Most tests here
publish loose blobs (``[store] layout = "loose"``: one PUT per blob, so a fault
can hit one blob of many); the ``pack`` tests put the same faults on packs.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import Drop, FaultProxy, Hold, LoseResponse, Reply, Request
from s3server import bucket_keys, make_build, moto_url, new_bucket, s3_config, s3_env, site_files

from render.build.tree import Build
from render.errors import PublishError
from render.publish.packs import StoredBlobs
from render.publish.store import S3Store, Store
from render.publish.versions import (
    DEFAULT_PACK_LIMIT,
    Publication,
    PublishOutcome,
    read_root,
    read_tree,
)
from render.publish.versions import publish as publish_build
from render.run.ledger import Ledger

__all__ = ["moto_url", "s3_env"]

logging.getLogger("werkzeug").setLevel(logging.ERROR)

PAGES = 20  # the second edition changes every post: 20 new blobs


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url).running() as running:
        yield running


@pytest.fixture
def bucket(moto_url: str) -> str:
    return new_bucket(moto_url)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite") as led:
        yield led


def _store(proxy: FaultProxy, bucket: str) -> S3Store:
    return S3Store(s3_config(proxy.url, bucket, concurrency=4, max_attempts=3))


def publish(build: Build, *, store: Store, ledger: Ledger) -> Publication:
    """A loose publish (one key per blob)."""
    return publish_build(build, store=store, ledger=ledger, pack_limit=None)


def _first(proxy: FaultProxy, bucket: str, ledger: Ledger, tmp_path: Path) -> Publication:
    return publish(
        make_build(tmp_path / "v1", site_files(PAGES)), store=_store(proxy, bucket), ledger=ledger
    )


def _is_blob_put(r: Request) -> bool:
    return r.method == "PUT" and "/blobs/" in r.path


def _live(proxy: FaultProxy, bucket: str) -> str | None:
    root, _ = read_root(_store(proxy, bucket), owner="acme", name="blog")
    return root.version if root else None


def _rerun_uploads_only_what_is_missing(
    proxy: FaultProxy, bucket: str, ledger: Ledger, tmp_path: Path, moto: str
) -> Publication:
    build = make_build(tmp_path / "rerun", site_files(PAGES, edition="v2"))
    present = set(bucket_keys(moto, bucket, "sites/acme/blog/blobs/"))
    missing = {f"sites/acme/blog/blobs/{e.hash}" for e in build.files.values()} - present
    assert missing  # the failed run left work to do
    mark = proxy.mark()
    pub = publish(build, store=_store(proxy, bucket), ledger=ledger)
    assert pub.outcome is PublishOutcome.published
    uploaded = {
        e.path.split("/", 2)[2]
        for e in proxy.entries(mark)
        if e.method == "PUT" and "/blobs/" in e.path
    }
    assert uploaded == missing and pub.uploaded_blobs == len(missing)
    assert _live(proxy, bucket) == pub.version
    for entry in build.files.values():  # the new version is whole
        assert bucket_keys(moto, bucket, f"sites/acme/blog/blobs/{entry.hash}")
    assert ledger.live_version("acme", "blog") == pub.version
    return pub


def test_throttling_and_5xx_on_some_uploads_are_retried(
    proxy: FaultProxy, bucket: str, ledger: Ledger, tmp_path: Path, moto_url: str
) -> None:
    v1 = _first(proxy, bucket, ledger, tmp_path)
    seen: list[str] = []

    def flaky(r: Request) -> Reply | None:
        if not _is_blob_put(r) or r.attempt > 1:
            return None
        seen.append(r.path)
        if len(seen) % 5 == 1:
            return Reply(503, "SlowDown", "Please reduce your request rate.")
        if len(seen) % 5 == 2:
            return Reply(500, "InternalError", "We encountered an internal error.")
        return None

    proxy.rules.append(flaky)
    mark = proxy.mark()
    pub = publish(
        make_build(tmp_path / "v2", site_files(PAGES, edition="v2")),
        store=_store(proxy, bucket),
        ledger=ledger,
    )
    assert pub.outcome is PublishOutcome.published and pub.parent == v1.version
    assert proxy.count("PUT", contains="/blobs/", since=mark, status=503) == 4
    assert proxy.count("PUT", contains="/blobs/", since=mark, status=500) == 4
    assert proxy.count("PUT", contains="/blobs/", since=mark, status=200) == PAGES
    # the retries are counted too (and the delta, and the host claim read and pointed)
    assert pub.requests == 2 + PAGES + 8 + 3 + 2
    assert _live(proxy, bucket) == pub.version


def test_persistent_5xx_keeps_the_old_version_live_and_a_rerun_finishes(
    proxy: FaultProxy, bucket: str, ledger: Ledger, tmp_path: Path, moto_url: str
) -> None:
    v1 = _first(proxy, bucket, ledger, tmp_path)
    doomed = (
        make_build(tmp_path / "x", site_files(PAGES, edition="v2"))
        .files["posts/p3/index.html"]
        .hash
    )
    proxy.rules.append(
        lambda r: Reply(500, "InternalError", "down") if r.path.endswith(doomed) else None
    )
    with pytest.raises(PublishError) as info:
        publish(
            make_build(tmp_path / "v2", site_files(PAGES, edition="v2")),
            store=_store(proxy, bucket),
            ledger=ledger,
        )
    assert info.value.site == "acme/blog"
    assert f"upload sites/acme/blog/blobs/{doomed} failed: InternalError" in info.value.message
    assert proxy.count("PUT", contains=doomed) == 3  # max_attempts
    assert _live(proxy, bucket) == v1.version == ledger.live_version("acme", "blog")
    assert proxy.count("PUT", contains="/versions/") == 1  # only v1's tree was ever written
    proxy.rules.clear()
    mark = proxy.mark()
    _rerun_uploads_only_what_is_missing(proxy, bucket, ledger, tmp_path, moto_url)
    assert (
        sum(1 for e in proxy.entries(mark) if "list-type=2" in e.query) == 1
    )  # one listing to recover


def test_connection_dropped_mid_upload_keeps_the_old_version_live(
    proxy: FaultProxy, bucket: str, ledger: Ledger, tmp_path: Path, moto_url: str
) -> None:
    v1 = _first(proxy, bucket, ledger, tmp_path)
    doomed = (
        make_build(tmp_path / "x", site_files(PAGES, edition="v2"))
        .files["posts/p9/index.html"]
        .hash
    )
    proxy.rules.append(lambda r: Drop() if r.path.endswith(doomed) else None)
    with pytest.raises(PublishError) as info:
        publish(
            make_build(tmp_path / "v2", site_files(PAGES, edition="v2")),
            store=_store(proxy, bucket),
            ledger=ledger,
        )
    assert info.value.message.startswith(f"cannot reach {proxy.url} for bucket '{bucket}'")
    assert proxy.count("PUT", contains=doomed, status=-1) == 3
    assert _live(proxy, bucket) == v1.version
    proxy.rules.clear()
    _rerun_uploads_only_what_is_missing(proxy, bucket, ledger, tmp_path, moto_url)


def test_a_lost_response_to_the_root_write_is_checked_not_called_a_failure(
    proxy: FaultProxy, bucket: str, ledger: Ledger, tmp_path: Path
) -> None:
    _first(proxy, bucket, ledger, tmp_path)
    proxy.rules.append(
        lambda r: (
            LoseResponse(503)
            if r.method == "PUT" and r.path.endswith("/root.json") and r.attempt == 2
            else None
        )
    )
    mark = proxy.mark()
    pub = publish(
        make_build(tmp_path / "v2", site_files(PAGES, edition="v2")),
        store=_store(proxy, bucket),
        ledger=ledger,
    )
    root_calls = [
        (e.method, e.status) for e in proxy.entries(mark) if e.path.endswith("/root.json")
    ]
    # read; write applied but answered 503; botocore's retry meets If-Match -> 412; re-read finds our version
    assert root_calls == [("GET", 200), ("PUT", 503), ("PUT", 412), ("GET", 200)]
    assert pub.outcome is PublishOutcome.published
    assert _live(proxy, bucket) == pub.version == ledger.live_version("acme", "blog")


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from s3server import make_build, s3_config, site_files
from render.run.ledger import Ledger
from render.publish.versions import publish
from render.publish.store import S3Store

build = make_build(Path({work!r}), site_files({pages}, edition="v2"))
store = S3Store(s3_config({url!r}, {bucket!r}, concurrency=2))
with Ledger(Path({ledger!r})) as ledger:
    publish(build, store=store, ledger=ledger, pack_limit=None)
print("finished")
"""


def test_sigkill_after_half_the_blobs_then_a_rerun_uploads_the_rest(
    proxy: FaultProxy, bucket: str, ledger: Ledger, tmp_path: Path, moto_url: str
) -> None:
    v1 = _first(proxy, bucket, ledger, tmp_path)
    half = PAGES // 2
    passed: list[str] = []
    lock = threading.Lock()
    release = threading.Event()

    def stall_after_half(r: Request) -> Hold | None:
        if not _is_blob_put(r):
            return None
        with lock:
            if len(passed) < half:
                passed.append(r.path)
                return None
        return Hold(release)

    proxy.rules.append(stall_after_half)
    script = tmp_path / "child.py"
    script.write_text(
        _CHILD.format(
            tests=str(Path(__file__).parent),
            work=str(tmp_path / "child"),
            pages=PAGES,
            url=proxy.url,
            bucket=bucket,
            ledger=str(ledger.path),
        )
    )
    child = subprocess.Popen(
        [sys.executable, str(script)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (
            proxy.held >= 1
            and proxy.count("PUT", contains="/blobs/", status=200) - PAGES - 3 >= half
        ):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never got half-way"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        release.set()
        if child.stdout and child.stderr:
            child.stdout.close()
            child.stderr.close()
    proxy.rules.clear()
    assert _live(proxy, bucket) == v1.version == ledger.live_version("acme", "blog")
    new_hashes = {
        e.hash for e in make_build(tmp_path / "x", site_files(PAGES, edition="v2")).files.values()
    }
    present = {k.rsplit("/", 1)[1] for k in bucket_keys(moto_url, bucket, "sites/acme/blog/blobs/")}
    assert len(new_hashes - present) == PAGES - half  # the killed run uploaded exactly half
    pub = _rerun_uploads_only_what_is_missing(proxy, bucket, ledger, tmp_path, moto_url)
    assert pub.uploaded_blobs == PAGES - half and pub.parent == v1.version


def _packed(proxy: FaultProxy, bucket: str, ledger: Ledger, build: Build) -> Publication:
    return publish_build(
        build, store=_store(proxy, bucket), ledger=ledger, pack_limit=DEFAULT_PACK_LIMIT
    )


def _whole(proxy: FaultProxy, bucket: str, pub: Publication, build: Build) -> None:
    """The live version is ``pub`` and every file of it reads back as built."""
    store = _store(proxy, bucket)
    assert _live(proxy, bucket) == pub.version
    tree = read_tree(store, owner="acme", name="blog", version=pub.version)
    blobs = StoredBlobs(store, owner="acme", name="blog", tree=tree)
    for path, entry in build.files.items():
        assert blobs.read(entry.hash) == build.read(path)


def test_pack_5xx_is_retried_and_a_persistent_one_keeps_the_old_version_live(
    proxy: FaultProxy, bucket: str, ledger: Ledger, tmp_path: Path
) -> None:
    first = make_build(tmp_path / "v1", site_files(PAGES))
    v1 = _packed(proxy, bucket, ledger, first)
    attempts: list[int] = []

    def once(r: Request) -> Reply | None:
        if r.method == "PUT" and "/packs/" in r.path and r.attempt == 1:
            attempts.append(r.attempt)
            return Reply(503, "SlowDown", "Please reduce your request rate.")
        return None

    proxy.rules.append(once)
    mark = proxy.mark()
    second = make_build(tmp_path / "v2", site_files(PAGES, edition="v2"))
    v2 = _packed(proxy, bucket, ledger, second)
    assert v2.outcome is PublishOutcome.published and v2.parent == v1.version
    assert proxy.count("PUT", contains="/packs/", since=mark, status=503) == 1
    assert proxy.count("PUT", contains="/packs/", since=mark, status=200) == 1
    _whole(proxy, bucket, v2, second)

    proxy.rules[:] = [
        lambda r: (
            Reply(500, "InternalError", "down")
            if r.method == "PUT" and "/packs/" in r.path
            else None
        )
    ]
    third = make_build(tmp_path / "v3", site_files(PAGES, edition="v3"))
    with pytest.raises(PublishError) as info:
        _packed(proxy, bucket, ledger, third)
    assert info.value.site == "acme/blog"
    assert "upload sites/acme/blog/packs/" in info.value.message
    _whole(proxy, bucket, v2, second)  # the old version stays live and whole

    proxy.rules.clear()
    v3 = _packed(proxy, bucket, ledger, third)  # a rerun finishes
    assert v3.parent == v2.version
    _whole(proxy, bucket, v3, third)
