"""The store and the embedded mirror put right: a mirror left behind, a corrupt or lost blob."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3server import admin_client, make_build, moto_url, new_bucket, s3_config, s3_env, site_files
from sitekit import Host, SiteSpec, html, make_host

from render.errors import MirrorError, PublishError
from render.mirror.sync import SyncOutcome, sync_site
from render.publish.repair import repair
from render.publish.store import LocalStore, S3Store, open_store
from render.publish.versions import publish, read_root, read_tree

__all__ = ["moto_url", "s3_env"]

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


def blob_of(host: Host, path: str) -> Path:
    """The local store's file for the live version's ``path``."""
    store = open_store(host.config)
    tree = read_tree(store, owner="acme", name="blog", version=live(host))
    return host.config.store_path / "sites" / SITE / "blobs" / tree.files[path].hash


@pytest.mark.parametrize("problem", ["corrupt", "missing"])
def test_repair_uploads_again_what_the_mirror_refused(
    host: Host, tmp_path: Path, problem: str
) -> None:
    version = host.run(SITE).version
    blobs = len(
        read_tree(open_store(host.config), owner="acme", name="blog", version=live(host)).hashes()
    )
    blob = blob_of(host, "logo.svg")
    good = blob.read_bytes()
    if problem == "corrupt":
        blob.chmod(0o644)  # the store's blobs are read-only; rot does not ask
        blob.write_bytes(b"<svg>rotted</svg>\n")
    else:
        blob.unlink()
    elsewhere = tmp_path / "mirror-host"
    refused = host.cli("mirror", "sync", "--once", "--root", str(elsewhere))
    assert refused.exit_code == 1
    reason = "does not match its hash" if problem == "corrupt" else "is missing from"
    assert reason in refused.output and f"run 'render repair {SITE}'" in refused.output
    # a publish trusts what the live version names: it never uploads that blob again
    assert lines(host.cli("force", SITE).output)[-1] == f"{SITE}: no change; {version} stays live"
    assert not blob.exists() or blob.read_bytes() != good

    result = host.cli("repair", SITE)
    assert result.exit_code == 0, result.output
    assert lines(result.output) == [
        f"{SITE}: logo.svg: blob {blob.name[:12]} was {problem}; uploaded again",
        f"{SITE}: checked {blobs} blobs of {version}; 1 uploaded again",
    ]
    assert blob.read_bytes() == good
    synced = host.cli("mirror", "sync", "--once", "--root", str(elsewhere))
    assert synced.exit_code == 0, synced.output
    assert (elsewhere / "sites" / SITE / "current" / "logo.svg").read_bytes() == good
    again = host.cli("repair", SITE)
    assert lines(again.output) == [f"{SITE}: checked {blobs} blobs of {version}; 0 uploaded again"]


def test_repair_names_what_the_last_build_does_not_hold(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    build = make_build(tmp_path / "b", site_files(2))
    pub = publish(build, store=store, ledger=None)
    broken = {p: build.files[p].hash for p in ("posts/p0/index.html", "posts/p1/index.html")}
    for digest in broken.values():
        rotten = store.root / "sites" / SITE / "blobs" / digest
        rotten.chmod(0o644)  # the store's blobs are read-only; rot does not ask
        rotten.write_bytes(b"rot")
    (build.objects / broken["posts/p1/index.html"]).unlink()  # the build lost one of them
    with pytest.raises(PublishError) as caught:
        repair(store, owner="acme", name="blog", objects=build.objects, scratch=tmp_path / "s")
    assert caught.value.headline() == (
        f"{SITE}: publish: 1 of the 2 missing or corrupt blobs of the live version {pub.version}"
        " are not in this host's last build: posts/p1/index.html (corrupt)"
    )
    assert caught.value.hint == (
        "'render force SITE' builds every file again; then run 'render repair SITE' again"
    )
    assert store.get(f"sites/{SITE}/blobs/{broken['posts/p0/index.html']}") == build.read(
        "posts/p0/index.html"
    )
    assert not (tmp_path / "s").exists()


def test_repair_on_s3(moto_url: str, tmp_path: Path) -> None:
    bucket = new_bucket(moto_url)
    store = S3Store(s3_config(moto_url, bucket))
    build = make_build(tmp_path / "b", site_files(3))
    publish(build, store=store, ledger=None)
    digest = build.files["static/site.css"].hash
    admin_client(moto_url).put_object(
        Bucket=bucket,
        Key=f"sites/{SITE}/blobs/{digest}",  # type: ignore[attr-defined]
        Body=b"rot",
    )
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
