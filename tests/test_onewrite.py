"""One write per file: a publish writes its new blobs into the local store once (a few
packs, or one file per blob with ``[store] layout = "loose"``), and ``--out`` and the
embedded mirror share bytes (hard links) instead of writing them again. The guarantees
stay: nothing is named before it is whole and durable, a crash leaves the old version
live, and nothing writes into a shared file in place.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from s3server import make_build

from render.build.objects import Objects
from render.config import HostConfig, SiteConfig, load_host, load_site, site_dirs
from render.demo import init_host
from render.errors import PublishError
from render.pipeline import Options, run_site
from render.publish.manifest import blob_key
from render.publish.packs import StoredBlobs
from render.publish.store import LocalStore
from render.publish.versions import (
    DEFAULT_PACK_LIMIT,
    publish,
    read_root,
    read_tree,
    upload_blobs,
)

REPO = Path(__file__).resolve().parent.parent


def demo(folder: Path) -> tuple[HostConfig, SiteConfig]:
    init_host(folder, demo=True)
    host = load_host(folder / "render.toml")
    return host, load_site(site_dirs(host)[0], host=host)


def _files(tag: str, count: int = 5) -> dict[str, bytes]:
    return {
        f"posts/p{i}/index.html": f"<!doctype html><h1>{tag} {i}</h1>".encode()
        for i in range(count)
    } | {"site.css": b"body{margin:0}"}


def _blob(store: LocalStore, digest: str) -> Path:
    path = store.local_path(blob_key("acme", "blog", digest))
    assert path is not None
    return path


def test_a_blob_the_local_store_has_is_not_written_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    build = make_build(tmp_path / "b", _files("one"))
    blobs = {e.hash: e for e in build.files.values()}
    upload_blobs(
        store, blobs, build.objects, owner="acme", name="blog", concurrency=2, progress=None
    )
    css = _blob(store, build.files["site.css"].hash)
    before = css.stat()
    os.utime(css, (before.st_atime - 3600, before.st_mtime - 3600))  # an hour old
    requests = store.request_count()

    upload_blobs(
        store, blobs, build.objects, owner="acme", name="blog", concurrency=2, progress=None
    )

    after = css.stat()
    assert after.st_ino == before.st_ino  # the same file: not written again
    assert after.st_mtime > before.st_mtime - 60  # but young again, for gc's grace period
    assert store.request_count() - requests == len(blobs)  # one touch each, no write
    assert css.read_bytes() == b"body{margin:0}"


def test_new_blobs_are_read_only_and_their_staging_folder_goes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    pub = publish(
        make_build(tmp_path / "b", _files("one")), store=store, ledger=None, pack_limit=None
    )
    folder = store.root / "sites" / "acme" / "blog" / "blobs"
    assert len(os.listdir(folder)) == pub.uploaded_blobs == 6
    for name in os.listdir(folder):
        assert (folder / name).stat().st_mode & 0o777 == 0o444
    # the next publish's staging folder sits beside blobs/ and is gone once it is done
    publish(make_build(tmp_path / "c", _files("two")), store=store, ledger=None, pack_limit=None)
    assert not [p.name for p in folder.parent.iterdir() if "staging" in p.name]


_CRASH = """
import os, sys
from pathlib import Path
from render.publish.store import LocalStore
from render.publish.versions import publish
from s3server import make_build

