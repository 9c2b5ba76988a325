"""Lighthouse on sampled pages: sampling, carry-forward, budgets, and real audits.

The first tests pass a small fake through the ``Runner`` seam to pin the
choosing logic; the ``browser``/``lighthouse`` tests run real Lighthouse 12.8.2
in Debian's Chromium on tiny pages, several assertions per audit to keep the
file to about a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from lhpages import FAST, make_build, page

from render.build.tree import Build, FileEntry
from render.check.lhrunner import (
    AuditJob,
    ChromiumRunner,
    FailureKind,
    JobFailure,
    JobResult,
    Method,
    NetworkBlock,
    RunOutcome,
    RunResult,
    find_lighthouse,
    find_tools,
    namespace_available,
)
from render.check.loopback import Response, serve
from render.config import LighthouseConfig, load_host, load_site
from render.errors import ConfigError, RenderError
from render.lighthouse import AuditState, LighthouseReport, check, median_run, sample_pages
from render.run.ledger import Ledger

SCORES = {"performance": 0.99, "accessibility": 1.0, "best-practices": 1.0, "seo": 1.0}
METRICS = {"lcp": 900.0, "cls": 0.0, "tbt": 0.0, "fcp": 800.0, "speed_index": 850.0}


@dataclass
class FakeRunner:
    """Answers every job with fixed scores (per URL overrides) and records what it was asked."""

    scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    fail: Mapping[str, FailureKind] = field(default_factory=dict)
    js_on: Mapping[str, str] = field(default_factory=dict)  # per URL: text seen with JS on
    asked: list[AuditJob] = field(default_factory=list)

    def run(
        self,
        files: Mapping[str, FileEntry],
        objects: Path,
        jobs: Sequence[AuditJob],
        *,
        config: LighthouseConfig,
        progress: Callable[[str], None] | None = None,
    ) -> RunOutcome:
        results = {}
        for job in jobs:
            self.asked.append(job)
            kind = self.fail.get(job.url)
            if kind is not None:
                failure = JobFailure(kind=kind, message="killed", stderr_tail="chromium: stuck")
                results[job.path] = JobResult(path=job.path, failure=failure)
                continue
            run = RunResult(
                scores=self.scores.get(job.url, SCORES),
                metrics=METRICS,
                html=f"<!doctype html><title>report {job.url}</title>".encode(),
            )
            results[job.path] = JobResult(
                path=job.path,
                runs=(run,) * job.runs,
                js_on=self.js_on.get(job.url, "Main text"),
                js_off="Main text",
            )
        return RunOutcome(results=results, network=NetworkBlock.browser, method=Method.node)


def _site(tmp_path: Path, *, changed: bool = False) -> dict[str, tuple[int, bytes]]:
    post = b"<!doctype html><title>one</title><main>post one, edited</main>" if changed else b""
    return {
        "/": (0, page("Home", "<main>home</main>")),
        "/posts/one/": (1, post or page("One", "<main>post one</main>")),
        "/posts/two/": (1, page("Two", "<main>post two</main>")),
        "/posts/three/": (1, page("Three", "<main>post three</main>")),
        "/tags/a/": (2, page("A", "<main>tag a</main>")),
        "/feed.xml": (3, b"<rss/>"),
        "/404.html": (-1, page("Missing", "<main>not here</main>")),
    }


def test_sample_is_home_then_first_pages_of_each_route(tmp_path: Path) -> None:
    build = make_build(tmp_path, _site(tmp_path))
    assert [p.url for p in sample_pages(build, 1)] == ["/", "/posts/one/", "/tags/a/"]
    assert [p.url for p in sample_pages(build, 2)] == [
        "/",
        "/posts/one/",
        "/posts/two/",
        "/tags/a/",
    ]


def _recorded(tmp_path: Path, report: LighthouseReport) -> list[dict[str, Any]]:
    """``report`` through the ledger and back, as the next run's ``previous``."""
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        run_id = ledger.start_run("tests", "lighthouse", reason="build")
        ledger.record_lighthouse(run_id, "tests", "lighthouse", report.ledger_audits())
        return ledger.last_lighthouse("tests", "lighthouse")


