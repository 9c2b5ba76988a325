"""gc beside a publish or a rollback: exact interleavings, the live version always whole.

Each test runs the real operations on a real store (a local folder, and moto's S3
server where it matters) and steps them through a seam: ``Hooked`` is a store
that runs a piece of the test at one precise call of another operation, such as
"right after gc listed the blobs". ``gc(now=...)`` three days ahead makes every
blob and pack old enough to delete, so only gc's lease protects a writer in flight.
Tests about what gc deletes run with both store layouts: packs (the default) and
loose blobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from faultproxy import FaultProxy, LoseResponse, Request
from gckit import Hooked, RootReads, assert_whole, in_thread, store
from s3server import make_build, moto_url, new_bucket, s3_config, s3_env, site_files

from render.config import load_host
from render.errors import ConflictError, PublishError
from render.publish.gc import GcReport, gc
from render.publish.history import rollback, version_ids
from render.publish.manifest import Root, root_key
from render.publish.store import LocalStore, S3Store, Store
from render.publish.versions import (
    DEFAULT_PACK_LIMIT,
    Publication,
    PublishOutcome,
    publish,
    read_root,
    switch_root,
)
from render.run import locks

__all__ = ["moto_url", "s3_env", "store"]

LATER = time.time() + 72 * 3600  # gc's clock: every blob and tree looks three days old


@pytest.fixture(params=["packs", "loose"])
def layout(request: pytest.FixtureRequest) -> int | None:
    """``publish``'s ``pack_limit``: packs (``[store] layout = "packs"``) or loose blobs."""
    return DEFAULT_PACK_LIMIT if request.param == "packs" else None


def series(
    store: Store,
    tmp_path: Path,
    editions: Sequence[str],
    *,
    pack_limit: int | None = DEFAULT_PACK_LIMIT,
) -> list[str]:
    """Publish one version per edition; each has 3 posts and a stylesheet of its own."""
    out = []
    for edition in editions:
        out.append(
            publish(
                make_build(tmp_path / f"s-{edition}", edition_files(edition)),
                store=store,
                ledger=None,
                pack_limit=pack_limit,
            ).version
        )
    return out


def _upload_method(store: Store, pack_limit: int | None) -> tuple[str, str]:
    """The store call a publish's first upload makes, and a part of its key."""
    if pack_limit is not None:
        return "put", "/packs/"
    # a local store takes the loose blobs in one batch (put_blobs), S3 one put_file each
    return ("put_blobs" if isinstance(store, LocalStore) else "put_file"), "/blobs"


def edition_files(edition: str) -> dict[str, bytes]:
    return site_files(3, edition=edition) | {"static/site.css": f"/* {edition} */".encode()}


def live(store: Store) -> Root:
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None
    return root


def test_a_publish_that_read_the_root_before_gc_began_uploads_again_what_gc_took(
    store: Store, layout: int | None, tmp_path: Path
) -> None:
    # the new version brings back edition a's pages: blobs only the oldest version names
    # (loose), and its own new pack, which no tree names until it goes live (packs)
    old = series(store, tmp_path, ["a", "b", "c", "d"], pack_limit=layout)
    listed, go = threading.Event(), threading.Event()
    gc_run: list[tuple[threading.Thread, list[object]]] = []

    def pause_after_listing() -> None:
        listed.set()
        assert go.wait(30)

    def start_gc() -> None:  # the publish read the root and uploaded; gc begins and lists
        gc_store = Hooked(
            store, method="list", part="/blobs/", hook=pause_after_listing, when="after"
        )
        gc_run.append(
            in_thread(
                lambda: gc(
                    gc_store,
                    owner="acme",
                    name="blog",
                    keep=1,  # type: ignore[arg-type]
                    now=LATER,
                )
            )
        )
        assert listed.wait(30)

    def let_gc_delete() -> None:  # every blob is up again; gc deletes what it listed as old
        go.set()
        thread, _ = gc_run[0]
        thread.join(30)

    files = edition_files("a") | {"posts/new/index.html": b"<!doctype html><title>New</title>"}
    method, part = _upload_method(store, layout)
    publisher = Hooked(
        Hooked(store, method=method, part=part, hook=start_gc, when="after"),  # type: ignore[arg-type]
        method="put",
        part="/versions/",
        hook=let_gc_delete,
    )
    pub = publish(
        make_build(tmp_path / "new", files),
        store=publisher,  # type: ignore[arg-type]
        ledger=None,
        pack_limit=layout,
    )

    (report,) = gc_run[0][1]
    assert isinstance(report, GcReport), report
    assert report.removed_versions == (old[2], old[1], old[0])
    if layout is not None:  # the new pack and edition b's and c's went (a's holds the home page)
        assert (report.removed_packs, report.removed_blobs) == (3, 0)
    else:
        assert report.removed_blobs >= 12 and report.removed_packs == 0
    assert pub.outcome is PublishOutcome.published and pub.parent == old[3]
    assert assert_whole(store) == pub.version


