"""The host claim as the edge's pointer to the live version (``render.publish.hosts.point``), in a
real Workers runtime: three R2 reads for a cold view, switches without root.json, and a claim
that lags its root (a crash between the switch and the pointer write) served whole until a
repair or the next publish points it again."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit import EdgeRuntime, edge_runtime
from mirrorkit import HOST, publish_files, site_files
from test_edge import blob_read, observe_until

from render.publish.gc import gc
from render.publish.history import rollback
from render.publish.hosts import Pointed, claim_key
from render.publish.repair import repair
from render.publish.store import LocalStore

TTL = 1.0


def claim_file(store: Path, host: str = HOST) -> Path:
    return store / claim_key(host)


def pointed_at(store: Path, host: str = HOST) -> str | None:
    live = json.loads(claim_file(store, host).read_text()).get("live")
    return None if live is None else str(live["version"])


def cold_view(edge: EdgeRuntime, path: str = "/") -> list[str]:
    """The R2 reads of one view by a new isolate (the Cache API may still hold pointers)."""
    edge.reload()
    edge.ops()
    assert edge.get(path, host=HOST).status == 200
    return edge.ops()


def test_edge_follows_publishes_and_rollbacks_by_the_claim_alone(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    objects = tmp_path / "objects"
    by_version = {publish_files(store, site_files("one"), objects=objects): site_files("one")}
    (first,) = by_version
    with edge_runtime(tmp_path / "store", ttl=TTL) as edge:
        edge.ops()
        observe_until(edge, by_version, first, within=TTL + 5)
        second = publish_files(store, site_files("two"), objects=objects)
        by_version[second] = site_files("two")
        assert pointed_at(tmp_path / "store") == second
        edge.sync()
        observe_until(edge, by_version, second, within=TTL + 5)
        rollback(store, owner="acme", name="blog")
        assert pointed_at(tmp_path / "store") == first
        edge.sync()
        observe_until(edge, by_version, first, within=TTL + 5)
        read = edge.ops()
        assert read and not [op for op in read if op.endswith("/root.json")], read
    with edge_runtime(tmp_path / "store", ttl=TTL) as edge:  # an empty Cache API too
        # cold: the claim, the tree, the blob; warm: the blob
        blob = blob_read(store, first, "index.html")
        assert cold_view(edge) == [
            f"get hosts/{HOST}.json",
            f"get sites/acme/blog/versions/{first}.json",
            blob,
        ]
        assert edge.get("/", host=HOST).status == 200
        assert edge.ops() == [blob]


def test_edge_reads_root_json_for_a_claim_older_code_wrote(tmp_path: Path) -> None:
    """A claim without ``live`` (or naming a version the bucket lost): root.json, 4 reads."""
    store = LocalStore(tmp_path / "store")
    objects = tmp_path / "objects"
    first = publish_files(store, site_files("one"), objects=objects)
    second = publish_files(store, site_files("two"), objects=objects)
    path = claim_file(tmp_path / "store")
    claim = json.loads(path.read_text())
    legacy = {k: v for k, v in claim.items() if k not in ("live", "nonce")}
    path.write_text(json.dumps(legacy))
    with edge_runtime(tmp_path / "store", ttl=0) as edge:
        assert cold_view(edge) == [
            f"get hosts/{HOST}.json",
            "get sites/acme/blog/root.json",
            f"get sites/acme/blog/versions/{second}.json",
            blob_read(store, second, "index.html"),
        ]
        # a claim left behind on a host the site moved away from serves nothing
        third = publish_files(
            store, site_files("three"), objects=objects, base_url="http://moved.test/"
        )
        assert json.loads(path.read_text())["site"] is None  # released
        assert pointed_at(tmp_path / "store", "moved.test") == third
        path.write_text(json.dumps(legacy))  # as if the release never happened
        edge.sync()
        edge.reload()
        assert edge.get("/", host=HOST).status == 404
        moved = edge.get("/", host="moved.test")
        assert (moved.status, moved.header("x-render-version")) == (200, third)
        # a pointer to a version the bucket no longer holds: root.json decides
        other = claim_file(tmp_path / "store", "moved.test")
        gone = json.loads(other.read_text())
        other.write_text(json.dumps({**gone, "live": {"version": first, "files_hash": "x"}}))
        (tmp_path / "store" / "sites/acme/blog/versions" / f"{first}.json").unlink()
        edge.sync()
        edge.reload()
        edge.ops()
        moved = edge.get("/", host="moved.test")
        assert (moved.status, moved.body) == (200, site_files("three")["index.html"])
        assert moved.header("x-render-version") == third
        assert "get sites/acme/blog/root.json" in edge.ops()


def test_edge_serves_a_lagging_claim_whole_until_repair_or_the_next_publish(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    objects = tmp_path / "objects"
    publish_files(store, site_files("one"), objects=objects)
    second = publish_files(store, site_files("two"), objects=objects)
    pointer = claim_file(tmp_path / "store").read_bytes()
    third = publish_files(store, site_files("three"), objects=objects)
    # a crash between the root switch and the pointer write: the claim still names `second`
    claim_file(tmp_path / "store").write_bytes(pointer)
    with edge_runtime(tmp_path / "store", ttl=TTL) as edge:
        lagging = {second: site_files("two")}
        for _ in range(3):  # every page of one version, never a page of the root's
            observe_until(edge, lagging, second, within=TTL + 5)
        # gc keeps the version the claim names, though keep=1 and no grace would drop it
        report = gc(store, owner="acme", name="blog", keep=1, grace_hours=0)
        assert second in report.kept and second not in report.removed_versions
        edge.sync()
        edge.reload()
        observe_until(edge, lagging, second, within=TTL + 5)

        done = repair(
            store, owner="acme", name="blog", objects=objects, scratch=tmp_path / "scratch"
        )
        assert (done.host, done.pointer, done.version) == (HOST, Pointed.pointed, third)
        assert pointed_at(tmp_path / "store") == third
        edge.sync()
        both = {second: site_files("two"), third: site_files("three")}
        observe_until(edge, both, third, within=TTL + 5)

        # the same crash again; the next publish points the claim at what it made live
        pointer = claim_file(tmp_path / "store").read_bytes()
        fourth = publish_files(store, site_files("four"), objects=objects)
        claim_file(tmp_path / "store").write_bytes(pointer)
        edge.sync()
        observe_until(edge, {third: site_files("three")}, third, within=TTL + 5)
        fifth = publish_files(store, site_files("five"), objects=objects)
        assert pointed_at(tmp_path / "store") == fifth
        edge.sync()
        later = {third: site_files("three"), fourth: site_files("four"), fifth: site_files("five")}
        observe_until(edge, later, fifth, within=TTL + 5)
