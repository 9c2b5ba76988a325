"""Kept releases share their unchanged folders (``render.mirror.pool``): disk, pruning, crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from mirrorkit import publish_files, release_files, site_files

from render.mirror.layout import Layout, site_lock
from render.mirror.pool import reachable
from render.mirror.sync import SiteSync, SyncOutcome, sync, sync_site
from render.publish.history import rollback
from render.publish.store import LocalStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "mirror"


def _publish(store: LocalStore, tmp_path: Path, files: dict[str, bytes]) -> str:
    return publish_files(store, files, objects=tmp_path / "objects")


def _articles(count: int) -> dict[str, bytes]:
    """``count`` article pages of about 1 KB, each in its own folder, a home page and a style."""
    files = {
        f"posts/article-{i:04d}/index.html": (
            f"<!doctype html><title>Article {i}</title><h1>Article {i}</h1>"
            + "<p>lorem ipsum dolor sit amet</p>" * 30
            + "\n"
        ).encode()
        for i in range(count)
    }
    files["index.html"] = b"<!doctype html><title>Home</title><h1>Home</h1>\n"
    files["404.html"] = b"<!doctype html><title>Not found</title><h1>Not found</h1>\n"
    files["static/site.css"] = b"body{font:16px/1.5 system-ui}\n"
    return files


def _edited(files: dict[str, bytes], path: str, tag: str) -> dict[str, bytes]:
    return {**files, path: files[path].replace(b"</h1>", f" ({tag})</h1>".encode(), 1)}


def _disk(folder: Path) -> int:
    """Bytes on disk under ``folder``: every entry's blocks, each inode once, no link followed."""
    seen: set[int] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(name)
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def _links_stay_inside(releases: Path) -> None:
    """Every symlink the mirror wrote for the site resolves to a folder inside its releases."""
    top = releases.resolve()
    for dirpath, dirnames, filenames in os.walk(releases):
        for name in dirnames + filenames:
            entry = Path(dirpath, name)
            if entry.is_symlink():
                target = entry.resolve()
                assert target.is_relative_to(top / ".d") and target.is_dir(), entry


def _pool(lay: Layout) -> set[str]:
    return {p.name for p in lay.pool.iterdir()} if lay.pool.is_dir() else set()


def _folders_reached(lay: Layout) -> set[str]:
    """The pool folders the kept releases use, found by following every link to its end."""
    used: set[str] = set()
    for version in lay.kept():
        for dirpath, _dirnames, _filenames in os.walk(lay.release(version), followlinks=True):
            real = Path(os.path.realpath(dirpath))
            if real.parent == lay.pool.resolve():
                used.add(real.name)
    return used


