"""The store and the embedded mirror put right: a mirror left behind, a corrupt or lost blob."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sitekit import Host, SiteSpec, html, make_host

from render.errors import MirrorError
from render.publish import read_root

SITE = "acme/blog"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    yield make_host(tmp_path, sites={SITE: SiteSpec(
        templates={"index.html": html("<p>first</p>")},
        static={"logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n'},
    )})  # fmt: skip


def served(host: Host) -> str:
    return os.path.basename(os.readlink(host.config.mirror_path / "sites" / SITE / "current"))


def live(host: Host) -> str:
    from render.store import open_store

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

