"""Packs in the store: the same bytes as loose keys, checked on every read, and a reader
k versions behind catching up with k + 2 GETs (root, the live tree, one range per pack).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faultproxy import FaultProxy
from mirrorkit import publish_files, site_files
from s3server import moto_url, new_bucket, s3_config, s3_env

from render.build.tree import Build, FileEntry, sha256
from render.config import load_host, load_site, site_dirs
from render.demo import init_host
from render.errors import PublishError
from render.mirror.sync import SyncOutcome, sync_site
from render.pipeline import Options, run_site
from render.publish.manifest import pack_key
from render.publish.packs import StoredBlobs, split
from render.publish.store import LocalStore, S3Store
from render.publish.versions import publish_tree, read_tree
from render.serve.live import LiveSites

__all__ = ["moto_url", "s3_env"]  # fixtures


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    folder = tmp_path_factory.mktemp("demo")
    init_host(folder, demo=True)
    host = load_host(folder / "render.toml")
    site = load_site(site_dirs(host)[0], host=host)
    report = run_site(site, host=host, options=Options(skip_lighthouse=True))
    assert report.build is not None
    return report.build


def _publish(build: Build, store: LocalStore | S3Store, limit: int | None) -> str:
    return publish_tree(
        build.files,
        build.objects,
        owner="acme",
        name="demo",
        base_url="http://demo.test/",
        store=store,
        ledger=None,
        pack_limit=limit,
    ).version


def test_pack_reads_equal_loose_reads_for_every_file_of_the_demo(
    demo_build: Build, tmp_path: Path
) -> None:
    loose, packed = LocalStore(tmp_path / "loose"), LocalStore(tmp_path / "packed")
    v_loose = _publish(demo_build, loose, None)
    v_packed = _publish(demo_build, packed, 64 << 10)  # small packs: the demo spans several
    tree_loose = read_tree(loose, owner="acme", name="demo", version=v_loose)
    tree_packed = read_tree(packed, owner="acme", name="demo", version=v_packed)
    assert tree_loose.files == tree_packed.files and not tree_loose.packs
    assert len(tree_packed.packs) > 1 and set(tree_packed.index) == tree_packed.hashes()
    by_loose = StoredBlobs(loose, owner="acme", name="demo", tree=tree_loose)
    by_pack = StoredBlobs(packed, owner="acme", name="demo", tree=tree_packed)
    for path, entry in demo_build.files.items():  # one ranged read each
        assert by_pack.read(entry.hash) == by_loose.read(entry.hash) == demo_build.read(path)
    fetched: dict[str, bytes] = {}
    requests = packed.request_count()
    by_pack.fetch(sorted(tree_packed.hashes()), fetched.__setitem__, concurrency=4)
    # the whole tree in one request per pack: its ranges lie back to back
    assert packed.request_count() - requests == len(tree_packed.packs)
    assert fetched == {e.hash: demo_build.read(p) for p, e in demo_build.files.items()}
    sites = LiveSites(packed, cache=tmp_path / "cache")
    for path in ("", "robots.txt", "sitemap.xml"):
        answer = sites("demo.test", f"/{path}")
        assert answer.status == 200
        assert answer.body == demo_build.read(path or "index.html")


def test_a_corrupt_pack_is_refused_by_every_reader_and_never_served(
    demo_build: Build, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    version = _publish(demo_build, store, 16 << 20)
    tree = read_tree(store, owner="acme", name="demo", version=version)
    entry = demo_build.files["index.html"]
    pack_id, offset = tree.locate(entry.hash) or ("", 0)
    pack = store.root / pack_key("acme", "demo", pack_id)
    body = bytearray(pack.read_bytes())
    body[offset + 10] ^= 0x20  # one bit of the home page flips on disk
    pack.chmod(0o644)
    pack.write_bytes(bytes(body))

    with pytest.raises(
        PublishError, match=f"blob {entry.hash} at offset {offset} does not match its hash"
    ):
        StoredBlobs(store, owner="acme", name="demo", tree=tree).read(entry.hash)
    answer = LiveSites(store, cache=tmp_path / "cache")("demo.test", "/")
    assert answer.status == 503 and bytes(body[offset : offset + entry.size]) not in answer.body
    assert not list((tmp_path / "cache").rglob(entry.hash))  # nothing bad was kept either

    pack.write_bytes(bytes(body[: offset + 5]))  # truncated inside the page
    with pytest.raises(PublishError, match=rf"\(5 of {entry.size} bytes read\)"):
        StoredBlobs(store, owner="acme", name="demo", tree=tree).read(entry.hash)


def test_a_blob_larger_than_the_limit_gets_a_pack_of_its_own() -> None:
    def entry(size: int) -> FileEntry:
        return FileEntry(hash=sha256(str(size).encode()), size=size, type="text/html")

    blobs = {str(n): entry(n) for n in (40, 30, 100, 20, 50)}
    assert split(blobs, limit=64) == [["40"], ["30"], ["100"], ["20"], ["50"]]
    assert split(blobs, limit=80) == [["40", "30"], ["100"], ["20", "50"]]


@pytest.mark.parametrize("behind", [1, 10])
def test_a_mirror_k_versions_behind_catches_up_with_k_plus_2_gets(
    moto_url: str, tmp_path: Path, behind: int
) -> None:
    bucket = new_bucket(moto_url)
    files = site_files("one") | {
        f"posts/p{i}/index.html": f"<h1>{i}</h1>".encode() for i in range(50)
    }
    with FaultProxy(moto_url).running() as proxy:
        store = S3Store(s3_config(proxy.url, bucket))
        try:
            publish_files(store, files, objects=tmp_path / "objects")  # type: ignore[arg-type]
            mirror = tmp_path / "mirror"
            assert sync_site(store, mirror, "acme", "blog").outcome is SyncOutcome.switched
            for n in range(behind):  # one article edited per version
                files = files | {f"posts/p{n % 3}/index.html": f"<h1>edit {n}</h1>".encode()}
                last = publish_files(store, files, objects=tmp_path / "objects")  # type: ignore[arg-type]
            mark = proxy.mark()

            caught = sync_site(store, mirror, "acme", "blog")

            assert caught.outcome is SyncOutcome.switched and caught.served == last
            sent = [(e.method, e.path.rsplit("/", 2)[-2]) for e in proxy.entries(mark)]
            assert all(method == "GET" for method, _ in sent)
            # root.json, the live tree, and one range of each pack holding a page it lacks
            # (the versions behind that edited a page no later version edited again); further
            # behind than one, the delta from the live version's parent too (for /_v/ readers)
            assert len(sent) == 2 + min(behind, 3) + (behind > 1) <= behind + 2
            assert sent[:2] == [("GET", "blog"), ("GET", "versions")]
            current = mirror / "sites/acme/blog/current"
            assert {p: (current / p).read_bytes() for p in files} == files
        finally:
            store.close()
