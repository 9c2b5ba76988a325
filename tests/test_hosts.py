"""Host claims as the edge's pointer to the live version (``render.publish.hosts.point``):
who may write it, how racing writers converge, and what gc and repair do with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mirrorkit import HOST, publish_files, site_files

from render.publish import hosts
from render.publish.gc import gc
from render.publish.history import rollback
from render.publish.hosts import Claim, Live, Pointed, claim_key, point, read_claim
from render.publish.repair import repair
from render.publish.store import LocalStore
from render.publish.versions import read_root

SITE = "acme/blog"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def live_of(store: LocalStore, host: str = HOST) -> str | None:
    held = read_claim(store, host)
    assert held is not None
    return held.claim.live.version if held.claim.live else None


def test_every_root_switch_points_the_claim(store: LocalStore, tmp_path: Path) -> None:
    first = publish_files(store, site_files("one"), objects=tmp_path / "o")
    assert live_of(store) == first
    second = publish_files(store, site_files("two"), objects=tmp_path / "o")
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None
    held = read_claim(store, HOST)
    assert held is not None and held.claim.live == Live(version=second, files_hash=root.files_hash)
    assert held.claim.site == SITE
    rollback(store, owner="acme", name="blog")
    assert live_of(store) == first
    assert point(store, host=HOST, site=SITE) is Pointed.current  # nothing to write
    # what older code (render serve, the mirror) reads from a claim is unchanged
    assert hosts.holder(store, HOST) == SITE


def test_a_stale_writer_converges_on_the_newest_root(store: LocalStore, tmp_path: Path) -> None:
    """A writer whose tag is old loses its write, reads the claim and the root again."""
    first = publish_files(store, site_files("one"), objects=tmp_path / "o")
    before = read_claim(store, HOST)  # what the writer of `first` read before its switch
    first_root, _ = read_root(store, owner="acme", name="blog")
    second = publish_files(store, site_files("two"), objects=tmp_path / "o")
    assert first_root is not None and first_root.version == first
    # its pointer write comes last, on the tag it read: refused, then the newest root wins
    outcome = point(store, host=HOST, site=SITE, switched=first_root, before=before)
    assert outcome is Pointed.current
    assert live_of(store) == second
    # the same bytes never come back: every pointer write has a nonce of its own
    claims = set()
    for _ in range(3):
        rollback(store, owner="acme", name="blog", to=first)
        claims.add(store.get(claim_key(HOST)))
        rollback(store, owner="acme", name="blog", to=second)
        claims.add(store.get(claim_key(HOST)))
    assert len(claims) == 6


def test_only_the_holder_s_claim_is_pointed(store: LocalStore, tmp_path: Path) -> None:
    publish_files(store, site_files("one"), objects=tmp_path / "o")
    key = claim_key(HOST)
    # released: stays released
    released = Claim(host=HOST, site=None, version="x", claimed="2026-01-01T00:00:00Z")
    store.put(key, released.to_bytes(), content_type="application/json", cache_control="no-cache")
    assert point(store, host=HOST, site=SITE) is Pointed.not_held
    publish_files(store, site_files("two"), objects=tmp_path / "o")
    assert store.get(key) == released.to_bytes()
    # another site's: untouched
    other = Claim(host=HOST, site="other/site", version="x", claimed="2026-01-01T00:00:00Z")
    store.put(key, other.to_bytes(), content_type="application/json", cache_control="no-cache")
    assert point(store, host=HOST, site=SITE) is Pointed.not_held
    assert store.get(key) == other.to_bytes()
    # none (a site published before claims existed): none is made
    store.delete([key])
    assert point(store, host=HOST, site=SITE) is Pointed.not_held
    publish_files(store, site_files("three"), objects=tmp_path / "o")
    assert store.get(key) is None


def test_moving_base_url_clears_the_old_pointer_before_the_switch(
    store: LocalStore, tmp_path: Path
) -> None:
    publish_files(store, site_files("one"), objects=tmp_path / "o")
    moved = publish_files(
        store, site_files("two"), objects=tmp_path / "o", base_url="http://moved.test/"
    )
    old = read_claim(store, HOST)
    assert old is not None and (old.claim.site, old.claim.live) == (None, None)
    assert live_of(store, "moved.test") == moved
    # a pointer left on a host the live root does not use is cleared, not followed
    stale = Claim(
        host=HOST,
        site=SITE,
        version=moved,
        claimed="2026-01-01T00:00:00Z",
        live=Live(version=moved, files_hash=""),
    )
    store.put(claim_key(HOST), stale.to_bytes(), content_type="application/json", cache_control="x")
    assert point(store, host=HOST, site=SITE) is Pointed.cleared
    cleared = read_claim(store, HOST)
    assert cleared is not None and (cleared.claim.site, cleared.claim.live) == (SITE, None)
    assert cleared.claim.claimed == stale.claimed  # the grace period is not renewed


def test_gc_keeps_the_version_a_lagging_claim_names(store: LocalStore, tmp_path: Path) -> None:
    publish_files(store, site_files("one"), objects=tmp_path / "o")
    second = publish_files(store, site_files("two"), objects=tmp_path / "o")
    lagging = store.get(claim_key(HOST))
    assert lagging is not None
    third = publish_files(store, site_files("three"), objects=tmp_path / "o")
    store.put(claim_key(HOST), lagging, content_type="application/json", cache_control="x")
    report = gc(store, owner="acme", name="blog", keep=1, grace_hours=0)
    assert report.kept == (third, second)
    assert len(report.removed_versions) == 1
    assert store.exists(f"sites/{SITE}/versions/{second}.json")
    done = repair(store, owner="acme", name="blog", objects=tmp_path / "o", scratch=tmp_path / "s")
    assert (done.host, done.pointer) == (HOST, Pointed.pointed)
    assert live_of(store) == third
    again = gc(store, owner="acme", name="blog", keep=1, grace_hours=0)
    assert again.kept == (third,) and again.removed_versions == (second,)


def test_a_corrupt_pointer_is_a_corrupt_claim(store: LocalStore, tmp_path: Path) -> None:
    publish_files(store, site_files("one"), objects=tmp_path / "o")
    raw = json.loads(store.get(claim_key(HOST)) or b"")
    raw["live"] = {"version": "latest", "files_hash": ""}
    store.put(claim_key(HOST), json.dumps(raw).encode(), content_type="x", cache_control="x")
    assert hosts.holder(store, HOST) is None  # as for any corrupt claim
    # a publish still goes live; the claim is left as it is, for a person to look at
    version = publish_files(store, site_files("two"), objects=tmp_path / "o")
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None and root.version == version
    assert json.loads(store.get(claim_key(HOST)) or b"") == raw