def _with_reports(build: Build, report: LighthouseReport) -> Build:
    """The build as the pipeline leaves it: the audits' HTML reports in its objects, not its tree."""
    for data in report.html().values():
        build.blobs.write(data)
    return build


def test_unchanged_pages_carry_their_scores_forward(tmp_path: Path) -> None:
    config = LighthouseConfig(pages_per_route=1)
    first = make_build(tmp_path, _site(tmp_path))
    runner = FakeRunner()
    report = check(first, config=config, runner=runner)
    assert [j.runs for j in runner.asked] == [1, 1, 1]
    assert {a.state for a in report.audits} == {AuditState.fresh}
    first = _with_reports(first, report)  # as the pipeline does
    assert set(report.files()) == {"lighthouse.json"}  # the reports go beside the version
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        run_id = ledger.start_run("tests", "lighthouse", reason="build")
        ledger.record_lighthouse(run_id, "tests", "lighthouse", report.ledger_audits())
        previous = ledger.last_lighthouse("tests", "lighthouse")
    assert [p["path"] for p in previous] == [
        "index.html",
        "posts/one/index.html",
        "tags/a/index.html",
    ]
    assert previous[0]["scores"] == SCORES and previous[0]["metrics"] == METRICS

    second = make_build(tmp_path, _site(tmp_path, changed=True))
    runner = FakeRunner(scores={"/posts/one/": {**SCORES, "seo": 0.5}})
    again = check(second, config=config, previous=previous, runner=runner)
    # only the changed page is audited (and read without JavaScript) again
    assert [(j.url, j.runs, j.parity) for j in runner.asked] == [("/posts/one/", 1, True)]
    home = again.audit("index.html")
    assert home is not None and home.reused and home.scores == SCORES
    assert home.measured_version == first.files["index.html"].hash
    assert home.report == "lighthouse/index.html"
    assert again.reports["lighthouse/index.html"].startswith(b"<!doctype html><title>report /")
    edited = again.audit("posts/one/index.html")
    assert edited is not None and edited.state is AuditState.fresh and edited.scores["seo"] == 0.5
    assert edited.measured_version == second.files["posts/one/index.html"].hash

    runner = FakeRunner()
    check(second, config=config, previous=previous, runner=runner, full=True)
    assert [j.runs for j in runner.asked] == [1, 1, 1]


