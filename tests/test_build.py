"""The build stage: same input, same bytes; a rebuild costs what changed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from render import builder
from render.build import snapshot
from render.build.objects import Objects, sha256
from render.build.record import FORMAT, RECORD, Previous, build_dir, load_previous
from render.build.tree import Build
from render.config import HostConfig, SiteConfig, load_host, load_site, site_dirs
from render.demo import init_host
from render.errors import TemplateError
from render.pipeline import Options, Outcome, run_site


def demo(folder: Path) -> tuple[HostConfig, SiteConfig]:
    init_host(folder, demo=True)
    host = load_host(folder / "render.toml")
    return host, load_site(site_dirs(host)[0], host=host)


def build_once(host: HostConfig, site: SiteConfig) -> Build:
    with snapshot.take(site, into=host.state_dir / "snapshots" / "t") as snap:
        return builder.build(site, snap, host=host)


def tree(build: Build) -> dict[str, str]:
    return {path: entry.hash for path, entry in build.files.items()}


def test_two_fresh_builds_of_the_same_input_are_byte_identical(tmp_path: Path) -> None:
    first = build_once(*demo(tmp_path / "a"))
    second = build_once(*demo(tmp_path / "b"))
    assert tree(first) == tree(second)
    assert first.rendered == len(first.pages) and len(first.pages) > 200


def test_rebuild_without_changes_renders_nothing(tmp_path: Path) -> None:
    host, site = demo(tmp_path)
    first = build_once(host, site)
    again = build_once(host, site)
    assert again.rendered == 0
    assert again.reused == len(first.pages)
    assert tree(again) == tree(first)


def test_one_changed_row_rerenders_only_the_pages_that_read_it(tmp_path: Path) -> None:
    host, site = demo(tmp_path)
    build_once(host, site)
    with sqlite3.connect(site.database) as db:
        slug, post_id = db.execute(
            "select slug, id from posts where draft = 0 order by id limit 1 offset 100"
        ).fetchone()
        db.execute(
            "update posts set body = body || ' A new closing line.' where id = ?", (post_id,)
        )
    again = build_once(host, site)
    rendered = {p.url for p in again.pages if p.rendered}
    assert rendered == {f"/posts/{slug}/"}

    with sqlite3.connect(site.database) as db:
        db.execute("update posts set title = 'Renamed' where id = ?", (post_id,))
    third = build_once(host, site)
    rendered = {p.url for p in third.pages if p.rendered}
    # the post itself, the archive page listing it, and every tag page and author
    # page that lists it: found by what each page read, declared nowhere
    assert f"/posts/{slug}/" in rendered
    with sqlite3.connect(site.database) as db:
        tags = {t for (t,) in db.execute("select tag from tags where post_id = ?", (post_id,))}
        (author,) = db.execute(
            "select a.slug from authors a join posts p on p.author_id = a.id where p.id = ?",
            (post_id,),
        ).fetchone()
    assert {f"/tags/{t}/" for t in tags} <= rendered
    assert f"/authors/{author}/" in rendered
    assert len(rendered) < 15, rendered
    others = [
        p
        for p in third.pages
        if p.url.startswith("/posts/") and p.url.count("/") == 3 and p.url != f"/posts/{slug}/"
    ]
    assert others and not any(p.rendered for p in others)


def test_incremental_result_equals_a_build_from_scratch(tmp_path: Path) -> None:
    host, site = demo(tmp_path / "inc")
    build_once(host, site)
    with sqlite3.connect(site.database) as db:
        db.execute("update posts set title = 'A fresh title', likes = 999 where id = 17")
        db.execute("insert into tags values (17, 'brand-new-tag')")
        db.execute("update posts set draft = 1 where id = 33")
    incremental = build_once(host, site)
    scratch_host, scratch_site = demo(tmp_path / "scratch")
    (scratch_site.database).write_bytes(site.database.read_bytes())
    scratch = build_once(scratch_host, scratch_site)
    assert tree(incremental) == tree(scratch)
    assert incremental.rendered < len(incremental.pages) / 4


def test_a_template_change_rerenders_the_pages_that_use_it(tmp_path: Path) -> None:
    host, site = demo(tmp_path)
    first = build_once(host, site)
    post = site.templates / "post.html"
    post.write_text(post.read_text().replace("<h2>Tags</h2>", "<h2>Filed under</h2>"))
    again = build_once(host, site)
    rendered = {p.template for p in again.pages if p.rendered}
    assert rendered == {"post.html"}
    assert again.rendered == sum(1 for p in first.pages if p.template == "post.html")
    base = site.templates / "base.html"
    base.write_text(
        base.read_text().replace("Field Notes is a demo", "Field Notes is a small demo")
    )
    third = build_once(host, site)
    # every page but the feed extends base.html
    assert {p.template for p in third.pages if not p.rendered} == {"feed.xml"}
    assert third.rendered == len(third.pages) - 1


def test_a_failed_build_leaves_the_last_good_one_in_place(tmp_path: Path) -> None:
    host, site = demo(tmp_path)
    good = build_once(host, site)
    record = build_dir(host, site) / RECORD
    before = record.read_bytes()
    post = site.templates / "post.html"
    post.write_text(post.read_text().replace("{{ row.title }}</h1>", "{{ row.titel }}</h1>"))
    with pytest.raises(TemplateError) as caught:
        build_once(host, site)
    assert caught.value.template == "post.html"
    assert caught.value.line == 6
    assert "titel" in caught.value.message
    assert record.read_bytes() == before
    stored = Objects(good.objects)  # read from disk afresh, packs and all
    for entry in good.files.values():
        assert sha256(stored.read(entry.hash)) == entry.hash


def test_out_writes_pretty_urls_files_and_static(tmp_path: Path) -> None:
    host, site = demo(tmp_path / "host")
    out = tmp_path / "out"
    report = run_site(site, host=host, options=Options(out=out, skip_lighthouse=True))
    assert report.build is not None
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert files == set(report.build.files)
    assert {"sitemap.xml", "robots.txt", "404.html"} <= files
    # audit output is stored beside the version, never in the tree (render.publish.reports)
    assert sorted(f for f in files if f.startswith("_render/")) == [
        "_render/islands.js",
        "_render/register.js",
    ]
    assert "index.html" in files and "feed.xml" in files and "posts/page/2/index.html" in files
    assert "css/site.css" in files and "islands/Likes.js" in files and "_render/islands.js" in files
    slug = next(p.url for p in report.build.pages if p.template == "post.html")
    assert (out / slug.strip("/") / "index.html").read_text().startswith("<!doctype html>")
    feed = (out / "feed.xml").read_text()
    assert feed.startswith("<?xml") and "<render-island" not in feed


def test_pagination_links_and_counts(tmp_path: Path) -> None:
    host, site = demo(tmp_path)
    built = build_once(host, site)
    lists = sorted((p for p in built.pages if p.template == "posts.html"), key=lambda p: p.path)
    with sqlite3.connect(site.database) as db:
        (count,) = db.execute("select count(*) from posts where draft = 0").fetchone()
    assert len(lists) == -(-count // 20)
    second = built.read("posts/page/2/index.html").decode()
    assert 'href="/posts/"' in second and 'href="/posts/page/3/"' in second
    assert second.count('<li><a href="/posts/') == 20


def test_unchanged_site_is_skipped_from_the_snapshot_hash_and_force_overrides(
    tmp_path: Path,
) -> None:
    host, site = demo(tmp_path)
    quick = Options(skip_lighthouse=True)
    assert run_site(site, host=host, options=quick).outcome is Outcome.published
    assert run_site(site, host=host, options=quick).outcome is Outcome.skipped
    forced = run_site(site, host=host, options=Options(force=True, skip_lighthouse=True))
    assert forced.outcome is Outcome.unchanged and forced.rendered == 0


def test_page_records_keep_what_each_page_read(tmp_path: Path) -> None:
    host, site = demo(tmp_path)
    built = build_once(host, site)
    home = built.page("index.html")
    assert home is not None
    assert "template:index.html" in home.reads
    assert any(r.startswith("query:recent") for r in home.reads)
    record = load_previous(build_dir(host, site))
    assert record.pages["index.html"].hash == home.hash
    post = next(p for p in built.pages if p.template == "post.html")
    assert post.islands == ("Likes", "Share")
    assert post.lastmod is not None and len(post.lastmod) == 10


def test_a_changed_named_query_is_rerun_even_when_its_tables_did_not_change(tmp_path: Path) -> None:
    host, site = demo(tmp_path)
    build_once(host, site)
    toml = site.path.read_text().replace(
        "order by published desc, id limit 5", "order by published asc, id limit 5"
    )
    site.path.write_text(toml)
    site = load_site(site.root, host=host)
    again = build_once(host, site)
    assert {p.url for p in again.pages if p.rendered} == {"/"}


def test_a_partial_object_left_by_a_killed_build_is_discarded(tmp_path: Path) -> None:
    host, site = demo(tmp_path)
    first = build_once(host, site)
    page = next(p for p in first.pages if p.template == "post.html")
    objects = build_dir(host, site) / "objects"
    # what a build killed half way through writing this page would leave
    (objects / page.hash).write_bytes(first.read(page.path)[:100])
    (objects / ".incomplete").touch()
    record = build_dir(host, site) / RECORD
    record.unlink()  # and it never got to record its tree
    again = build_once(host, site)
    assert again.read(page.path) == first.read(page.path)
    assert not (objects / ".incomplete").exists()


def _old_layout_pickle(format_: str) -> bytes:
    """A record as the flat layout wrote it: its classes live in the flat modules
    ``tree`` and ``sandbox`` of ``render``, which no longer exist (protocol 0, by hand)."""
    return (
        b"(dp0\nVformat\np1\nV" + format_.encode() + b"\np2\n"
        b"sVorder\np3\n(lp4\ncrender.tree\nPageRecord\np5\nasVroutes\np6\n"
        b"crender.sandbox\nRead\np7\ns."
    )


@pytest.mark.parametrize("format_", [FORMAT, "render-build-10/0.1.0"])
def test_a_record_written_by_the_flat_layout_is_rebuilt_not_a_crash(
    tmp_path: Path, format_: str
) -> None:
    host, site = demo(tmp_path)
    first = build_once(host, site)
    record = build_dir(host, site) / RECORD
    record.write_bytes(_old_layout_pickle(format_))
    assert load_previous(record.parent) == Previous()
    again = build_once(host, site)
    assert again.rendered == len(first.pages) and again.reused == 0
    assert tree(again) == tree(first)
    assert build_once(host, site).rendered == 0  # and the new record is read back