def test_a_publish_that_starts_while_gc_holds_its_lease_waits_for_it(
    store: Store, layout: int | None, tmp_path: Path
) -> None:
    old = series(store, tmp_path, ["a", "b", "c", "d"], pack_limit=layout)
    waiting_or_done = threading.Event()
    watched = RootReads(store, waiting_or_done)
    runs: list[tuple[threading.Thread, list[object]]] = []
    files = edition_files("a")

    def publish_now() -> None:  # gc listed the blobs and has not deleted yet
        runs.append(
            in_thread(
                lambda: publish(
                    make_build(tmp_path / "new", files),
                    store=watched,  # type: ignore[arg-type]
                    ledger=None,
                    pack_limit=layout,
                ),
                waiting_or_done,
            )
        )
        assert waiting_or_done.wait(30)
        assert runs[0][1] == [], "the publish went on while gc held its lease"

    gc_store = Hooked(store, method="list", part="/blobs/", hook=publish_now, when="after")
    report = gc(gc_store, owner="acme", name="blog", keep=1, now=LATER)  # type: ignore[arg-type]
    assert report.removed_versions == (old[2], old[1], old[0])
    thread, out = runs[0]
    thread.join(30)
    (pub,) = out
    assert isinstance(pub, Publication), pub
    assert pub.parent == old[3] and pub.uploaded_blobs == 4  # edition a's posts and stylesheet
    assert assert_whole(store) == pub.version


