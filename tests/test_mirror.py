"""The mirror sync: releases from the store, hard links, verification, atomic switch, keep, status."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mirrorkit import HOST, publish_files, release_files, site_files
from s3server import bucket_keys, moto_url, new_bucket, s3_config, s3_env

from render.build.tree import sha256
from render.cli import main
from render.errors import LockedError, PublishError
from render.mirror.layout import Layout
from render.mirror.status import MirrorState, mirror_status
from render.mirror.sync import SyncOutcome, run_forever, sync, sync_site, write_host_map
from render.publish.history import rollback
from render.publish.manifest import blob_key, pack_key, version_key
from render.publish.store import LocalStore, S3Store
from render.publish.versions import read_tree

__all__ = ["moto_url", "s3_env"]  # fixtures used by name below


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "mirror"


def _publish(store: LocalStore, tmp_path: Path, files: dict[str, bytes], **kw: Any) -> str:
    return publish_files(store, files, objects=tmp_path / "objects", **kw)


def _served_files(root: Path, owner: str = "acme", name: str = "blog") -> dict[str, bytes]:
    return release_files(root / "sites" / owner / name / "current")


def _store_snapshot(store: LocalStore) -> dict[str, bytes]:
    return {
        p.relative_to(store.root).as_posix(): p.read_bytes()
        for p in store.root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_first_sync_materializes_the_live_version_and_switches_current(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    files = site_files("one")
    version = _publish(store, tmp_path, files)
    before = _store_snapshot(store)

    report = sync(store, root)

    (site,) = report.sites
    assert site.outcome is SyncOutcome.switched
    assert (site.version, site.served) == (version, version)
    assert site.fetched == len({sha256(b) for b in files.values()})
    assert _served_files(root) == files
    current = root / "sites/acme/blog/current"
    assert (
        os.readlink(current) == f"../../../releases/acme/blog/{version}"
    )  # relative: the root can move
    assert (root / "hosts.map").read_text().splitlines()[1:] == [f"{HOST} acme/blog;"]
    assert report.map_changed
    assert _store_snapshot(store) == before  # the mirror never writes to the store
    assert not list((root / "releases/acme/blog").glob(".partial-*"))


def test_a_new_version_fetches_only_changed_blobs_and_hard_links_the_rest(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    old = site_files("one")
    v1 = _publish(store, tmp_path, old)
    sync(store, root)
    new = dict(old, **{"posts/hello/index.html": b"<!doctype html><h1>changed</h1>\n"})
    v2 = _publish(store, tmp_path, new)
    requests = store.request_count()

    (site,) = sync(store, root).sites

    assert site.outcome is SyncOutcome.switched and site.served == v2
    assert (site.fetched, site.linked) == (1, len(new) - 1)
    # requests: the site list, root.json, the version tree and the changed blob's range of
    # v2's pack; the delta from v1 is worked out from v1's kept tree
    assert store.request_count() - requests == 4
    assert _served_files(root) == new
    r1, r2 = root / "releases/acme/blog" / v1, root / "releases/acme/blog" / v2
    logo = "static/logo.svg"
    assert (r1 / logo).stat().st_ino == (r2 / logo).stat().st_ino
    assert os.readlink(root / "sites/acme/blog/previous").endswith(f"/{v1}")
    assert not write_host_map(root)  # same host, same site: the map file is left alone


def test_nothing_published_means_one_read_and_no_change(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    version = _publish(store, tmp_path, site_files("one"))
    sync(store, root)
    requests = store.request_count()

    report = sync(store, root)

    assert [(s.outcome, s.served, s.fetched) for s in report.sites] == [
        (SyncOutcome.unchanged, version, 0)
    ]
    assert store.request_count() - requests == 2  # the site list and root.json
    assert not report.map_changed


def test_keeps_the_newest_releases_and_always_current_and_previous(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    versions = []
    for i in range(5):
        versions.append(_publish(store, tmp_path, site_files(f"v{i}")))
        sync(store, root, keep=3)
    releases = root / "releases/acme/blog"
    assert sorted(p.name for p in releases.iterdir() if not p.name.startswith(".")) == versions[-3:]
    assert sorted(p.stem for p in (releases / ".trees").iterdir()) == versions[-3:]

    rollback(store, owner="acme", name="blog", to=versions[0])  # not on the mirror any more
    (site,) = sync(store, root, keep=3).sites

    assert site.served == versions[0] and site.outcome is SyncOutcome.switched
    kept = sorted(p.name for p in releases.iterdir() if not p.name.startswith("."))
    assert kept == sorted([versions[0], versions[4], versions[3]])  # current, previous, newest
    assert site.removed == (versions[2],)
    assert _served_files(root) == site_files("v0")


def test_rollback_to_a_kept_release_switches_without_downloading(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    v1 = _publish(store, tmp_path, site_files("one"))
    sync(store, root)
    _publish(store, tmp_path, site_files("two"))
    sync(store, root)
    rollback(store, owner="acme", name="blog", to=v1)
    requests = store.request_count()

    (site,) = sync(store, root).sites

    assert (site.outcome, site.served, site.fetched) == (SyncOutcome.switched, v1, 0)
    assert store.request_count() - requests == 2  # the site list and root.json only
    assert _served_files(root) == site_files("one")


def test_a_blob_with_wrong_bytes_refuses_the_release(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    v1 = _publish(store, tmp_path, site_files("one"), pack_limit=None)
    sync(store, root)
    new = site_files("two")
    v2 = _publish(store, tmp_path, new, pack_limit=None)
    digest = sha256(new["index.html"])
    blob = store.root / blob_key("acme", "blog", digest)
    blob.chmod(0o644)  # the store's blobs are read-only; rot does not ask
    blob.write_bytes(b"<h1>not what was published</h1>")

    (site,) = sync(store, root).sites

    assert site.outcome is SyncOutcome.refused
    assert site.served == v1 and site.version == v2
    assert site.error == (
        f"{blob_key('acme', 'blog', digest)} (index.html) does not match its hash: "
        f"its bytes hash to {sha256(b'<h1>not what was published</h1>')}"
    )
    assert site.hint is not None and "served version is unchanged" in site.hint
    assert _served_files(root) == site_files("one")
    assert not (root / "releases/acme/blog" / v2).exists()

    blob.write_bytes(new["index.html"])  # the store is repaired: the next sync finishes
    (site,) = sync(store, root).sites
    assert site.outcome is SyncOutcome.switched and _served_files(root) == new


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_corrupt_or_truncated_pack_refuses_the_release(
    store: LocalStore, root: Path, tmp_path: Path, damage: str
) -> None:
    v1 = _publish(store, tmp_path, site_files("one"))
    sync(store, root)
    new = site_files("two")
    v2 = _publish(store, tmp_path, new)
    tree = read_tree(store, owner="acme", name="blog", version=v2)
    digest = sha256(new["index.html"])
    pack_id, offset = tree.locate(digest) or ("", -1)
    pack = store.root / pack_key("acme", "blog", pack_id)
    good = pack.read_bytes()
    pack.chmod(0o644)
    if damage == "truncated":
        pack.write_bytes(good[: offset + 3])
    else:
        pack.write_bytes(good[:offset] + bytes([good[offset] ^ 1]) + good[offset + 1 :])

    (site,) = sync(store, root).sites

    assert site.outcome is SyncOutcome.refused
    assert site.served == v1 and site.version == v2
    assert (
        site.error is not None
        and f"blob {digest} at offset {offset} does not match its hash" in site.error
    )
    assert pack_key("acme", "blog", pack_id) in site.error
    assert site.hint is not None and "served version is unchanged" in site.hint
    assert _served_files(root) == site_files("one")
    assert not (root / "releases/acme/blog" / v2).exists()

    pack.write_bytes(good)  # the store is repaired: the next sync finishes
    (site,) = sync(store, root).sites
    assert site.outcome is SyncOutcome.switched and _served_files(root) == new


class _FailingAfter:
    """A store whose downloads fail after ``n`` (the network dropping half way)."""

    def __init__(self, inner: LocalStore, n: int) -> None:
        self.inner, self.left = inner, n
        self.description = inner.description
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        return self.inner.get_range(key, start, length)

    def sites(self) -> list[tuple[str, str]]:
        return self.inner.sites()

    def download(self, key: str, dest: Path) -> bool:
        with self.lock:
            self.left -= 1
            if self.left < 0:
                raise PublishError(f"{self.description}: download {key} failed: connection reset")
        return self.inner.download(key, dest)


def test_an_interrupted_sync_keeps_current_and_the_next_one_reuses_what_it_checked(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    v1 = _publish(store, tmp_path, site_files("one"))
    sync(store, root)
    new = {f"posts/p{i}/index.html": f"<h1>post {i}</h1>".encode() for i in range(40)}
    # loose blobs: one download each, so the network can drop half way through them
    v2 = _publish(store, tmp_path, {**site_files("one"), **new}, pack_limit=None)

    (site,) = sync(_FailingAfter(store, 10), root, concurrency=1).sites

    assert site.outcome is SyncOutcome.failed and site.served == v1
    assert "connection reset" in (site.error or "")
    assert _served_files(root) == site_files("one")
    (site,) = sync(store, root).sites
    assert site.outcome is SyncOutcome.switched and site.served == v2
    assert site.fetched == 40 - 10  # the ten blobs already verified are not fetched again
    assert _served_files(root) == {**site_files("one"), **new}


def test_one_broken_site_does_not_stop_the_others(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    good = _publish(store, tmp_path, site_files("one"), name="blog")
    bad = _publish(store, tmp_path, site_files("one"), name="shop", base_url="http://shop.test/")
    (store.root / version_key("acme", "shop", bad)).unlink()

    report = sync(store, root)

    outcomes = {s.site: (s.outcome, s.served) for s in report.sites}
    assert outcomes == {
        "acme/blog": (SyncOutcome.switched, good),
        "acme/shop": (SyncOutcome.failed, None),
    }
    (failed,) = report.failed
    assert failed.error == f"{version_key('acme', 'shop', bad)} is missing from {store.description}"
    status = json.loads((root / "status.json").read_text())
    assert status["sites"]["acme/shop"]["outcome"] == "failed"


def test_unsafe_paths_and_hosts_are_refused(store: LocalStore, root: Path, tmp_path: Path) -> None:
    _publish(store, tmp_path, {"../escape.html": b"x", "index.html": b"ok"}, name="evil")
    _publish(store, tmp_path, {"index.html": b"ok"}, name="nohost", base_url="http://bad_host;/")

    report = sync(store, root)

    errors = {s.site: s.error for s in report.sites}
    assert all(s.outcome is SyncOutcome.failed for s in report.sites)
    assert "refusing the path '../escape.html'" in (errors["acme/evil"] or "")
    assert "has no usable host name" in (errors["acme/nohost"] or "")
    assert not (root / "releases/acme/escape.html").exists()
    assert (root / "hosts.map").read_text().count("\n") == 1  # the header line only


def test_current_is_always_a_symlink_switched_by_rename(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    v1 = _publish(store, tmp_path, site_files("one"))
    sync(store, root)
    v2 = _publish(store, tmp_path, site_files("two"))
    sync(store, root)
    lay = Layout(root, "acme", "blog")
    seen: set[str] = set()
    stop = threading.Event()
    missing: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            try:
                seen.add(os.path.basename(os.readlink(lay.current)))
            except FileNotFoundError:
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(40):
            rollback(store, owner="acme", name="blog", to=v1 if i % 2 == 0 else v2)
            assert sync_site(store, root, "acme", "blog").outcome is SyncOutcome.switched
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert not missing
    assert seen == {v1, v2}
    assert not [p for p in lay.site_dir.iterdir() if p.name.startswith(".")]  # no stray links


def test_poll_loop_survives_a_failing_store(store: LocalStore, root: Path, tmp_path: Path) -> None:
    version = _publish(store, tmp_path, site_files("one"))

    class Flaky:
        description = store.description
        calls = 0

        def get(self, key: str) -> bytes | None:
            return store.get(key)

        def get_range(self, key: str, start: int, length: int) -> bytes | None:
            return store.get_range(key, start, length)

        def download(self, key: str, dest: Path) -> bool:
            return store.download(key, dest)

        def sites(self) -> list[tuple[str, str]]:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise PublishError("cannot reach the store")
            return store.sites()

    stop = threading.Event()
    errors: list[Exception] = []
    served: list[str | None] = []

    def on_report(report: object) -> None:
        served.extend(s.served for s in report.sites)  # type: ignore[attr-defined]
        stop.set()

    runner = threading.Thread(
        target=run_forever,
        args=(Flaky(), root),
        kwargs={"stop": stop, "interval": 0.01, "on_report": on_report, "on_error": errors.append},
    )
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert [str(e) for e in errors] == ["publish: cannot reach the store"]
    assert served == [version]


def test_a_second_sync_while_one_runs_is_refused(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    _publish(store, tmp_path, site_files("one"))
    root.mkdir()
    with open(root / ".sync.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(LockedError) as info:
            sync(store, root)
    assert str(info.value) == f"mirror: another 'render mirror sync' is running on {root}"


def test_status_shows_live_against_served(store: LocalStore, root: Path, tmp_path: Path) -> None:
    v1 = _publish(store, tmp_path, site_files("one"))
    sync(store, root)
    (row,) = mirror_status(store, root)
    assert (row.state, row.live, row.served, row.behind_seconds) == (
        MirrorState.current,
        v1,
        v1,
        None,
    )

    v2 = _publish(store, tmp_path, site_files("two"))
    (row,) = mirror_status(store, root)
    assert (row.state, row.live, row.served) == (MirrorState.behind, v2, v1)
    assert (
        row.behind_seconds is not None and row.behind_seconds >= 1
    )  # version ids are a second apart
    assert row.waiting_seconds is not None


def _host(tmp_path: Path) -> Path:
    config = tmp_path / "render.toml"
    config.write_text('[store]\npath = "store"\n\n[mirror]\npath = "mirror"\nkeep = 3\n')
    return config


def test_cli_sync_once_and_status(store: LocalStore, tmp_path: Path) -> None:
    config = _host(tmp_path)
    v1 = _publish(store, tmp_path, site_files("one"))
    runner = CliRunner()

    result = runner.invoke(main, ["mirror", "sync", "--once", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "acme/blog" in result.output and "switched" in result.output
    assert (tmp_path / "mirror/sites/acme/blog/current").is_symlink()

    v2 = _publish(store, tmp_path, site_files("two"))
    result = runner.invoke(main, ["mirror", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert v1 in result.output and v2 in result.output and "behind" in result.output


def test_cli_sync_once_fails_when_a_site_fails(store: LocalStore, tmp_path: Path) -> None:
    config = _host(tmp_path)
    version = _publish(store, tmp_path, site_files("one"))
    (store.root / version_key("acme", "blog", version)).unlink()

    result = CliRunner().invoke(
        main, ["mirror", "sync", "--once", "--config", str(config), "--root", str(tmp_path / "m2")]
    )

    assert result.exit_code == 1
    assert result.output.endswith(
        "Error: mirror: 1 of 1 sites failed to sync\n"
        "Hint: those sites keep serving their previous release; the next sync retries\n"
    )


def test_sync_from_an_s3_store_reads_only(moto_url: str, tmp_path: Path) -> None:
    bucket = new_bucket(moto_url)
    store = S3Store(s3_config(moto_url, bucket, prefix="tenant"))
    try:
        v1 = publish_files(store, site_files("one"), objects=tmp_path / "objects")  # type: ignore[arg-type]
        before = bucket_keys(moto_url, bucket)
        requests = store.request_count()
        store.sites()
        listing = store.request_count() - requests  # finding the sites (LIST; HEAD root.json)
        requests = store.request_count()

        (site,) = sync(store, tmp_path / "mirror").sites

        assert (site.outcome, site.served) == (SyncOutcome.switched, v1)
        assert _served_files(tmp_path / "mirror") == site_files("one")
        # finding the sites, then root.json, the version tree and the pack: GETs only
        assert store.request_count() - requests == listing + 2 + 1
        assert bucket_keys(moto_url, bucket) == before
    finally:
        store.close()