def test_a_ledger_from_before_report_hashes_still_opens_and_records(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as db:  # the lighthouse_scores table as first released
        db.execute(
            "create table lighthouse_scores (run_id integer not null, owner text not null,"
            " site text not null, path text not null, measured_version text, performance real,"
            " accessibility real, best_practices real, seo real, metrics text)"
        )
    db.close()
    audit = {"path": "index.html", "measured_version": "ab", "scores": SCORES, "metrics": METRICS}
    with Ledger(path) as ledger:
        ledger.record_lighthouse(1, "tests", "lighthouse", [{**audit, "report": "cd"}])
        ledger.record_lighthouse(2, "tests", "lighthouse", [{**audit, "measured_version": "ef"}])
        assert ledger.last_lighthouse("tests", "lighthouse") == [
            {**audit, "measured_version": "ef", "report": None, "carry": None}
        ]
        assert ledger.last_lighthouse("tests", "other") == []


def test_under_budget_blocks_and_a_crash_is_neither_pass_nor_zero(tmp_path: Path) -> None:
    build = make_build(tmp_path, _site(tmp_path))
    runner = FakeRunner(
        scores={"/posts/one/": {**SCORES, "accessibility": 0.7}},
        fail={"/tags/a/": FailureKind.timeout},
    )
    budgets = {"accessibility": 0.95, "seo": 1.0}
    report = check(build, config=LighthouseConfig(budgets=budgets, block=True), runner=runner)
    assert [(f.path, f.category, f.score) for f in report.failures] == [
        ("posts/one/index.html", "accessibility", 0.7)
    ]
    assert [(e.path, e.kind, e.stderr_tail) for e in report.errors] == [
        ("tags/a/index.html", FailureKind.timeout, "chromium: stuck")
    ]
    assert report.audit("tags/a/index.html") is None  # no scores recorded for it at all
    assert report.blocking
    assert not replace(report, block=False).blocking  # a warning only
    data = json.loads(report.to_json())
    assert [p["path"] for p in data["pages"]] == ["index.html", "posts/one/index.html"]
    assert data["errors"][0]["kind"] == "timeout" and data["blocking"] is True
    assert report.to_json() == replace(report, seconds=report.seconds + 1e-9).to_json()
    rules = [(r["rule"], r["level"]) for r in report.ledger_findings()]
    assert rules == [("lighthouse-accessibility", "error"), ("lighthouse-timeout", "error")]

    off = check(build, config=LighthouseConfig(enabled=False), runner=FakeRunner())
    assert not off.enabled and off.files() == {} and not off.blocking


def test_median_of_runs_is_kept() -> None:
    runs = [
        RunResult(scores={**SCORES, "performance": p}, metrics=METRICS, html=None)
        for p in (0.5, 0.9, 0.7)
    ]
    best = median_run(runs)
    assert best is not None and best.scores["performance"] == 0.7


def test_settle_ms_is_read_from_site_toml_and_has_a_floor(tmp_path: Path) -> None:
    (tmp_path / "render.toml").write_text("")
    folder = tmp_path / "sites" / "acme" / "blog"
    folder.mkdir(parents=True)
    site_toml = '[site]\nbase_url = "https://a.example"\n[lighthouse]\nsettle_ms = {}\n'
    host = load_host(tmp_path / "render.toml")
    (folder / "site.toml").write_text(site_toml.format(500))
    assert load_site(folder, host=host).lighthouse.settle_ms == 500
    (folder / "site.toml").write_text(site_toml.format(0))
    with pytest.raises(ConfigError) as caught:
        load_site(folder, host=host)
    assert caught.value.problems == [
        "sites/acme/blog/site.toml: lighthouse.settle_ms: must be between 100 and 10000, got 0"
    ]


def test_missing_chromium_says_run_make_setup() -> None:
    with pytest.raises(RenderError) as caught:
        find_tools(LighthouseConfig(chromium="/nonexistent/chromium"))
    assert "Chromium not found at /nonexistent/chromium" in caught.value.message
    assert caught.value.hint is not None and "make setup" in caught.value.hint


# --- real Chromium, real Lighthouse ------------------------------------------


def _require_tools() -> None:
    chromium = os.environ.get("RENDER_CHROMIUM") or "/usr/bin/chromium"
    require(shutil.which(chromium) is not None, f"Chromium not found at {chromium} (make setup)")
    require(shutil.which("node") is not None, "node not found (make setup)")
    require(find_lighthouse() is not None, "node_modules/lighthouse not found (make setup)")


@dataclass
class Outside:
    """A server the audited browser must not reach: 127.0.0.2, as an outside host stands in."""

    url: str
    hits: list[str]


@pytest.fixture
def outside() -> Iterator[Outside]:
    hits: list[str] = []

    def resolve(_host: str, path: str) -> Response:
        hits.append(path)
        return Response(body=b"reached", content_type="text/plain")

    with serve(resolve, host="127.0.0.2") as server:
        with urllib.request.urlopen(server.url + "/control") as reply:  # reachable from here
            assert reply.read() == b"reached"
        hits.clear()
        yield Outside(url=server.url, hits=hits)


def _calls_out(url: str) -> bytes:
    return page(
        "A page that calls out",
        f"<main><h1>Calling out</h1><p>This page asks another host for things.</p>"
        f'<img src="{url}/pixel.png" alt="A tracking pixel" width="1" height="1"></main>'
        f'<script>fetch("{url}/fetch").catch(() => null);'
        f'navigator.sendBeacon("{url}/beacon", "x");</script>',
    )


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf000001010100189dd2d10000000049454e44ae426082"
)


