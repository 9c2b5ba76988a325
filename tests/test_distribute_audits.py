"""Audits on their own queue: builds stage, an audits worker audits and switches the root.

A real redis-server, a ``render worker`` that takes only ``builds`` and one
that takes only ``audits``, real Chromium and Lighthouse (``require``: under
CI=true a missing one fails the test). The enqueuing host says ``[schedule]
audits = "queue"``; each machine has its own state folder, the sites folder
and the store are shared.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from celerykit import _wait, redis_server, small_site, worker, write_config, write_sites
from conftest import require
from sitekit import html

from render.build.objects import Objects
from render.build.tree import FileEntry
from render.check.lhrunner import find_lighthouse
from render.config import load_host
from render.distribute import enqueue
from render.distribute.enqueue import RemoteRun
from render.errors import ConflictError
from render.publish import staging
from render.publish.store import LocalStore
from render.publish.versions import publish_tree, read_root, read_tree
from render.run.ledger import open_ledger

pytestmark = pytest.mark.timeout(300)

LIGHTHOUSE = {"enabled": True, "pages_per_route": 0, "runs": 1, "timeout": 90}
GREY = (  # passes the SEO lint, not an accessibility budget: grey on grey, nameless controls
    '<main><p style="color:#999;background:#aaa">Grey text on grey is hard to read for anyone.</p>'
    '<input type="text"><button></button></main>'
)


def _require_tools() -> None:
    chromium = os.environ.get("RENDER_CHROMIUM") or "/usr/bin/chromium"
    require(shutil.which(chromium) is not None, f"Chromium not found at {chromium} (make setup)")
    require(shutil.which("node") is not None, "node not found (make setup)")
    require(find_lighthouse() is not None, "node_modules/lighthouse not found (make setup)")


def _layout(tmp_path: Path, url: str) -> dict[str, Path]:
    sites, store = tmp_path / "sites", tmp_path / "store"
    sites.mkdir()
    store.mkdir()
    queued = {"audits": "queue"}
    return {
        "sites": sites,
        "store": store,
        "main": write_config(
            tmp_path / "main", sites=sites, store=store, broker=url, schedule=queued
        ),
        "builder": write_config(tmp_path / "builder", sites=sites, store=store, broker=url),
        "auditor": write_config(tmp_path / "auditor", sites=sites, store=store, broker=url),
    }


def _versions(store: Path, key: str) -> list[str]:
    folder = store / "sites" / key / "versions"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def _root(store: Path, key: str) -> str | None:
    path = store / "sites" / key / "root.json"
    return str(json.loads(path.read_text())["version"]) if path.exists() else None


def _runs(state: Path) -> list[dict[str, Any]]:
    if not (state / "ledger.sqlite").exists():
        return []
    db = sqlite3.connect(state / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("select * from runs order by id")]
    except sqlite3.OperationalError:  # the table is not there yet
        return []
    finally:
        db.close()


class _Night(threading.Thread):
    """``enqueue.run_sites`` of the enqueuing host, in a thread, so the test can act meanwhile."""

    def __init__(self, config: Path, keys: list[str]) -> None:
        super().__init__(daemon=True)
        self.host, self.keys = load_host(config), keys
        self.runs: list[RemoteRun] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.runs = enqueue.run_sites(self.host, self.keys, reason="nightly")
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float) -> list[RemoteRun]:
        self.join(timeout)
        assert not self.is_alive(), f"the night did not end within {timeout} s"
        assert self.error is None, self.error
        assert self.runs is not None
        return self.runs


def test_builds_stage_and_go_live_only_once_the_audits_worker_audited_them(
    tmp_path: Path,
) -> None:
    _require_tools()
    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        keys = ["acme/blog", "acme/shop", "bolt/docs"]
        specs = {
            key: replace(small_site(2, word=key.replace("/", "-")), lighthouse=LIGHTHOUSE)
            for key in keys
        }
        write_sites(paths["sites"], specs)
        builder = load_host(paths["builder"]).state_dir
        with worker(paths["builder"], name="b", broker=redis.url, queues="builds"):
            night = _Night(paths["main"], keys)
            night.start()
            # no audits worker: every build stages its version, and none goes live
            _wait(
                lambda: [r["outcome"] for r in _runs(builder)] == ["staged"] * 3,
                timeout=120,
                what="three staged builds",
            )
            for key in keys:
                assert len(_versions(paths["store"], key)) == 1, key
                assert _root(paths["store"], key) is None, key
            assert night.is_alive()  # the enqueuer waits for the audits
            with worker(paths["auditor"], name="a", broker=redis.url, queues="audits"):
                runs = night.result(timeout=240)
    for key, run in zip(keys, runs, strict=True):
        assert run.error is None, run.error
        assert run.outcome is not None and run.outcome.value == "published", run
        (staged,) = _versions(paths["store"], key)
        assert run.version == staged == _root(paths["store"], key)
        assert run.summary["node"].startswith("b@") and run.summary["audit_node"].startswith("a@")
        assert [a["path"] for a in run.summary["audits"]] == ["index.html"]
    # the audits ran on the audits machine, and came back to the enqueuer's one ledger
    auditor = load_host(paths["auditor"]).state_dir
    assert sorted(r["reason"] for r in _runs(auditor)) == ["audit"] * 3
    assert all(r["version"] for r in _runs(builder))  # the staged version, not live there
    main = load_host(paths["main"])
    assert {r["outcome"] for r in _runs(main.state_dir)} == {"published"}
    with open_ledger(main.state_dir) as ledger:
        for key in keys:
            owner, _, name = key.partition("/")
            assert ledger.live_version(owner, name) == _root(paths["store"], key)
            (audit,) = ledger.last_lighthouse(owner, name)
            assert audit["scores"]["accessibility"] is not None
    with open_ledger(builder) as ledger:  # the build machine ran no browser
        assert all(ledger.last_lighthouse(*key.split("/")) == [] for key in keys)
    # the reports beside each live version hold both the build's SEO and the audit
    for key in keys:
        stored = paths["store"] / "sites" / key / "reports" / str(_root(paths["store"], key))
        assert sorted(p.name for p in stored.iterdir()) == [
            "index.json",
            "lighthouse.json",
            "seo.json",
        ]


def test_a_failing_audit_gate_leaves_the_previous_version_live(tmp_path: Path) -> None:
    _require_tools()
    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        key = "acme/blog"
        gate = {**LIGHTHOUSE, "block": True, "budgets.accessibility": 0.95}  # a dotted key
        spec = replace(small_site(1, word="acme-blog"), lighthouse=gate)
        write_sites(paths["sites"], {key: spec})
        with (
            worker(paths["builder"], name="b", broker=redis.url, queues="builds"),
            worker(paths["auditor"], name="a", broker=redis.url, queues="audits"),
        ):
            main = load_host(paths["main"])
            (first,) = enqueue.run_sites(main, [key], reason="nightly")
            assert first.error is None and first.version == _root(paths["store"], key)
            spec = replace(spec, templates={**spec.templates, "index.html": html(GREY)})
            write_sites(paths["sites"], {key: spec})
            (second,) = enqueue.run_sites(main, [key], reason="nightly")
    assert second.outcome is None and second.error is not None
    assert second.error.stage == "check"
    assert second.error.message.startswith("Lighthouse: 1 score(s) under budget")
    assert second.summary["audit_node"].startswith("a@")
    # the staged version is in the store, but the root still names the first one
    assert len(_versions(paths["store"], key)) == 2
    assert _root(paths["store"], key) == first.version
    runs = _runs(main.state_dir)
    assert [r["outcome"] for r in runs] == ["published", "failed_check"]
    with open_ledger(main.state_dir) as ledger:
        assert ledger.live_version("acme", "blog") == first.version
        (audit,) = ledger.last_lighthouse("acme", "blog")
        assert audit["scores"]["accessibility"] < 0.95


# --- staging without Redis: the two halves of a publish ---------------------------


def _tree(objects: Objects, pages: dict[str, bytes]) -> dict[str, FileEntry]:
    return {
        path: FileEntry(hash=objects.write(data), size=len(data), type="text/html")
        for path, data in pages.items()
    }


def test_a_staged_version_is_not_live_and_its_switch_loses_to_a_publish_in_between(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    objects = Objects(tmp_path / "objects")
    objects.folder.mkdir()
    site = {"owner": "acme", "name": "blog", "base_url": "https://acme.example.com"}
    first = publish_tree(
        _tree(objects, {"index.html": b"one"}), objects.folder, store=store, ledger=None, **site
    )
    staged = staging.stage_tree(
        _tree(objects, {"index.html": b"two"}),
        objects.folder,
        store=store,
        concurrency=2,
        **site,
    )
    assert staged is not None and staged.root.previous == first.version
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None and root.version == first.version  # staged: the root untouched
    assert read_tree(store, owner="acme", name="blog", version=staged.version).files
    # the same tree as the live one stages nothing
    same = _tree(objects, {"index.html": b"one"})
    assert staging.stage_tree(same, objects.folder, store=store, concurrency=2, **site) is None
    # the message the audit task gets carries the switch whole
    again = staging.Staged.from_json(json.loads(json.dumps(staged.to_json())), site="acme/blog")
    assert again == staged
    # a publish between the stage and the switch wins; the switch says so
    third = publish_tree(
        _tree(objects, {"index.html": b"three"}), objects.folder, store=store, ledger=None, **site
    )
    with pytest.raises(ConflictError):
        staging.switch(again, objects=objects.folder, store=store, concurrency=2)
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None and root.version == third.version
    # on the root it was staged on, the switch makes it live
    fourth = staging.stage_tree(
        _tree(objects, {"index.html": b"four"}), objects.folder, store=store, concurrency=2, **site
    )
    assert fourth is not None
    done = staging.switch(fourth, objects=objects.folder, store=store, concurrency=2)
    assert done.version == fourth.version and done.parent == third.version
    assert done.diff.changed == ("index.html",)
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None and root.version == fourth.version
