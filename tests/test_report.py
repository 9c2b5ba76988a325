"""``render report``, ``render dashboard`` and ``render metrics`` over a host with a long history."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families
from reportkit import PAGES, add_history
from sitekit import Host, SiteSpec, html, make_host

from render.publish.store import LocalStore
from render.report.document import HISTORY, document, schema
from render.report.serve import WithDashboard, is_loopback_host
from render.run.ledger import open_ledger

BUILDS = 90
SITES = ("acme/blog", "zed/shop")


def _spec(site: str) -> SiteSpec:
    owner, name = site.split("/")
    return SiteSpec(
        base_url=f"https://{name}.example.com",  # a host name belongs to one site
        templates={
            "index.html": html(f"<h1>{site}</h1><p>hello</p>"),
            "404.html": html("<p>gone</p>"),
        },
        routes=[{"path": "/", "template": "index.html"}],
        extra_toml="[lighthouse.budgets]\nperformance = 0.9\n",
    )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    """Two sites: real builds first, then 90 builds each through the ledger's API."""
    made = make_host(tmp_path_factory.mktemp("report"), sites={s: _spec(s) for s in SITES})
    for site in SITES:
        report = made.run(site)
        assert report.version is not None
    store = LocalStore(made.state_dir / "store")
    with open_ledger(made.state_dir) as ledger:
        for n, site in enumerate(SITES):
            owner, name = site.split("/")
            add_history(ledger, owner, name, builds=BUILDS, seed=n, store=store)
    return made


def _validate(doc: object) -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.Draft202012Validator(schema()).validate(doc)


def test_report_json_validates_and_holds_the_latest_build(host: Host) -> None:
    result = host.cli("report", "blog", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    _validate(doc)
    assert doc["schema"] == 1
    (site,) = doc["sites"]
    assert site["site"] == "acme/blog"
    assert len(site["history"]) == HISTORY == BUILDS  # the two real builds are older than 90
    latest = site["latest"]
    assert latest["outcome"] == "published" and latest["version"] == site["live_version"]
    assert set(latest["timings"]) >= {"snapshot", "build", "lighthouse", "publish"}
    assert [p["path"] for p in latest["lighthouse"]["pages"]] == sorted(PAGES)
    assert latest["lighthouse"]["budgets"] == {"performance": 0.9}
    assert latest["no_javascript"][0]["path"] == "index.html"
    rules = {r["rule"]: r for r in latest["seo"]["rules"]}
    assert "js-only-content" not in rules and rules["description-missing"]["level"] == "warning"
    assert latest["reports"] == f"sites/acme/blog/reports/{latest['version']}/"


def test_a_real_build_alone_validates_too(tmp_path: Path) -> None:
    made = make_host(tmp_path, sites={"acme/blog": _spec("acme/blog")})
    made.run("acme/blog")
    with open_ledger(made.state_dir) as ledger:
        doc = document(ledger)
    _validate(doc)
    latest = doc["sites"][0]["latest"]
    assert latest["pages"] == 2 and latest["published"]["objects"] >= 2
    assert "reports" in latest["timings"]


def test_report_tables_show_stages_findings_and_scores(host: Host) -> None:
    result = host.cli("report", "acme/blog")
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "acme/blog: latest build",
        "Seconds per stage",
        "description-missing",
        "Lighthouse (budgets: perf 0.90)",
        "posts/first/index.html",
        "Read with JavaScript off",
        "12 of 40 words",
    ):
        assert text in out, text


def test_report_on_an_unknown_site_is_one_error(host: Host) -> None:
    result = host.cli("report", "nope")
    assert result.exit_code == 2
    assert result.output.startswith("Error: config: no site 'nope' in ")


def test_metrics_parse_with_prometheus_client(host: Host) -> None:
    result = host.cli("metrics")
    assert result.exit_code == 0, result.output
    families = {f.name: f for f in text_string_to_metric_families(result.output)}
    assert families["render_sites"].samples[0].value == 2
    scores = {
        (s.labels["site"], s.labels["category"]): s.value
        for s in families["render_lighthouse_score"].samples
    }
    assert set(scores) == {
        (site, c)
        for site in SITES
        for c in ("performance", "accessibility", "best-practices", "seo")
    }
    success = {s.labels["site"]: s.value for s in families["render_last_build_success"].samples}
    assert success == {"acme/blog": 1.0, "zed/shop": 1.0}
    findings = {
        (s.labels["site"], s.labels["kind"], s.labels["level"]): s.value
        for s in families["render_findings"].samples
    }
    assert findings[("acme/blog", "no_javascript", "warning")] == 1
    stages = {s.labels["stage"] for s in families["render_last_build_stage_seconds"].samples}
    assert "lighthouse" in stages
    out = host.root / "render.prom"
    assert host.cli("metrics", "-o", str(out)).exit_code == 0
    assert out.read_text() == result.output