class CrashingStore(LocalStore):
    '''A local store whose process dies after writing ``after`` blobs of a batch.'''

    def put_blobs(self, folder, digests, source, **kw):
        written = []

        def dying(digest):
            if len(written) == {after}:
                os._exit(9)
            written.append(digest)
            return source(digest)

        return super().put_blobs(folder, digests, dying, **kw)

    def put(self, key, data, **kw):
        if "/packs/" in key:  # dies half way through writing the pack's temporary file
            target = self.root / key
            target.parent.mkdir(parents=True, exist_ok=True)
            (target.parent / f".{{target.name}}.{{os.getpid()}}.tmp").write_bytes(data[: len(data) // 2])
            os._exit(9)
        return super().put(key, data, **kw)

layout = None if sys.argv[3] == "loose" else 16 << 20
files = {{f"posts/p{{i}}/index.html": f"<!doctype html><h1>two {{i}}</h1>".encode() for i in range(5)}}
store = CrashingStore(Path(sys.argv[1]))
publish(make_build(Path(sys.argv[2]), files), store=store, ledger=None, pack_limit=layout)
"""


@pytest.mark.parametrize("layout", ["loose", "packs"])
def test_a_publish_killed_mid_write_leaves_the_old_version_live_and_a_rerun_completes(
    tmp_path: Path, layout: str
) -> None:
    store = LocalStore(tmp_path / "store")
    limit = None if layout == "loose" else DEFAULT_PACK_LIMIT
    old = publish(
        make_build(tmp_path / "b", _files("one")), store=store, ledger=None, pack_limit=limit
    )
    keys_before = [o.key for o in store.list("sites/")]
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(_CRASH).format(after=3))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    died = subprocess.run(
        [sys.executable, str(script), str(store.root), str(tmp_path / "c"), layout],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.returncode == 9, died.stderr

    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None and root.version == old.version  # the old version is live
    site = store.root / "sites/acme/blog"
    assert [o.key for o in store.list("sites/")] == keys_before  # nothing new has a key
    if layout == "loose":
        (staging,) = [p for p in site.iterdir() if p.name.startswith(".blobs.staging-")]
        assert len(os.listdir(staging)) == 3  # what the dead process wrote, under no key
    else:
        (half,) = [p for p in (site / "packs").iterdir() if p.name.endswith(".tmp")]
        assert half.name.startswith(".")  # a half-written pack, under no key

    files = {
        f"posts/p{i}/index.html": f"<!doctype html><h1>two {i}</h1>".encode() for i in range(5)
    }
    build = make_build(tmp_path / "d", files)
    again = publish(build, store=store, ledger=None, pack_limit=limit)

    assert again.parent == old.version and again.uploaded_blobs == 5
    if layout == "loose":
        assert not staging.exists()  # the dead process's staging folder is removed
    tree = read_tree(store, owner="acme", name="blog", version=again.version)
    blobs = StoredBlobs(store, owner="acme", name="blog", tree=tree)
    for path, entry in build.files.items():
        assert blobs.read(entry.hash) == build.read(path)
    assert bool(tree.packs) == (layout == "packs")


def test_out_and_the_mirror_share_one_write_of_each_file(tmp_path: Path) -> None:
    host, site = demo(tmp_path / "host")
    assert host.mirror.enabled  # the embedded default
    out = tmp_path / "out"
    report = run_site(site, host=host, options=Options(out=out, skip_lighthouse=True))
    assert report.build is not None and report.version is not None
    store = LocalStore(host.store_path)
    owner, name = site.id.owner, site.id.name
    tree = read_tree(store, owner=owner, name=name, version=report.version)
    # the store holds the new version's bytes in a few packs, not a file per page
    assert tree.packs and set(tree.index) == tree.hashes()
    assert not (store.root / "sites" / owner / name / "blobs").exists()
    packs = list((store.root / "sites" / owner / name / "packs").iterdir())
    assert len(packs) == len(tree.packs)
    current = host.mirror_path / "sites" / str(site.id) / "current"
    objects = Objects(report.build.objects)
    for path, entry in report.build.files.items():
        data = (current / path).read_bytes()
        assert (out / path).read_bytes() == data == report.build.read(path)
        shared = (current / path).stat()
        assert shared.st_mode & 0o222 == 0  # read-only: nothing writes into it in place
        assert (out / path).stat().st_ino == shared.st_ino  # one file, two names
        loose = objects.loose(entry.hash)
        if loose is not None:  # the build's own objects are never shared
            assert loose.stat().st_ino != shared.st_ino


def test_out_and_the_mirror_share_the_loose_stores_bytes(tmp_path: Path) -> None:
    host, site = demo(tmp_path / "host")
    config = tmp_path / "host" / "render.toml"
    config.write_text(
        config.read_text().replace('kind = "local"', 'kind = "local"\nlayout = "loose"')
    )
    host = load_host(config)
    out = tmp_path / "out"
    report = run_site(site, host=host, options=Options(out=out, skip_lighthouse=True))
    assert report.build is not None and report.version is not None
    store = LocalStore(host.store_path)
    current = host.mirror_path / "sites" / str(site.id) / "current"
    for path, entry in report.build.files.items():
        blob = _blob_of(store, str(site.id), entry.hash)
        data = blob.read_bytes()
        assert (out / path).read_bytes() == data == report.build.read(path)
        assert (current / path).read_bytes() == data
        shared = blob.stat()
        assert shared.st_mode & 0o222 == 0  # read-only: nothing writes into it in place
        assert (out / path).stat().st_ino == shared.st_ino  # one file, three names
        assert (current / path).stat().st_ino == shared.st_ino


def _blob_of(store: LocalStore, site: str, digest: str) -> Path:
    return store.root / "sites" / site / "blobs" / digest


def test_out_is_the_same_bytes_when_nothing_changed(tmp_path: Path) -> None:
    host, site = demo(tmp_path / "host")
    first, second = tmp_path / "one", tmp_path / "two"
    run_site(site, host=host, options=Options(out=first, skip_lighthouse=True))
    time.sleep(0.01)
    again = run_site(site, host=host, options=Options(out=second, skip_lighthouse=True))
    assert again.publication is not None and again.publication.uploaded_blobs == 0

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert tree(first) == tree(second)


def test_out_is_still_written_when_the_publish_fails(tmp_path: Path) -> None:
    host, site = demo(tmp_path / "host")
    config = tmp_path / "host" / "render.toml"
    config.write_text(config.read_text() + "\n[mirror]\nenabled = false\n")
    config.write_text(
        config.read_text().replace('kind = "local"', 'kind = "local"\npath = "store"')
    )
    (tmp_path / "host" / "store").write_text("a file where the store's folder should be\n")
    host = load_host(config)
    out = tmp_path / "out"
    with pytest.raises(PublishError):
        run_site(site, host=host, options=Options(out=out, skip_lighthouse=True))
    assert (out / "index.html").read_bytes().startswith(b"<!doctype html>")
