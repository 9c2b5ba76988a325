"""The store and the embedded mirror put right: a mirror left behind, a corrupt or lost blob."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from gckit import assert_whole, store
from s3server import admin_client, make_build, moto_url, new_bucket, s3_config, s3_env, site_files
from sitekit import Host, SiteSpec, html, make_host

from render.build.tree import Build
from render.errors import MirrorError, PublishError
from render.mirror.sync import SyncOutcome, sync_site
from render.publish.manifest import VersionTree, files_digest
from render.publish.packs import StoredBlobs
from render.publish.repair import repair
from render.publish.store import LocalStore, S3Store, Store, open_store
from render.publish.versions import DEFAULT_PACK_LIMIT, publish, read_root, read_tree

__all__ = ["moto_url", "s3_env", "store"]

SITE = "acme/blog"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    yield make_host(
        tmp_path,
        sites={
            SITE: SiteSpec(
                templates={"index.html": html("<p>first</p>")},
                static={"logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n'},
            )
        },
    )


def served(host: Host) -> str:
    return os.path.basename(os.readlink(host.config.mirror_path / "sites" / SITE / "current"))


def live(host: Host) -> str:
    store = open_store(host.config)
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None
    return root.version


def lines(output: str) -> list[str]:
    """The CLI's lines, without the blank one the progress bar leaves."""
    return [line for line in output.splitlines() if line]


def edit(host: Host, text: str) -> None:
    (host.site_dir(SITE) / "templates" / "index.html").write_text(html(f"<p>{text}</p>"))


@pytest.mark.parametrize("stop", ["crash after the root switch", "mirror sync failed"])
def test_build_catches_the_mirror_up_when_nothing_changed(host: Host, stop: str) -> None:
    first = host.run(SITE).version
    assert first is not None and served(host) == first
    edit(host, "second")
    incoming = host.config.mirror_path / "releases" / SITE / ".incoming"
    if stop == "crash after the root switch":
        second = host.run(SITE, force=False).version
        # the state a crash right after the root switch leaves: the mirror still on the first
        current = host.config.mirror_path / "sites" / SITE / "current"
        os.symlink(f"../../../releases/{SITE}/{first}", current.with_name("back"))
        os.replace(current.with_name("back"), current)
    else:
        incoming.write_text("in the way")  # the mirror cannot make its download folder
        with pytest.raises(MirrorError, match="the mirror folder did not switch"):
            host.run(SITE, force=False)
        incoming.unlink()
        second = live(host)
    assert second != first and served(host) == first
    result = host.cli("build", SITE)
    assert result.exit_code == 0, result.output
    assert lines(result.output) == [
        f"{SITE}: unchanged since the last publish (render force {SITE} to rebuild)",
        f"{SITE}: the mirror folder was behind the store; it now serves {second}",
    ]
    assert served(host) == second
    again = host.cli("build", SITE)
    assert lines(again.output) == [
        f"{SITE}: unchanged since the last publish (render force {SITE} to rebuild)"
    ]


# --- render repair -------------------------------------------------------------

LAYOUTS = {"packs": "", "loose": '[store]\nlayout = "loose"\n'}


def stored_at(host: Host, path: str) -> tuple[Path, int, int]:
    """The local store's file holding the live version's ``path``: (file, offset, size)."""
    store = open_store(host.config)
    tree = read_tree(store, owner="acme", name="blog", version=live(host))
    entry = tree.files[path]
    where = tree.locate(entry.hash)
    folder = host.config.store_path / "sites" / SITE
    if where is None:
        return folder / "blobs" / entry.hash, 0, entry.size
    return folder / "packs" / f"{where[0]}.pack", where[1], entry.size


