"""The build's objects folder: loose files and packs read the same, and it stays one tree's size."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from test_build import build_once, demo

from render.build import renderer
from render.build.objects import PACKS, Objects, PackWriter, sha256
from render.build.record import build_dir
from render.pipeline import Options, run_site


def blobs(count: int, tag: str) -> dict[str, bytes]:
    datas = [f"<p>{tag} {i}</p>".encode() * (i % 7 + 1) for i in range(count)]
    return {sha256(d): d for d in datas}


def fill_pack(folder: Path, objects: dict[str, bytes]) -> str:
    """A pack as a render process writes it, indexed as the build's parent does."""
    writer = PackWriter(folder)
    entries = [(d, writer.add(data, d), len(data)) for d, data in objects.items()]
    writer.close()
    Objects(folder).index_packs({writer.name: entries})
    return writer.name


def pack_files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder / PACKS)) if (folder / PACKS).exists() else []


def test_packed_and_loose_objects_read_the_same(tmp_path: Path) -> None:
    packed = blobs(50, "packed")
    fill_pack(tmp_path, packed)
    store = Objects(tmp_path)
    loose = store.write(b"a loose file")
    assert store.read(loose) == b"a loose file"
    assert store.hashes() == set(packed) | {loose}
    for digest, data in packed.items():
        assert store.has(digest)
        assert store.read(digest) == data
        assert store.loose(digest) is None
    assert not store.has("0" * 64)


def test_an_object_written_twice_to_a_pack_is_stored_once(tmp_path: Path) -> None:
    writer = PackWriter(tmp_path)
    data = b"<p>same</p>"
    first = writer.add(data, sha256(data))
    assert writer.add(b"<p>other</p>", sha256(b"<p>other</p>")) == len(data)
    assert writer.add(data, sha256(data)) == first
    writer.close()
    assert (tmp_path / PACKS / writer.name).stat().st_size == len(data) + len(b"<p>other</p>")


def test_a_pack_without_its_index_is_never_read_and_is_pruned(tmp_path: Path) -> None:
    """What a build killed before its parent indexed the packs leaves behind."""
    writer = PackWriter(tmp_path)
    orphan = b"<p>never indexed</p>"
    writer.add(orphan, sha256(orphan))
    writer.close()
    store = Objects(tmp_path)
    assert not store.has(sha256(orphan))
    store.prune(set())
    assert pack_files(tmp_path) == []


def test_a_damaged_index_disables_its_pack_and_prune_removes_both(tmp_path: Path) -> None:
    packed = blobs(10, "x")
    name = fill_pack(tmp_path, packed)
    index = tmp_path / PACKS / f"{name[: -len('.pack')]}.idx"
    index.write_bytes(index.read_bytes()[:-5])  # cut short
    store = Objects(tmp_path)
    assert not any(store.has(d) for d in packed)
    store.prune(set(packed))
    assert pack_files(tmp_path) == []


def test_a_pack_cut_short_loses_only_the_objects_past_the_cut(tmp_path: Path) -> None:
    objects = blobs(30, "cut")
    name = fill_pack(tmp_path, objects)
    pack = tmp_path / PACKS / name
    with open(pack, "r+b") as fh:
        fh.truncate(pack.stat().st_size // 2)  # a disk that lost the pack's tail
    store = Objects(tmp_path)
    whole = {d for d, data in objects.items() if _fits(store, d)}
    assert 0 < len(whole) < len(objects)
    for digest in set(objects) - whole:
        with pytest.raises(FileNotFoundError):
            store.read(digest)
    first_two, last = list(objects)[:2], list(objects)[-1]
    assert set(first_two) <= whole and last not in whole
    store.prune({*first_two, last})  # most of it dead: rewritten, without the cut object
    after = Objects(tmp_path)
    assert after.hashes() == set(first_two)
    for digest in after.hashes():
        assert after.read(digest) == objects[digest]


def _fits(store: Objects, digest: str) -> bool:
    try:
        store.read(digest)
    except FileNotFoundError:
        return False
    return True


def test_prune_drops_dead_packs_and_rewrites_mostly_dead_ones(tmp_path: Path) -> None:
    dead, mostly_dead, alive = blobs(20, "dead"), blobs(40, "old"), blobs(30, "alive")
    fill_pack(tmp_path, dead)
    fill_pack(tmp_path, mostly_dead)
    kept_pack = fill_pack(tmp_path, alive)
    survivors = dict(list(mostly_dead.items())[:5])  # a few pages of an old build stay
    keep = set(alive) | set(survivors)
    Objects(tmp_path).prune(keep)
    store = Objects(tmp_path)
    assert store.hashes() == keep
    for digest, data in (alive | survivors).items():
        assert store.read(digest) == data
    packs = [n for n in pack_files(tmp_path) if n.endswith(".pack")]
    assert kept_pack in packs and len(packs) == 2  # the live pack, and the survivors' new one
    size = sum((tmp_path / PACKS / n).stat().st_size for n in packs)
    assert size == sum(len(d) for d in (alive | survivors).values())


def test_many_small_packs_are_merged(tmp_path: Path) -> None:
    everything: dict[str, bytes] = {}
    for round_ in range(20):
        part = blobs(3, f"round {round_}")
        fill_pack(tmp_path, part)
        everything |= part
    Objects(tmp_path).prune(set(everything))
    store = Objects(tmp_path)
    assert len([n for n in pack_files(tmp_path) if n.endswith(".pack")]) <= 8
    assert {d: store.read(d) for d in everything} == everything


# --- in a build --------------------------------------------------------------


def test_a_full_build_packs_its_pages_and_a_small_rebuild_adds_loose_files(
    tmp_path: Path,
) -> None:
    host, site = demo(tmp_path)
    first = build_once(host, site)
    objects = build_dir(host, site) / "objects"
    assert first.rendered > renderer.LOOSE_PAGES
    packs = [n for n in pack_files(objects) if n.endswith(".pack")]
    assert packs, "a build of hundreds of pages writes packs, not a file per page"
    loose = {n for n in os.listdir(objects) if len(n) == 64}
    assert len(loose) < first.rendered
    with sqlite3.connect(site.database) as db:
        db.execute("update posts set body = body || ' Edited.' where id = 7")
    again = build_once(host, site)
    assert again.rendered >= 1
    assert [n for n in pack_files(objects) if n.endswith(".pack")] == packs  # no new pack
    stored = Objects(objects)
    for path, entry in again.files.items():
        assert sha256(stored.read(entry.hash)) == entry.hash, path


def test_out_writes_the_packed_tree_as_ordinary_files(tmp_path: Path) -> None:
    host, site = demo(tmp_path)
    out = tmp_path / "public"
    report = run_site(
        site, host=host, reason="test", options=Options(out=out, skip_lighthouse=True)
    )
    assert report.build is not None
    build = report.build
    written = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert written.keys() == build.files.keys()
    for path, data in written.items():
        assert sha256(data) == build.files[path].hash, path
