"""gc repacking the live version: when it does, what readers and writers around it see.

A site whose every version edits one page adds one pack a publish; past
``REPACK_SLACK`` packs over the fewest its bytes fill, gc writes the live
version's blobs into new packs and makes a version with the same files live.
Interleavings are stepped through ``gckit.Hooked`` on real stores (a local
folder; moto's S3 server where the store's behaviour matters), and
``gc(now=LATER)`` makes everything old enough to delete, so only the lease and
the repack's own rules protect a reader or a writer.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from gckit import Hooked, RootReads, assert_whole, in_thread, store
from s3server import make_build, moto_url, s3_env, site_files

from render.errors import ConflictError
from render.publish.gc import gc
from render.publish.history import list_versions, rollback, version_ids
from render.publish.manifest import Root, delta_key, root_key
from render.publish.packs import StoredBlobs
from render.publish.repack import REPACK_SLACK
from render.publish.store import LocalStore, Store
from render.publish.versions import Publication, publish, read_root, read_tree, switch_root

__all__ = ["moto_url", "s3_env", "store"]

LATER = time.time() + 72 * 3600  # gc's clock: every blob, pack and tree looks three days old
SPREAD = REPACK_SLACK + 2  # packs of a site published once and edited SPREAD - 1 times


def edits(count: int) -> dict[str, bytes]:
    """The site after ``count`` edits: edit k changed post k, so each adds one blob still live."""
    files = site_files(SPREAD + 2)
    for k in range(count):
        files[f"posts/p{k}/index.html"] = f"<!doctype html><title>Post {k}, edit</title>".encode()
    return files


def spread(store: Store, tmp_path: Path, versions: int = SPREAD) -> list[str]:
    """Publish the site, then edit it: ``versions`` versions, the live one in that many packs."""
    return [
        publish(make_build(tmp_path / f"e{k}", edits(k)), store=store, ledger=None).version
        for k in range(versions)
    ]


def live(store: Store) -> Root:
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None
    return root


def packs_in(store: Store) -> set[str]:
    return {
        o.key.rsplit("/", 1)[1].removesuffix(".pack") for o in store.list("sites/acme/blog/packs/")
    }


def age_everything(store: LocalStore, hours: float = 72) -> None:
    past = time.time() - hours * 3600
    for o in store.list("sites/"):
        os.utime(store.root / o.key, (past, past))


def test_gc_repacks_the_live_version_once_its_packs_pass_the_bound(
    store: Store, tmp_path: Path
) -> None:
    old = spread(store, tmp_path, SPREAD - 1)  # REPACK_SLACK + 1 packs: the fewest (1) + slack
    assert len(read_tree(store, owner="acme", name="blog", version=old[-1]).packs) == SPREAD - 1
    assert gc(store, owner="acme", name="blog", keep=1).repack is None
    v = publish(make_build(tmp_path / "last", edits(SPREAD - 1)), store=store, ledger=None).version
    before = live(store)
    dry = gc(store, owner="acme", name="blog", keep=1, dry_run=True)
    assert dry.repack is not None and (dry.repack.of, dry.repack.version) == (v, None)
    assert live(store).version == v

    report = gc(store, owner="acme", name="blog", keep=1)
    made = report.repack
    assert made is not None and made.version is not None
    assert (made.of, made.before, made.after) == (v, SPREAD, 1)
    root = live(store)
    assert (root.version, root.previous, root.files_hash) == (made.version, v, before.files_hash)
    old_tree = read_tree(store, owner="acme", name="blog", version=v)
    tree = read_tree(store, owner="acme", name="blog", version=made.version)
    assert (tree.repack_of, tree.parent, dict(tree.files)) == (v, v, dict(old_tree.files))
    assert len(tree.packs) == 1 and assert_whole(store) == made.version
    # nothing to fetch for a client on the old version, and nothing the old version needs went
    delta = json.loads(store.get(delta_key("acme", "blog", made.version, v)) or b"")
    assert (delta["added"], delta["changed"], delta["removed"]) == ({}, {}, [])
    assert set(old_tree.packs) <= packs_in(store) and assert_whole(store, v) == v
    # not a content change: the same build publishes nothing, rollback goes past it
    again = publish(make_build(tmp_path / "same", edits(SPREAD - 1)), store=store, ledger=None)
    assert again.version == made.version and again.uploaded_blobs == 0
    infos = {i.version: i for i in list_versions(store, owner="acme", name="blog")}
    assert (infos[made.version].repack_of, infos[made.version].new_blobs) == (v, 0)
    assert rollback(store, owner="acme", name="blog").version == old[-1]


def test_a_reader_mid_sync_on_the_repacked_version_reads_it_whole_until_the_grace_ends(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    versions = spread(store, tmp_path)
    v = versions[-1]
    age_everything(store)  # only the repack, made below, is younger than the grace period
    reader = StoredBlobs(
        store,
        owner="acme",
        name="blog",
        tree=read_tree(store, owner="acme", name="blog", version=v),
    )
    digests = sorted(reader.tree.hashes())
    first, rest = digests[: len(digests) // 2], digests[len(digests) // 2 :]
    assert all(reader.read(d) is not None for d in first)  # the reader has synced half

    repacking = gc(store, owner="acme", name="blog", keep=1)
    assert repacking.repack is not None and repacking.repack.of == v
    assert repacking.removed_versions == tuple(reversed(versions[:-1]))
    within_grace = gc(store, owner="acme", name="blog", keep=1)  # the repack is young: v stays
    assert within_grace.kept == (live(store).version, v) and within_grace.removed_packs == 0
    assert all(reader.read(d) is not None for d in rest)  # the reader finishes on v

    after_grace = gc(store, owner="acme", name="blog", keep=1, now=LATER)
    assert after_grace.removed_versions == (v,) and after_grace.removed_packs == SPREAD
    assert packs_in(store) == set(
        read_tree(store, owner="acme", name="blog", version=live(store).version).packs
    )
    assert reader.read(rest[0]) is None  # what the grace kept for it is gone now
    assert assert_whole(store) == live(store).version


def test_a_publish_that_read_the_root_before_a_repacking_gc_goes_on_top_of_the_repack(
    store: Store, tmp_path: Path
) -> None:
    versions = spread(store, tmp_path)
    reports: list[object] = []

    def gc_whole() -> None:  # the publish read the root and put its pack; gc runs start to end
        reports.append(gc(store, owner="acme", name="blog", keep=1, now=LATER))

    publisher = Hooked(store, method="put", part="/packs/", hook=gc_whole, when="after")
    files = edits(SPREAD) | {"posts/new/index.html": b"<!doctype html><title>New</title>"}
    pub = publish(make_build(tmp_path / "new", files), store=publisher, ledger=None)  # type: ignore[arg-type]

    (report,) = reports
    made = report.repack  # type: ignore[attr-defined]
    assert made is not None and made.of == versions[-1]
    # gc took the publish's pack (no tree named it, and it looked old); the publish lost its
    # switch, waited, put the pack back from its build and went live on top of the repack
    assert report.removed_packs == 1  # type: ignore[attr-defined]
    assert pub.parent == versions[-1] and live(store).version == pub.version
    # (made in one second, the publish's id and the repack's sort either way)
    assert set(version_ids(store, owner="acme", name="blog")) == {
        pub.version,
        made.version,
        versions[-1],
    }
    assert assert_whole(store) == pub.version


def test_a_publish_that_starts_while_gc_repacks_waits_and_builds_on_the_repack(
    store: Store, tmp_path: Path
) -> None:
    spread(store, tmp_path)
    waiting_or_done = threading.Event()
    watched = RootReads(store, waiting_or_done)
    runs: list[tuple[threading.Thread, list[object]]] = []
    files = edits(SPREAD)

    def publish_now() -> None:  # gc holds its lease and is writing the repacked version
        runs.append(
            in_thread(
                lambda: publish(make_build(tmp_path / "new", files), store=watched, ledger=None),  # type: ignore[arg-type]
                waiting_or_done,
            )
        )
        assert waiting_or_done.wait(30)
        assert runs[0][1] == [], "the publish went on while gc held its lease"

    gc_store = Hooked(store, method="put", part="/versions/", hook=publish_now)
    report = gc(gc_store, owner="acme", name="blog", keep=1, now=LATER)  # type: ignore[arg-type]
    made = report.repack
    assert made is not None and made.version is not None
    thread, out = runs[0]
    thread.join(30)
    (pub,) = out
    assert isinstance(pub, Publication), pub
    assert pub.parent == made.version and pub.uploaded_blobs == 1
    tree = read_tree(store, owner="acme", name="blog", version=pub.version)
    repacked = read_tree(store, owner="acme", name="blog", version=made.version)
    assert set(repacked.packs) < set(tree.packs) and len(tree.packs) == 2
    assert assert_whole(store) == pub.version


def test_a_repack_loses_to_a_writer_that_switched_the_root_meanwhile(tmp_path: Path) -> None:
    # a writer that ignores gc's lease (an older render on another host) rolls back meanwhile
    store = LocalStore(tmp_path / "store")
    versions = spread(store, tmp_path)

    def old_style_rollback() -> None:
        raw = store.get_tagged(root_key("acme", "blog"))
        assert raw is not None
        root = Root.from_bytes(raw[0], key="root")
        back = Root(
            version=versions[-2],
            site=root.site,
            base_url=root.base_url,
            previous=root.version,
            published=root.published,
        )
        switch_root(store, owner="acme", name="blog", root=back, tag=raw[1])

    gc_store = Hooked(store, method="put", part="/versions/", hook=old_style_rollback)
    with pytest.raises(ConflictError) as caught:
        gc(gc_store, owner="acme", name="blog", keep=2, now=LATER)  # type: ignore[arg-type]
    assert caught.value.headline() == (
        f"acme/blog: publish: root.json changed while gc repacked {versions[-1]}"
        f" ({versions[-2]} is live); the repack was dropped"
    )
    assert version_ids(store, owner="acme", name="blog") == [versions[-1], versions[-2]]
    assert live(store).version == versions[-2] and assert_whole(store) == versions[-2]
    assert assert_whole(store, versions[-1]) == versions[-1]


def test_cli_gc_says_what_it_repacked_and_versions_shows_it(tmp_path: Path) -> None:
    from render.cli.publish import gc_command, versions

    (tmp_path / "render.toml").write_text('[store]\npath = "bucket"\n')
    site = tmp_path / "sites" / "acme" / "blog"
    site.mkdir(parents=True)
    (site / "site.toml").write_text('[site]\nbase_url = "https://blog.example.com"\n')
    store = LocalStore(tmp_path / "bucket")
    v = spread(store, tmp_path / "w")[-1]
    config = ["--config", str(tmp_path / "render.toml")]
    runner = CliRunner()
    dry = runner.invoke(gc_command, [*config, "--keep", "20", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[1] == (
        f"acme/blog: would repack {v}: 1 packs instead of {SPREAD} objects"
    )
    result = runner.invoke(gc_command, [*config, "--keep", "20"])
    assert result.exit_code == 0, result.output
    made = live(store).version
    assert result.output.splitlines()[1] == (
        f"acme/blog: repacked {v} as {made}: 1 packs instead of {SPREAD} objects"
    )
    listed = runner.invoke(versions, [*config, "acme/blog"])
    rows = [line.split() for line in listed.output.splitlines()[2:]]
    assert rows[0][0] == made and rows[0][-2:] == ["live", v]
    assert rows[1][0] == v and rows[1][-1] == "1"  # its new blobs: the one edited page