@pytest.mark.browser
@pytest.mark.lighthouse
def test_real_audits_budgets_js_only_content_and_no_outside_calls(
    tmp_path: Path, outside: Outside
) -> None:
    _require_tools()
    bad = page(
        "An inaccessible page",
        '<main><h1>Low contrast</h1><img src="/photo.png" width="40" height="40">'
        '<p style="color:#999;background:#aaa">Grey text on grey is hard to read for anyone.</p>'
        "</main>",
    )
    scripted = page(
        "A page written by a script",
        '<main id="main"></main><script>document.getElementById("main").textContent ='
        ' "This article text is written only by a script";</script>',
    )
    budgets = {"accessibility": 0.95, "best-practices": 0.9, "seo": 0.9, "performance": 0.5}
    config = LighthouseConfig(budgets=budgets, block=True, parallel=2, timeout=90)
    pages = {
        "/": (0, FAST),
        "/bad/": (1, bad),
        "/scripted/": (2, scripted),
        "/out/": (3, _calls_out(outside.url)),
    }
    build = make_build(tmp_path, pages, files={"photo.png": PNG}, lighthouse=config)
    seen: list[str] = []
    report = check(build, config=config, progress=seen.append)

    assert report.errors == ()
    assert report.network is (
        NetworkBlock.namespace if namespace_available() else NetworkBlock.browser
    )
    assert report.method is Method.node
    assert len(seen) == 4 and seen[-1].endswith("(4/4)")
    home = report.audit("index.html")
    assert home is not None and home.state is AuditState.fresh
    for category, minimum in budgets.items():  # the fast, accessible page reaches the budget
        assert (home.scores[category] or 0) >= minimum, (category, home.scores)
    assert all(
        isinstance(home.metrics[m], float | int)
        for m in ("lcp", "cls", "tbt", "fcp", "speed_index")
    )
    assert home.measured_version == build.files["index.html"].hash
    html = report.reports["lighthouse/index.html"]
    assert b"<!doctype html>" in html[:200] and b'"lighthouseVersion":"12.8.2"' in html

    # the image without alt and the grey-on-grey text fall under the accessibility budget
    failed = {(f.path, f.category) for f in report.failures}
    assert ("bad/index.html", "accessibility") in failed
    assert {p for p, c in failed if c == "accessibility"} == {"bad/index.html"}, report.failures
    assert not any(p == "index.html" for p, _ in failed)
    assert report.blocking

    # the script-only article is what a crawler misses
    assert [(f.path, f.excerpt) for f in report.findings] == [
        ("scripted/index.html", "This article text is written only by a script")
    ]
    # the page that calls out reached nothing outside, under Lighthouse or the no-JS read
    assert outside.hits == []

    data = json.loads(report.files()["lighthouse.json"])
    assert [p["path"] for p in data["pages"]] == sorted(p["path"] for p in data["pages"])
    assert data["js_only_content"][0]["url"] == "/scripted/"
    assert data["network"] == report.network.value


@pytest.mark.browser
def test_browser_settings_keep_a_page_off_the_network(tmp_path: Path, outside: Outside) -> None:
    _require_tools()
    config = LighthouseConfig(timeout=60)
    build = make_build(tmp_path, {"/out/": (0, _calls_out(outside.url))})
    runner = ChromiumRunner.from_config(config, network=NetworkBlock.browser)
    outcome = runner.run(
        build.files,
        build.objects,
        [AuditJob(path="out/index.html", url="/out/", runs=0)],
        config=config,
    )
    result = outcome.results["out/index.html"]
    assert result.failure is None and outcome.network is NetworkBlock.browser
    assert result.js_on is not None and "Calling out" in result.js_on  # the page itself loaded
    assert outside.hits == []


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


@pytest.mark.browser
@pytest.mark.lighthouse
def test_a_hung_page_times_out_and_is_reported(tmp_path: Path) -> None:
    _require_tools()
    hung = page(
        "A page that never finishes", "<main><h1>Busy</h1></main><script>while (true) {}</script>"
    )
    config = LighthouseConfig(timeout=8, budgets={"seo": 0.9}, block=True)
    build = make_build(tmp_path, {"/": (0, hung)}, lighthouse=config)
    runner = ChromiumRunner.from_config(config)
    report = check(build, config=config, runner=runner)
    assert report.audits == () and report.failures == ()
    assert [(e.path, e.kind) for e in report.errors] == [("index.html", FailureKind.timeout)]
    assert "killed" in report.errors[0].message
    assert report.blocking  # a budget that could not be checked is not a pass
    assert json.loads(report.to_json())["errors"][0]["kind"] == "timeout"
    assert _processes_with(runner.marker) == []  # the browser went with it


