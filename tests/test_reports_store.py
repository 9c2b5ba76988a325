"""Audit output lives beside the versions in the store, never in a tenant's public tree."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sitekit import SiteSpec, html, make_host

from render.build.tree import FileEntry, sha256
from render.publish.reports import collect, html_key, report_key, store_reports
from render.publish.store import LocalStore
from render.publish.versions import publish_tree, read_root, read_tree
from render.serve.live import LiveSites

SPEC = SiteSpec(
    templates={"index.html": html("<h1>Home</h1><p>hello</p>"), "404.html": html("<p>gone</p>")},
    routes=[{"path": "/", "template": "index.html"}],
)


def _age(store: LocalStore, prefix: str, hours: float) -> None:
    past = time.time() - hours * 3600
    for obj in store.list(prefix):
        os.utime(store.root / obj.key, (past, past))


def test_a_build_publishes_no_findings_file_and_stores_its_reports_beside_it(
    tmp_path: Path,
) -> None:
    host = make_host(tmp_path, sites={"acme/blog": SPEC})
    report = host.run("acme/blog")
    assert report.version is not None and report.build is not None
    assert [p for p in report.build.files if p.startswith("_render/")] == []
    assert "reports" in report.timings
    store = LocalStore(host.state_dir / "store")
    seo = json.loads(store.get(report_key("acme", "blog", report.version, "seo.json")) or b"")
    assert seo["site"] == "acme/blog" and seo["pages"] >= 1
    index = json.loads(store.get(report_key("acme", "blog", report.version, "index.json")) or b"")
    assert index == {"version": report.version, "files": ["seo.json"], "html": []}
    # no server of this project resolves the reports: they are named by no version tree
    live = LiveSites(store, cache=tmp_path / "cache")
    for path in ("/_render/seo.json", "/reports/", f"/reports/{report.version}/seo.json"):
        assert live("", path).status == 404, path


def test_the_next_build_drops_the_old_report_files_from_the_tree(tmp_path: Path) -> None:
    host = make_host(tmp_path, sites={"acme/blog": SPEC})
    store = LocalStore(host.state_dir / "store")
    objects = tmp_path / "objects"
    objects.mkdir()
    old = {
        "index.html": b"<!doctype html><title>old</title><h1>old</h1>",
        "_render/seo.json": b'{"findings": []}\n',
        "_render/lighthouse.json": b"{}\n",
        "_render/lighthouse/index.html": b"<!doctype html><title>report</title>",
    }
    files = {}
    for path, data in old.items():
        (objects / sha256(data)).write_bytes(data)
        files[path] = FileEntry(hash=sha256(data), size=len(data), type="text/html")
    first = publish_tree(
        files,
        objects,
        owner="acme",
        name="blog",
        base_url="https://x.test/",
        store=store,
        ledger=None,
    )

    report = host.run("acme/blog")
    assert report.publication is not None and report.publication.parent == first.version
    removed = set(report.publication.diff.removed)
    assert {
        "_render/seo.json",
        "_render/lighthouse.json",
        "_render/lighthouse/index.html",
    } <= removed
    root, _ = read_root(store, owner="acme", name="blog")
    assert root is not None
    tree = read_tree(store, owner="acme", name="blog", version=root.version)
    assert not [p for p in tree.files if p.startswith("_render/")]


def test_html_reports_upload_once_and_go_with_the_last_version_naming_them(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    a, b, c = b"<html>report a</html>", b"<html>report b</html>", b"<html>report c</html>"
    ha, hb, hc = sha256(a), sha256(b), sha256(c)
    v1, v2, v3 = (
        "20261101T000000Z-00000001",
        "20261102T000000Z-00000002",
        "20261103T000000Z-00000003",
    )
    files = {"seo.json": b"{}\n"}
    first = store_reports(store, owner="o", name="s", version=v1, files=files, html={ha: a, hb: b})
    assert (first.uploaded_html, first.uploaded_bytes) == (2, len(a) + len(b) + 3)
    # one page re-audited: only its report goes up; the carried one is already there
    second = store_reports(store, owner="o", name="s", version=v2, files=files, html={ha: a, hc: c})
    assert second.uploaded_html == 1
    store_reports(store, owner="o", name="s", version=v3, files=files, html={hc: c})
    _age(store, "sites/o/s/reports/", hours=72)
    late = b"<html>uploading now</html>"
    store.put(html_key("o", "s", sha256(late)), late, content_type="text/html", cache_control="")

    cutoff = time.time() - 48 * 3600
    dry = collect(
        store, owner="o", name="s", kept={v2, v3}, dropped={v1}, cutoff=cutoff, dry_run=True
    )
    assert store.exists(report_key("o", "s", v1, "seo.json"))
    done = collect(store, owner="o", name="s", kept={v2, v3}, dropped={v1}, cutoff=cutoff)
    assert done.keys == dry.keys
    assert set(done.keys) == {
        report_key("o", "s", v1, "seo.json"),
        report_key("o", "s", v1, "index.json"),
        html_key("o", "s", hb),
    }
    assert done.keys[-1] == report_key("o", "s", v1, "index.json")  # the index goes last
    for key in (html_key("o", "s", ha), html_key("o", "s", hc), html_key("o", "s", sha256(late))):
        assert store.exists(key), key


def test_gc_collects_a_versions_reports_with_it(tmp_path: Path) -> None:
    host = make_host(tmp_path, sites={"acme/blog": SPEC})
    versions = []
    for edition in ("one", "two", "three"):
        (host.site_dir("acme/blog") / "templates" / "index.html").write_text(
            html(f"<h1>Home</h1><p>{edition}</p>"), encoding="utf-8"
        )
        report = host.run("acme/blog")
        assert report.version is not None
        versions.append(report.version)
    store = LocalStore(host.state_dir / "store")
    _age(store, "sites/acme/blog/", hours=72)
    result = host.cli("gc", "--keep", "1")
    assert result.exit_code == 0, result.output
    assert "4 report files" in result.output  # seo.json and index.json of two versions
    for version in versions[:2]:
        assert not store.list(f"sites/acme/blog/reports/{version}/")
    assert store.exists(report_key("acme", "blog", versions[2], "seo.json"))