def test_a_rollback_that_starts_while_gc_holds_its_lease_finds_its_version_gone(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    old = series(store, tmp_path, ["a", "b", "c", "d"])
    waiting_or_done = threading.Event()
    watched = RootReads(store, waiting_or_done)
    runs: list[tuple[threading.Thread, list[object]]] = []

    def roll_back_now() -> None:
        runs.append(
            in_thread(
                lambda: rollback(watched, owner="acme", name="blog", to=old[0]),  # type: ignore[arg-type]
                waiting_or_done,
            )
        )
        assert waiting_or_done.wait(30)
        assert runs[0][1] == [], "the rollback went on while gc held its lease"

    gc_store = Hooked(store, method="list", part="/blobs/", hook=roll_back_now, when="after")
    gc(gc_store, owner="acme", name="blog", keep=1, now=LATER)  # type: ignore[arg-type]
    thread, out = runs[0]
    thread.join(30)
    (error,) = out
    assert isinstance(error, PublishError)
    assert error.message == f"no version {old[0]!r} in {store.description}"
    assert assert_whole(store) == old[3]


@pytest.mark.parametrize("target", [0, 2], ids=["version gc removes", "version gc keeps"])
def test_a_rollback_that_read_the_root_before_gc_began(
    store: Store, layout: int | None, tmp_path: Path, target: int
) -> None:
    old = series(store, tmp_path, ["a", "b", "c", "d"], pack_limit=layout)

    def run_gc() -> None:  # the rollback read the root and the tree; gc runs whole
        gc(store, owner="acme", name="blog", keep=2, now=LATER)

    roller = Hooked(store, method="put_if", part="/root.json", hook=run_gc)
    if target == 0:
        with pytest.raises(PublishError) as caught:
            rollback(roller, owner="acme", name="blog", to=old[0])  # type: ignore[arg-type]
        assert caught.value.message == (
            f"gc removed version {old[0]} while this rollback waited for it; {old[3]} stays live"
        )
        assert assert_whole(store) == old[3]
    else:
        done = rollback(roller, owner="acme", name="blog", to=old[2])  # type: ignore[arg-type]
        assert done.version == old[2]
        assert assert_whole(store) == old[2]
    assert version_ids(store, owner="acme", name="blog") == [old[3], old[2]]


def test_gc_deletes_nothing_when_the_root_changed_while_it_listed(
    layout: int | None, tmp_path: Path
) -> None:
    # a writer that ignores gc's lease (an older render on another host) rolls back to edition a
    store = LocalStore(tmp_path / "store")
    old = series(store, tmp_path, ["a", "b", "c", "d"], pack_limit=layout)
    before = {o.key for o in store.list("sites/")}

    def old_style_rollback() -> None:
        raw = store.get_tagged(root_key("acme", "blog"))
        assert raw is not None
        root = Root.from_bytes(raw[0], key="root")
        back = Root(
            version=old[0],
            site=root.site,
            base_url=root.base_url,
            previous=old[3],
            published=root.published,
        )
        switch_root(store, owner="acme", name="blog", root=back, tag=raw[1])

    gc_store = Hooked(store, method="list", part="/blobs/", hook=old_style_rollback, when="after")
    with pytest.raises(ConflictError) as caught:
        gc(gc_store, owner="acme", name="blog", keep=1, now=LATER)  # type: ignore[arg-type]
    assert caught.value.headline() == (
        "acme/blog: publish: root.json changed while gc was listing (a publish or rollback went"
        " live); nothing was deleted"
    )
    assert {o.key for o in store.list("sites/")} == before
    assert assert_whole(store) == old[0]


def test_two_gc_runs_of_one_site_do_not_overlap(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    series(store, tmp_path, ["a", "b"])
    second: list[BaseException] = []

    def gc_again() -> None:
        try:
            gc(store, owner="acme", name="blog", keep=1, now=LATER)
        except PublishError as exc:
            second.append(exc)

    gc(
        Hooked(store, method="list", part="/blobs/", hook=gc_again),
        owner="acme",
        name="blog",  # type: ignore[arg-type]
        keep=1,
        now=LATER,
    )
    (error,) = second
    assert isinstance(error, PublishError)
    lease = live(store).gc
    assert lease is not None and lease.done
    assert error.message.startswith("another gc of this site is running (pid ")
    # the finished gc leaves its lease marked done; a publish on top does not wait for it
    pub = publish(make_build(tmp_path / "next", edition_files("z")), store=store, ledger=None)
    assert live(store).gc is None and assert_whole(store) == pub.version


def test_a_lease_left_by_a_killed_gc_holds_nothing_once_it_expired(tmp_path: Path) -> None:
    from render.publish.manifest import GcLease

    store = LocalStore(tmp_path / "store")
    expired = GcLease(
        id="0" * 16,
        host="gone",
        pid=1,
        started="2026-01-01T00:00:00Z",
        expires="2026-01-01T00:15:00Z",
    )

    def killed_gc_left_its_lease() -> None:
        raw = store.get_tagged(root_key("acme", "blog"))
        assert raw is not None
        root = replace(Root.from_bytes(raw[0], key="root"), gc=expired)
        switch_root(store, owner="acme", name="blog", root=root, tag=raw[1])

    v1, v2 = series(store, tmp_path, ["a", "b"])
    killed_gc_left_its_lease()
    pub = publish(make_build(tmp_path / "next", edition_files("c")), store=store, ledger=None)
    assert pub.parent == v2 and assert_whole(store) == pub.version
    killed_gc_left_its_lease()
    report = gc(store, owner="acme", name="blog", keep=1, now=LATER)
    assert report.removed_versions == (v2, v1) and assert_whole(store) == pub.version


def test_a_lost_response_to_the_lease_write_is_read_back_not_taken_for_another_gc(
    moto_url: str, tmp_path: Path
) -> None:
    bucket = new_bucket(moto_url)
    with FaultProxy(moto_url).running() as proxy:
        store = S3Store(s3_config(proxy.url, bucket))
        old = series(store, tmp_path, ["a", "b"])  # root writes 1 and 2

        def lose_the_lease_write(r: Request) -> LoseResponse | None:
            lease_write = r.method == "PUT" and r.path.endswith("/root.json") and r.attempt == 3
            return LoseResponse(503) if lease_write else None

        proxy.rules.append(lose_the_lease_write)
        mark = proxy.mark()
        report = gc(store, owner="acme", name="blog", keep=1, now=LATER)
        root_calls = [
            (e.method, e.status) for e in proxy.entries(mark) if e.path.endswith("/root.json")
        ]
        store.close()
    # read; lease written but answered 503; the retry meets If-Match -> 412; read back: ours
    assert root_calls[:4] == [("GET", 200), ("PUT", 503), ("PUT", 412), ("GET", 200)]
    assert report.removed_versions == (old[0],)
    direct = S3Store(s3_config(moto_url, bucket))
    lease = live(direct).gc
    assert lease is not None and lease.done  # given back: the next publish does not wait
    assert assert_whole(direct) == old[1]
    direct.close()


def test_gc_and_rollback_wait_for_a_build_of_the_site(tmp_path: Path) -> None:
    from render.cli.publish import gc_command, rollback_command

    (tmp_path / "render.toml").write_text('[store]\npath = "bucket"\n')
    site = tmp_path / "sites" / "acme" / "blog"
    site.mkdir(parents=True)
    (site / "site.toml").write_text('[site]\nbase_url = "https://blog.example.com"\n')
    store = LocalStore(tmp_path / "bucket")
    old = series(store, tmp_path / "w", ["a", "b"])
    runner = CliRunner()
    config = ["--config", str(tmp_path / "render.toml")]
    state = load_host(tmp_path / "render.toml").state_dir
    with locks.site_lock(state, "acme/blog", wait=False, reason="test") as me:
        for command, args in ((gc_command, ["--keep", "1"]), (rollback_command, ["acme/blog"])):
            result = runner.invoke(command, [*config, "--no-wait", *args])
            assert result.exit_code == 1
            assert result.output.splitlines()[0] == (
                f"Error: acme/blog: lock: a build is running: {me.describe()}"
            )
    assert version_ids(store, owner="acme", name="blog") == [old[1], old[0]]
    assert live(store).version == old[1]
    result = runner.invoke(rollback_command, [*config, "--no-wait", "acme/blog"])
    assert result.output == f"acme/blog: {old[0]} is live (was {old[1]})\n"