def rot(file: Path, offset: int, size: int) -> None:
    """Bytes that rotted in place: ``size`` bytes from ``offset`` overwritten."""
    file.chmod(0o644)  # the store's blobs are read-only; rot does not ask
    data = bytearray(file.read_bytes())
    data[offset : offset + size] = b"#" * size
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("problem", ["corrupt", "missing"])
def test_repair_uploads_again_what_the_mirror_refused(
    tmp_path: Path, problem: str, layout: str
) -> None:
    host = make_host(
        tmp_path,
        sites={
            SITE: SiteSpec(
                templates={"index.html": html("<p>first</p>")},
                static={"logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n'},
            )
        },
        extra_toml=LAYOUTS[layout],
    )
    version = host.run(SITE).version
    tree = read_tree(open_store(host.config), owner="acme", name="blog", version=live(host))
    blobs = len(tree.hashes())
    file, offset, size = stored_at(host, "logo.svg")
    good = file.read_bytes()
    if problem == "corrupt":
        rot(file, offset, size)
    else:
        file.unlink()  # packed, the first publish's one pack: every blob is gone with it
    elsewhere = tmp_path / "mirror-host"
    refused = host.cli("mirror", "sync", "--once", "--root", str(elsewhere))
    assert refused.exit_code == 1
    reason = "does not match its hash" if problem == "corrupt" else "is missing from"
    assert reason in refused.output and f"run 'render repair {SITE}'" in refused.output
    # a publish trusts what the live version names: it never uploads that blob again
    assert lines(host.cli("force", SITE).output)[-1] == f"{SITE}: no change; {version} stays live"
    assert not file.exists() or file.read_bytes() != good

    result = host.cli("repair", SITE)
    assert result.exit_code == 0, result.output
    if layout == "loose":
        bad = [("logo.svg", "uploaded again")]
    else:
        pack = f"its pack {file.name[:12]} put back"
        first = {e.hash: p for p, e in sorted(tree.files.items(), reverse=True)}
        gone = sorted(first.values()) if problem == "missing" else ["logo.svg"]
        bad = [(p, pack) for p in gone]
    assert lines(result.output) == [
        *(f"{SITE}: {p}: blob {tree.files[p].hash[:12]} was {problem}; {did}" for p, did in bad),
        f"{SITE}: checked {blobs} blobs of {version}; {len(bad)} uploaded again",
    ]
    assert file.read_bytes() == good
    synced = host.cli("mirror", "sync", "--once", "--root", str(elsewhere))
    assert synced.exit_code == 0, synced.output
    assert (elsewhere / "sites" / SITE / "current" / "logo.svg").read_bytes() == good[
        offset : offset + size
    ]
    again = host.cli("repair", SITE)
    assert lines(again.output) == [f"{SITE}: checked {blobs} blobs of {version}; 0 uploaded again"]


def test_repair_of_a_pack_without_a_mirror(tmp_path: Path) -> None:
    """The CLI's lines for a pack put back (the host syncs no mirror, so only the store counts)."""
    host = make_host(
        tmp_path,
        sites={SITE: SiteSpec(static={"logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n'})},
        extra_toml="[mirror]\nenabled = false\n",
    )
    version = host.run(SITE).version
    tree = read_tree(open_store(host.config), owner="acme", name="blog", version=live(host))
    file, offset, size = stored_at(host, "logo.svg")
    good = file.read_bytes()
    rot(file, offset, size)
    result = host.cli("repair", SITE)
    assert result.exit_code == 0, result.output
    assert lines(result.output) == [
        f"{SITE}: logo.svg: blob {tree.files['logo.svg'].hash[:12]} was corrupt;"
        f" its pack {file.name[:12]} put back",
        f"{SITE}: checked {len(tree.hashes())} blobs of {version}; 1 uploaded again",
    ]
    assert file.read_bytes() == good


@pytest.mark.parametrize("layout", [DEFAULT_PACK_LIMIT, None], ids=["packs", "loose"])
def test_repair_names_what_the_last_build_does_not_hold(tmp_path: Path, layout: int | None) -> None:
    store = LocalStore(tmp_path / "store")
    build = make_build(tmp_path / "b", site_files(2))
    pub = publish(build, store=store, ledger=None, pack_limit=layout)
    tree = read_tree(store, owner="acme", name="blog", version=pub.version)
    broken = {p: build.files[p].hash for p in ("posts/p0/index.html", "posts/p1/index.html")}
    for digest in broken.values():
        where = tree.locate(digest)
        if where is None:
            rot(store.root / "sites" / SITE / "blobs" / digest, 0, tree.sizes[digest])
        else:
            rot(
                store.root / "sites" / SITE / "packs" / f"{where[0]}.pack",
                where[1],
                tree.sizes[digest],
            )
    (build.objects / broken["posts/p1/index.html"]).unlink()  # the build lost one of them
    with pytest.raises(PublishError) as caught:
        repair(store, owner="acme", name="blog", objects=build.objects, scratch=tmp_path / "s")
    if layout is None:
        named = "posts/p1/index.html (corrupt)"
    else:  # both are in the one pack: it is put back whole or not at all
        named = (
            f"posts/p1/index.html (corrupt, in sites/{SITE}/packs/{tree.packs[0]}.pack);"
            " 1 packs are left as they were"
        )
    assert caught.value.headline() == (
        f"{SITE}: publish: 1 of the 2 missing or corrupt blobs of the live version {pub.version}"
        f" are not in this host's last build: {named}"
    )
    assert caught.value.hint == (
        "'render force SITE' builds every file again; then run 'render repair SITE' again"
    )
    p0 = StoredBlobs(store, owner="acme", name="blog", tree=tree)
    if layout is None:
        assert p0.read(broken["posts/p0/index.html"]) == build.read("posts/p0/index.html")
    else:
        with pytest.raises(PublishError, match="is corrupt"):
            p0.read(broken["posts/p0/index.html"])
    assert not (tmp_path / "s").exists()


def pack_bytes(store: Store, pack: str) -> bytes | None:
    return store.get(f"sites/{SITE}/packs/{pack}.pack")


def two_versions(store: Store, tmp_path: Path) -> tuple[Build, VersionTree]:
    """v1, then v2 with its home page edited: v1's pack holds v1's home page, which v2 lacks."""
    publish(make_build(tmp_path / "v1", site_files(3)), store=store, ledger=None)
    files = site_files(3) | {"index.html": b"<!doctype html><title>Home</title><h1>Home 2</h1>"}
    build = make_build(tmp_path / "v2", files)
    pub = publish(build, store=store, ledger=None)
    return build, read_tree(store, owner="acme", name="blog", version=pub.version)


@pytest.mark.parametrize("problem", ["corrupt", "missing"])
def test_repair_puts_a_pack_back_byte_for_byte(store: Store, tmp_path: Path, problem: str) -> None:
    build, tree = two_versions(store, tmp_path)
    home = tree.files["index.html"].hash
    where = tree.locate(home)
    assert where is not None
    pack = where[0]  # v2's own pack: the new home page alone
    good = pack_bytes(store, pack)
    assert good is not None
    key = f"sites/{SITE}/packs/{pack}.pack"
    if problem == "corrupt":
        store.put(key, b"#" * len(good), content_type="application/octet-stream", cache_control="x")
    else:
        store.delete([key])
    done = repair(store, owner="acme", name="blog", objects=build.objects, scratch=tmp_path / "s")
    assert [(b.path, b.problem, b.pack) for b in done.repaired] == [("index.html", problem, pack)]
    assert (done.version, done.repacked, done.checked) == (tree.version, None, 6)
    assert pack_bytes(store, pack) == good
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None and root.version == tree.version
    assert assert_whole(store) == tree.version
    assert not (tmp_path / "s").exists()


def test_repair_makes_a_new_version_when_a_lost_pack_held_older_blobs(
    store: Store, tmp_path: Path
) -> None:
    build, tree = two_versions(store, tmp_path)
    first = tree.locate(tree.files["404.html"].hash)
    assert first is not None and len(tree.packs) == 2
    store.delete([f"sites/{SITE}/packs/{first[0]}.pack"])  # v1's: it also held v1's home page
    done = repair(store, owner="acme", name="blog", objects=build.objects, scratch=tmp_path / "s")
    assert sorted(b.path for b in done.repaired) == [
        "404.html",
        "posts/p0/index.html",
        "posts/p1/index.html",
        "posts/p2/index.html",
        "static/site.css",
    ]
    assert done.repacked is not None and done.version == tree.version
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None and root.version == done.repacked
    new = read_tree(store, owner="acme", name="blog", version=done.repacked)
    assert (new.repack_of, dict(new.files)) == (tree.version, dict(tree.files))
    assert root.files_hash == files_digest(tree.files) and len(new.packs) == 1
    assert pack_bytes(store, first[0]) is None  # never written with bytes that are not its own
    assert assert_whole(store) == done.repacked
    again = repair(store, owner="acme", name="blog", objects=build.objects, scratch=tmp_path / "s")
    assert (again.version, again.repaired, again.repacked) == (done.repacked, (), None)


@pytest.mark.parametrize("layout", [DEFAULT_PACK_LIMIT, None], ids=["packs", "loose"])
def test_repair_on_s3(moto_url: str, tmp_path: Path, layout: int | None) -> None:
    bucket = new_bucket(moto_url)
    store = S3Store(s3_config(moto_url, bucket))
    build = make_build(tmp_path / "b", site_files(3))
    pub = publish(build, store=store, ledger=None, pack_limit=layout)
    tree = read_tree(store, owner="acme", name="blog", version=pub.version)
    digest = build.files["static/site.css"].hash
    where = tree.locate(digest)
    if where is None:
        key, body = f"sites/{SITE}/blobs/{digest}", b"rot"
    else:
        key = f"sites/{SITE}/packs/{where[0]}.pack"
        whole = bytearray(store.get(key) or b"")
        whole[where[1] : where[1] + tree.sizes[digest]] = b"#" * tree.sizes[digest]
        body = bytes(whole)
    admin_client(moto_url).put_object(Bucket=bucket, Key=key, Body=body)  # type: ignore[attr-defined]
    before = sync_site(store, tmp_path / "mirror", "acme", "blog")
    assert before.outcome is SyncOutcome.refused and "does not match its hash" in (
        before.error or ""
    )
    done = repair(
        store, owner="acme", name="blog", objects=build.objects, scratch=tmp_path / "scratch"
    )
    assert [(b.path, b.problem) for b in done.repaired] == [("static/site.css", "corrupt")]
    assert done.checked == 6 and not (tmp_path / "scratch").exists()
    after = sync_site(store, tmp_path / "mirror", "acme", "blog")
    assert after.outcome is SyncOutcome.switched, after.error
    store.close()


def test_repair_points_a_lagging_host_claim_at_the_live_version(host: Host) -> None:
    """A crash between a root switch and the claim's pointer write: the edge serves the version
    before (whole) until ``render repair`` points the claim again."""
    first = host.run(SITE).version
    claim = host.config.store_path / "hosts" / "example.com.json"
    lagging = claim.read_bytes()
    assert json.loads(lagging)["live"]["version"] == first
    edit(host, "second")
    second = host.run(SITE).version
    assert second is not None and second != first
    claim.write_bytes(lagging)  # as the crash left it
    store = open_store(host.config)
    blobs = len(read_tree(store, owner="acme", name="blog", version=second).hashes())
    result = host.cli("repair", SITE)
    assert result.exit_code == 0, result.output
    assert lines(result.output) == [
        f"{SITE}: hosts/example.com.json now points the edge at {second}",
        f"{SITE}: checked {blobs} blobs of {second}; 0 uploaded again",
    ]
    assert json.loads(claim.read_bytes())["live"]["version"] == second
    again = host.cli("repair", SITE)
    assert lines(again.output) == [f"{SITE}: checked {blobs} blobs of {second}; 0 uploaded again"]