@pytest.mark.browser
def test_the_no_js_read_waits_for_late_script_content_and_reads_each_page_as_a_first_visit(
    tmp_path: Path,
) -> None:
    _require_tools()
    # the article text comes from a request the script makes a while after the load event
    late = page(
        "A page that fetches its text late",
        '<main id="main"><h1>Late</h1></main><script>addEventListener("load", () =>'
        ' setTimeout(() => fetch("/late.json").then(r => r.json()).then(d =>'
        ' document.getElementById("main").append(d.text)), 150));</script>',
    )
    # a welcome shown only to visitors the site has not stored anything about
    marks = page(
        "A page that marks the visitor",
        "<main><h1>Marked</h1><p>This page remembers that you were here.</p></main>"
        '<script>localStorage.setItem("seen", "1"); document.cookie = "seen=1";</script>',
    )
    welcome = page(
        "A page that greets new visitors",
        '<main id="main"><h1>Welcome</h1></main><script>if (!localStorage.getItem("seen")'
        ' && !document.cookie.includes("seen")) document.getElementById("main").append('
        '"Welcome text that only a script writes for new visitors");</script>',
    )
    pages = {"/late/": (0, late), "/marks/": (1, marks), "/welcome/": (2, welcome)}
    files = {"late.json": b'{"text": "Article text a script fetched after the load event"}'}
    build = make_build(tmp_path, pages, files=files)
    config = LighthouseConfig(parallel=1, timeout=60)
    jobs = [AuditJob(path=p.path, url=p.url, runs=0) for p in build.pages]
    outcome = ChromiumRunner.from_config(config).run(
        build.files, build.objects, jobs, config=config
    )
    assert outcome.workers == 1  # one worker read all three pages, one after the other
    late_read = outcome.results["late/index.html"]
    assert late_read.failure is None and late_read.js_on is not None
    assert "Article text a script fetched after the load event" in late_read.js_on
    assert "Article text" not in (late_read.js_off or "")
    welcome_read = outcome.results["welcome/index.html"]
    assert welcome_read.js_on is not None
    assert "Welcome text that only a script writes for new visitors" in welcome_read.js_on


def test_nothing_changed_starts_no_browser_and_gives_the_same_report(tmp_path: Path) -> None:
    config = LighthouseConfig(pages_per_route=1)
    first = make_build(tmp_path, _site(tmp_path), files={"site.css": b"main{color:#222}"})
    runner = FakeRunner(js_on={"/tags/a/": "Main text\nLoaded by a script only"})
    report = check(first, config=config, runner=runner)
    assert [f.path for f in report.findings] == ["tags/a/index.html"]
    first = _with_reports(first, report)
    idle = FakeRunner()
    again = check(first, config=config, previous=_recorded(tmp_path, report), runner=idle)
    assert idle.asked == []  # scores and the no-JS read both carried: no browser at all
    assert again.to_json() == report.to_json()  # the JS-only finding is carried too
    assert {a.state for a in again.audits} == {AuditState.reused}


def test_a_changed_style_or_script_audits_every_sampled_page_again(tmp_path: Path) -> None:
    config = LighthouseConfig(pages_per_route=1)
    first = make_build(tmp_path, _site(tmp_path), files={"site.css": b"main{color:#222}"})
    report = check(first, config=config, runner=FakeRunner())
    first = _with_reports(first, report)
    previous = _recorded(tmp_path, report)
    # the pages' bytes are the same; a subresource they load is not
    second = first.with_files({"site.css": b"main{color:#eee;background:#fff}"})
    runner = FakeRunner()
    again = check(second, config=config, previous=previous, runner=runner)
    assert [(j.url, j.runs, j.parity) for j in runner.asked] == [
        ("/", 1, True),
        ("/posts/one/", 1, True),
        ("/tags/a/", 1, True),
    ]
    assert {a.state for a in again.audits} == {AuditState.fresh}