def test_kept_releases_share_every_unchanged_folder_and_take_little_more_disk_than_one(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    lay = Layout(root, "acme", "blog")
    one = _articles(2000)
    v1 = _publish(store, tmp_path, one)
    sync(store, root, keep=3)
    single = _disk(lay.releases)
    two = _edited(one, "posts/article-0007/index.html", "edit 1")
    v2 = _publish(store, tmp_path, two)
    (second,) = sync(store, root, keep=3).sites
    three = _edited(two, "posts/article-1500/index.html", "edit 2")
    v3 = _publish(store, tmp_path, three)
    sync(store, root, keep=3)

    assert lay.kept() == [v1, v2, v3]
    for version, files in ((v1, one), (v2, two), (v3, three)):
        assert release_files(lay.release(version)) == files
    # one changed page: its folder and its ancestors are new, the other 2,000 folders shared
    assert (second.fetched, second.shared) == (1, 2000)
    assert second.linked == len(two) - 1
    inode = {
        v: {
            f: os.stat(lay.release(v) / f).st_ino
            for f in ("posts", "static", *{p.rpartition("/")[0] for p in one if "/" in p})
        }
        for v in (v1, v2, v3)
    }
    changed = {"posts", "posts/article-0007", "posts/article-1500"}
    for folder in inode[v1]:
        if folder not in changed:
            assert inode[v1][folder] == inode[v2][folder] == inode[v3][folder], folder
    assert inode[v1]["posts/article-0007"] != inode[v2]["posts/article-0007"]
    assert inode[v2]["posts/article-0007"] == inode[v3]["posts/article-0007"]
    assert len({inode[v]["posts"] for v in (v1, v2, v3)}) == 3
    assert (lay.release(v1) / "posts").is_symlink()  # the release itself stays a real folder
    assert lay.release(v1).is_dir() and not lay.release(v1).is_symlink()
    _links_stay_inside(lay.releases)
    # the site's whole releases folder (trees and /_v/ metadata too) against one release
    assert _disk(lay.releases) <= 1.2 * single, (_disk(lay.releases), single)


def test_pruning_keeps_what_kept_releases_reach_and_removes_the_rest(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    lay = Layout(root, "acme", "blog")
    versions = []
    for tag in ("one", "two", "three", "four"):
        versions.append(_publish(store, tmp_path, site_files(tag)))
        sync(store, root, keep=2)
        assert (
            _pool(lay)
            == _folders_reached(lay)
            == reachable([lay.release(v) for v in lay.kept()], lay.pool)
        )
    assert lay.kept() == versions[2:]
    for version, tag in zip(versions[2:], ("three", "four"), strict=True):
        assert release_files(lay.release(version)) == site_files(tag)
    shared = os.path.realpath(lay.release(versions[3]) / "static")
    assert shared == os.path.realpath(lay.release(versions[2]) / "static")

    # folders no release reaches: one named but never used, one a prune stopped deleting
    orphan = lay.pool / "0123456789abcdef"
    orphan.mkdir()
    (orphan / "index.html").write_bytes(b"unused")
    (lay.pool / ".gone-fedcba9876543210").mkdir()
    versions.append(_publish(store, tmp_path, site_files("five")))
    (site,) = sync(store, root, keep=2).sites

    assert site.removed == (versions[2],)
    assert _pool(lay) == _folders_reached(lay)
    assert "0123456789abcdef" not in _pool(lay)
    assert os.path.realpath(lay.release(versions[4]) / "static") == shared  # still in use
    assert release_files(lay.current) == site_files("five")
    assert release_files(lay.previous) == site_files("four")

    rollback(store, owner="acme", name="blog", to=versions[0])  # made again, from the pool
    (site,) = sync(store, root, keep=2).sites
    assert (site.served, site.removed) == (versions[0], (versions[3],))
    assert _pool(lay) == _folders_reached(lay)
    assert release_files(lay.current) == site_files("one")
    assert release_files(lay.previous) == site_files("five")


def test_two_syncs_of_one_site_take_turns(store: LocalStore, root: Path, tmp_path: Path) -> None:
    lay = Layout(root, "acme", "blog")
    version = _publish(store, tmp_path, site_files("one"))
    results: list[SiteSync] = []
    with site_lock(lay):  # what a sync of this site holds (the pipeline's, or the daemon's)
        other = threading.Thread(
            target=lambda: results.append(sync_site(store, root, "acme", "blog"))
        )
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive() and not lay.pool.exists()  # waiting: nothing made yet
    other.join(timeout=30)
    assert [(r.outcome, r.served) for r in results] == [(SyncOutcome.switched, version)]


_CRASHING_SYNC = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from render.mirror.sync import sync
    from render.publish.store import LocalStore

    # The fault is put in at the file system's edge: os.rename, in this process only.
    how, store_root, mirror_root = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    rename = os.rename
    staged = []

    def crashing_rename(src, dst, *args, **kwargs):
        into = os.path.basename(os.path.dirname(os.fspath(dst)))
        if how == "kill while staging" and into.startswith(".pool-"):
            staged.append(dst)
            if len(staged) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        if os.path.basename(os.fspath(src)).startswith(".partial-"):  # naming the release
            if how == "kill before the release is named":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "error before the release is named":
                raise OSError(5, "Input/output error", os.fspath(src))
        return rename(src, dst, *args, **kwargs)

    os.rename = crashing_rename
    print(sync(LocalStore(store_root), mirror_root).sites[0].outcome.value)
    """
)


@pytest.mark.parametrize(
    "how",
    [
        "kill before the release is named",
        "error before the release is named",
        "kill while staging",
    ],
)
def test_a_sync_stopped_around_naming_the_pool_is_finished_by_the_next(
    store: LocalStore, root: Path, tmp_path: Path, how: str
) -> None:
    lay = Layout(root, "acme", "blog")
    old = site_files("one")
    v1 = _publish(store, tmp_path, old)
    sync(store, root)
    posts = {f"posts/p{i}/index.html": f"<h1>post {i}</h1>".encode() for i in range(12)}
    new = {**site_files("two"), **posts}
    v2 = _publish(store, tmp_path, new)
    script = tmp_path / "crashing_sync.py"
    script.write_text(_CRASHING_SYNC)

    done = subprocess.run(
        [sys.executable, str(script), how, str(store.root), str(root)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    if how.startswith("kill"):
        assert done.returncode == -9, done.stderr
    else:
        assert (done.returncode, done.stdout) == (0, "failed\n"), done.stderr
    assert lay.served() == v1 and release_files(lay.current) == old
    assert not lay.release(v2).exists()
    named_early = _pool(lay) - _folders_reached(lay)
    if how == "kill while staging":
        assert lay.staging(v2).is_dir() and not named_early  # nothing named yet
    else:
        assert named_early  # the new folders have their names; the release has none

    (site,) = sync(store, root).sites

    assert (site.outcome, site.served) == (SyncOutcome.switched, v2)
    assert release_files(lay.current) == new
    assert release_files(lay.previous) == old
    assert _pool(lay) == _folders_reached(lay)
    assert not [p.name for p in lay.releases.iterdir() if p.name.startswith((".partial", ".pool"))]
    _links_stay_inside(lay.releases)


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({"../escape.html": b"x", "index.html": b"ok"}, "refusing the path '../escape.html'"),
        ({"a/../../escape.html": b"x", "index.html": b"ok"}, "refusing the path"),
        ({"a//b.html": b"x", "index.html": b"ok"}, "refusing the path 'a//b.html'"),
        ({"a": b"x", "a/b.html": b"y"}, "refusing the tree: 'a' is both a file and a folder"),
    ],
)
def test_a_tree_that_escapes_or_clashes_is_refused_and_current_stays(
    store: LocalStore, root: Path, tmp_path: Path, files: dict[str, bytes], error: str
) -> None:
    lay = Layout(root, "acme", "blog")
    v1 = _publish(store, tmp_path, site_files("one"))
    sync(store, root)
    pool_before = _pool(lay)
    _publish(store, tmp_path, files)

    (site,) = sync(store, root).sites

    assert site.outcome is SyncOutcome.failed and error in (site.error or "")
    assert lay.served() == v1 and release_files(lay.current) == site_files("one")
    assert _pool(lay) == pool_before
    assert not (root / "releases/acme/escape.html").exists()
    assert not (lay.releases / "escape.html").exists()


def test_a_tree_naming_the_pools_folder_stays_inside_its_release(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    lay = Layout(root, "acme", "blog")
    files = {
        "index.html": b"home",
        ".d/0123456789abcdef/index.html": b"a page in a folder named like the pool",
        ".pool-x/a.txt": b"and one named like a staging folder",
    }
    version = _publish(store, tmp_path, files)

    (site,) = sync(store, root).sites

    assert site.outcome is SyncOutcome.switched
    assert release_files(lay.release(version)) == files
    assert "0123456789abcdef" not in _pool(lay)  # the site's own pool is not the tree's folder
    assert _pool(lay) == _folders_reached(lay)
    _links_stay_inside(lay.releases)