def test_dashboard_writes_data_json_and_a_csv_per_metric(host: Host, tmp_path: Path) -> None:
    out = tmp_path / "dash"
    result = host.cli("dashboard", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote the dashboard of 2 site(s)" in result.output
    doc = json.loads((out / "data.json").read_text())
    _validate(doc)
    rows = list(
        csv.DictReader(io.StringIO((out / "csv" / "lighthouse_performance.csv").read_text()))
    )
    assert len(rows) == 2 * BUILDS and {r["site"] for r in rows} == set(SITES)
    assert (out / "csv" / "stage_seconds.csv").is_file() and (
        out / "csv" / "seo_errors.csv"
    ).is_file()
    for site in SITES:
        page = (out / "sites" / site / "index.html").read_text()
        assert "<script" not in page, "the dashboard carries no script"
        assert page.count('<figure class="chart"') == 5
    # the latest build's Lighthouse reports are reachable from the dashboard, copied from the store
    latest = doc["sites"][0]["latest"]
    assert [p["path"] for p in latest["lighthouse"]["pages"]] == sorted(PAGES)
    for audit in latest["lighthouse"]["pages"]:
        assert (out / "reports" / "acme" / "blog" / f"{audit['report']}.html").is_file()
    # written again over itself; a folder that is not a dashboard is refused
    assert host.cli("dashboard", "-o", str(out)).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused = host.cli("dashboard", "-o", str(other))
    assert refused.exit_code == 2 and "holds no dashboard" in refused.output
    assert (other / "notes.txt").read_text() == "mine"


def test_an_empty_ledger_gives_a_page_saying_there_are_no_builds(tmp_path: Path) -> None:
    made = make_host(tmp_path, sites={"acme/blog": _spec("acme/blog")})
    out = tmp_path / "dash"
    assert made.cli("dashboard", "-o", str(out)).exit_code == 0
    page = (out / "index.html").read_text()
    assert "There are no builds yet" in page
    assert json.loads((out / "data.json").read_text())["sites"] == []
    result = made.cli("report", "acme/blog")
    assert result.exit_code == 0 and "acme/blog: no builds yet" in result.output
    doc = json.loads(made.cli("report", "acme/blog", "--json").output)
    _validate(doc)
    assert doc["sites"][0]["latest"] is None and doc["sites"][0]["history"] == []


def test_the_dashboard_answers_only_to_loopback_names(host: Host, tmp_path: Path) -> None:
    def site(_host: str, path: str) -> object:
        from render.check.loopback import Response

        return Response(status=404, body=b"site 404")

    resolver = WithDashboard(site, host=host.config, folder=tmp_path / "d")  # type: ignore[arg-type]
    assert resolver("127.0.0.1:8000", "/_dashboard").status == 301
    page = resolver("127.0.0.1:8000", "/_dashboard/")
    assert page.status == 200 and b"SEO dashboard" in page.body
    assert resolver("blog.example.com", "/_dashboard/").body == b"site 404"
    assert resolver("localhost:1", "/_dashboard/../render.toml").status == 404
    assert resolver("localhost:1", "/_dashboard/data.json").content_type.startswith(
        "application/json"
    )
    assert [
        is_loopback_host(h) for h in ("127.0.0.1:80", "x.y.localhost:9", "[::1]:80", "evil.test")
    ] == [
        True,
        True,
        True,
        False,
    ]


def test_charts_are_drawn_by_pygal_with_one_vertex_per_build(host: Host, tmp_path: Path) -> None:
    out = tmp_path / "dash"
    assert host.cli("dashboard", "-o", str(out)).exit_code == 0
    page = (out / "sites" / "acme" / "blog" / "index.html").read_text()
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == 5 and all("pygal" in s for s in svgs)


def test_the_grafana_dashboard_reads_metrics_render_exports(host: Host) -> None:
    grafana = json.loads(
        (Path(__file__).parent.parent / "ovh/grafana/render-dashboard.json").read_text()
    )
    exported = {f.name for f in text_string_to_metric_families(host.cli("metrics").output)}
    exprs = [t["expr"] for p in grafana["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"\brender_\w+", expr))
        assert names and names <= exported, (expr, names - exported)


def test_a_failed_build_is_the_latest_with_its_stage_and_message(tmp_path: Path) -> None:
    made = make_host(tmp_path, sites={"acme/blog": _spec("acme/blog")})
    made.run("acme/blog")
    (made.site_dir("acme/blog") / "templates" / "index.html").write_text(
        html("<h1>{{ row.titel }}</h1>"), encoding="utf-8"
    )
    assert made.cli("force", "acme/blog").exit_code == 1
    doc = json.loads(made.cli("report", "acme/blog", "--json").output)
    _validate(doc)
    site = doc["sites"][0]
    latest = site["latest"]
    assert (latest["outcome"], latest["stage"], latest["reports"]) == ("failed", "build", None)
    assert "'row' is undefined" in latest["message"]
    assert site["live_version"] == site["history"][0]["version"]  # the first build stays live
    assert [p["outcome"] for p in site["history"]] == ["published", "failed"]
    out = made.cli("report", "acme/blog").output
    assert "failed" in out and "build: " in out
    metrics = {f.name: f for f in text_string_to_metric_families(made.cli("metrics").output)}
    assert metrics["render_last_build_success"].samples[0].value == 0


def test_a_site_without_audits_gets_a_dashboard_too(tmp_path: Path) -> None:
    """A build that ran no Lighthouse leaves the scores' axis empty; the charts still draw."""
    made = make_host(tmp_path, sites={"acme/blog": _spec("acme/blog")})
    made.run("acme/blog", skip_lighthouse=True)
    out = tmp_path / "dash"
    result = made.cli("dashboard", "-o", str(out))
    assert result.exit_code == 0, result.output
    page = (out / "sites" / "acme" / "blog" / "index.html").read_text()
    assert page.count('<figure class="chart" data-points="1">') == 5
