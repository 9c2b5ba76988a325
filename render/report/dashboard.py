"""The static HTML dashboard: every site at a glance, and a page per site over its last builds.

``write_dashboard(host, out)`` writes::

    index.html                          every site: live version, last result, the four
                                        Lighthouse scores with their trend, SEO errors and
                                        warnings, last build time
    sites/<owner>/<name>/index.html     charts over the last 90 builds, the latest findings,
                                        a table of the builds
    reports/<owner>/<name>/<sha256>.html  the latest build's Lighthouse HTML reports, copied
                                        from the store (they are never in the public site)
    data.json                           the report document (schema 1)
    csv/<metric>.csv                    one file per metric, one row per site and build
    style.css

Pages are plain HTML with inline SVG charts and no script, so they read the
same with JavaScript off; every chart's numbers are also in the builds table.
Charts are drawn by pygal (see ``_chart``). The folder is written beside the
target and swapped in whole, so a reader (``render serve``'s ``/_dashboard/``)
never sees half of one.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pygal
from pygal.style import Style

from render.config import HostConfig, load_site, site_dirs
from render.errors import RenderError, UsageError
from render.lighthouse import CATEGORIES
from render.publish.reports import html_key
from render.publish.store import open_store
from render.report.document import Document, document, stage_order
from render.report.terminal import size
from render.run.ledger import open_ledger

# pygal appends a sys.meta_path finder for its map plugins (pygal.maps.*) that has no
# find_spec, so every later import that no other finder resolves warns (ImportWarning).
# The dashboard draws no maps; the finder goes.
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]

MARKER = "data.json"  # a folder holding this is a dashboard this module may replace

_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#222",
    foreground_strong="#111",
    foreground_subtle="#999",
    font_family="system-ui, sans-serif",
    colors=("#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#c62828", "#00838f", "#5d4037"),
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    title_font_size=14,
)

# one CSV per metric: file name -> (header of the value, how a history point gives it)
CSV_METRICS: dict[str, Callable[[dict[str, Any]], object]] = {
    "lighthouse_performance": lambda p: p["scores"]["performance"],
    "lighthouse_accessibility": lambda p: p["scores"]["accessibility"],
    "lighthouse_best_practices": lambda p: p["scores"]["best-practices"],
    "lighthouse_seo": lambda p: p["scores"]["seo"],
    "lcp_ms": lambda p: p["lcp"],
    "cls": lambda p: p["cls"],
    "seo_errors": lambda p: p["seo_errors"],
    "seo_warnings": lambda p: p["seo_warnings"],
    "build_seconds": lambda p: p["seconds"],
    "pages": lambda p: p["pages"],
    "pages_rendered": lambda p: p["rendered"],
    "published_objects": lambda p: p["objects"],
    "published_bytes": lambda p: p["bytes"],
}


def configured_budgets(host: HostConfig) -> dict[tuple[str, str], dict[str, float]]:
    """Each configured site's Lighthouse budgets (a site whose site.toml has errors has none)."""
    out = {}
    for folder in site_dirs(host):
        try:
            site = load_site(folder, host=host)
        except RenderError:
            continue
        out[(site.id.owner, site.id.name)] = dict(site.lighthouse.budgets)
    return out


@dataclass(frozen=True, kw_only=True)
class Written:
    sites: int
    files: int
    folder: Path


def write_dashboard(
    host: HostConfig,
    out: Path,
    *,
    budgets: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
    workers: int | None = None,
) -> Written:
    """Write the dashboard of every site in the ledger into ``out`` (replaced whole)."""
    out = out.absolute()
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(
            f"{out} is not empty and holds no dashboard ({MARKER})",
            hint="name a new folder, or the folder of an earlier dashboard, with -o",
        )
    with open_ledger(host.state_dir) as ledger:
        doc = document(ledger, budgets=budgets)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        count = _write(doc, staging, host=host, workers=workers)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.rename(out, old)
            os.rename(staging, out)
            shutil.rmtree(old)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Written(sites=len(doc["sites"]), files=count, folder=out)


def _write(doc: Document, folder: Path, *, host: HostConfig, workers: int | None) -> int:
    folder.mkdir(parents=True)
    files = 0

    def put(rel: str, data: str | bytes) -> None:
        nonlocal files
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
        files += 1

    put("style.css", resources.files("render.report").joinpath("dashboard.css").read_bytes())
    put(MARKER, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    for name, text in csv_files(doc).items():
        put(f"csv/{name}.csv", text)
    stored = _copy_reports(doc, folder, host=host)
    files += len(stored)
    sites = doc["sites"]
    put("index.html", overview(doc))
    pages = _site_pages(sites, stored, workers=workers)
    for site, page in zip(sites, pages, strict=True):
        put(f"sites/{site['owner']}/{site['name']}/index.html", page)
    return files


def _site_pages(sites: Sequence[Document], stored: set[str], *, workers: int | None) -> list[str]:
    """Each site's page; over many sites, in processes (charts are CPU-bound pure Python)."""
    jobs = [(site, sorted(stored)) for site in sites]
    count = workers if workers is not None else min(os.cpu_count() or 1, 4)
    if count <= 1 or len(sites) < 8:
        return [site_page(site, set(s)) for site, s in jobs]
    with ProcessPoolExecutor(max_workers=count) as pool:
        return list(pool.map(_site_page_job, jobs, chunksize=max(1, len(jobs) // (count * 4))))


def _site_page_job(job: tuple[Document, list[str]]) -> str:
    site, stored = job
    return site_page(site, set(stored))


def _copy_reports(doc: Document, folder: Path, *, host: HostConfig) -> set[str]:
    """Copy the latest builds' HTML reports from the store; the ``owner/name/sha`` of each."""
    wanted = [
        (site["owner"], site["name"], page["report"])
        for site in doc["sites"]
        if site["latest"] is not None
        for page in site["latest"]["lighthouse"]["pages"]
        if page["report"]
    ]
    if not wanted:
        return set()
    copied = set()
    store = open_store(host)
    try:
        for owner, name, digest in wanted:
            dest = folder / "reports" / owner / name / f"{digest}.html"
            if dest.exists():
                copied.add(f"{owner}/{name}/{digest}")
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if store.download(html_key(owner, name, digest), dest):
                copied.add(f"{owner}/{name}/{digest}")
    finally:
        store.close()
    return copied


# --- CSV ---------------------------------------------------------------------------


def csv_files(doc: Document) -> dict[str, str]:
    """``{metric: CSV text}``: columns site, run, finished, version, outcome, value."""
    out = {}
    for metric, value in CSV_METRICS.items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["site", "run", "finished", "version", "outcome", metric])
        for site in doc["sites"]:
            for p in site["history"]:
                v = value(p)
                writer.writerow(
                    [
                        site["site"],
                        p["run"],
                        p["finished"],
                        p["version"] or "",
                        p["outcome"],
                        "" if v is None else v,
                    ]
                )
        out[metric] = buffer.getvalue()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["site", "run", "finished", "version", "outcome", "stage", "seconds"])
    for site in doc["sites"]:
        for p in site["history"]:
            for stage, seconds in p["timings"].items():
                writer.writerow(
                    [
                        site["site"],
                        p["run"],
                        p["finished"],
                        p["version"] or "",
                        p["outcome"],
                        stage,
                        seconds,
                    ]
                )
    out["stage_seconds"] = buffer.getvalue()
    return out


# --- HTML --------------------------------------------------------------------------

_e = html.escape


def _page(title: str, body: str, *, root: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        f'<link rel="stylesheet" href="{root}style.css"></head>\n<body>\n{body}\n</body></html>\n'
    )


def _score(value: float | None) -> str:
    if value is None:
        return '<td class="num">-</td>'
    grade = "good" if value >= 0.9 else "fair" if value >= 0.5 else "poor"
    return f'<td class="num score {grade}">{value * 100:.0f}</td>'


def _num(value: float | None, spec: str) -> str:
    return f'<td class="num">{"-" if value is None else format(value, spec)}</td>'


def _outcome(outcome: str) -> str:
    kind = "ok" if outcome in ("published", "unchanged") else "bad"
    return f'<span class="outcome {kind}">{_e(outcome)}</span>'


def overview(doc: Document) -> str:
    sites = doc["sites"]
    built = [s for s in sites if s["latest"] is not None]
    head = (
        f"<header><h1>SEO dashboard</h1><p>{len(sites)} site{'s' * (len(sites) != 1)},"
        f' generated {_e(doc["generated"])}. Data: <a href="data.json">data.json</a>'
        ' (schema 1), <a href="csv/">CSV per metric</a>.</p></header>'
    )
    if not built:
        body = head + (
            '<main><p class="empty">There are no builds yet. Run <code>render nightly</code>'
            " or <code>render force SITE</code>, then <code>render dashboard</code> again.</p></main>"
        )
        return _page("SEO dashboard", body, root="")
    rows = []
    for site in sites:
        latest = site["latest"]
        link = f'<a href="sites/{_e(site["owner"])}/{_e(site["name"])}/">{_e(site["site"])}</a>'
        if latest is None:
            rows.append(f'<tr><th scope="row">{link}</th><td colspan="10">no builds yet</td></tr>')
            continue
        point = site["history"][-1] if site["history"] else None
        scores = "".join(_score(point["scores"][c] if point else None) for c in CATEGORIES)
        rows.append(
            f'<tr data-site="{_e(site["site"])}"><th scope="row">{link}</th>'
            f"<td><code>{_e(site['live_version'] or '-')}</code></td>"
            f"<td>{_outcome(latest['outcome'])}</td>{scores}"
            f'<td class="trend">{_trend(site)}</td>'
            f'<td class="num">{latest["seo"]["errors"]}</td>'
            f'<td class="num">{latest["seo"]["warnings"]}</td>'
            f"<td><time>{_e(latest['finished'])}</time> ({latest['seconds']:.1f} s)</td></tr>"
        )
    table = (
        '<table class="overview"><thead><tr><th>site</th><th>live version</th><th>last result</th>'
        "<th>perf</th><th>a11y</th><th>best pr.</th><th>SEO</th><th>trend (scores)</th>"
        "<th>SEO errors</th><th>SEO warnings</th><th>last build</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
    return _page("SEO dashboard", head + f"<main>{table}</main>", root="")


def _trend(site: Document) -> str:
    """The four Lighthouse scores over the last builds, as one small line chart."""
    history = site["history"]
    if not any(p["scores"]["performance"] is not None for p in history):
        return "-"
    chart = pygal.Line(
        js=[],
        style=_STYLE,
        width=160,
        height=36,
        show_legend=False,
        show_x_labels=False,
        show_y_labels=False,
        show_dots=False,
        range=(0, 1),
        margin=0,
        spacing=0,
        explicit_size=True,
        disable_xml_declaration=True,
        stroke_style={"width": 1.5},
    )
    for category in CATEGORIES:
        chart.add(category, [p["scores"][category] for p in history])
    svg = _no_script(chart.render_sparkline(is_unicode=True, disable_xml_declaration=True))
    label = "Lighthouse scores over the last builds"
    return f'<span role="img" aria-label="{label}">{svg}</span>'


def _short_number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


_SCRIPT = re.compile(r"<script[^>]*>.*?</script>", re.S)


def _no_script(svg: str) -> str:
    """pygal always embeds its chart config for its tooltip script; with ``js=[]`` nothing reads it."""
    return _SCRIPT.sub("", svg)


def _chart(
    title: str,
    history: Sequence[Document],
    series: Sequence[tuple[str, Callable[[Document], float | None], bool]],
    *,
    kind: str = "line",
    y_range: tuple[float, float] | None = None,
    note: str = "",
) -> str:
    """One chart over the builds: ``series`` is ``(name, value of a point, on the second axis)``.

    pygal writes the SVG: no script (``js=[]``), its own CSS inlined, no dots
    (one path vertex per build keeps 100 sites x 5 charts in seconds).
    """
    cls = pygal.StackedLine if kind == "stacked" else pygal.Line
    # a date under every sixth or so build, the others blank: pygal takes a label equal
    # to a major one as major, so repeated dates would all be drawn
    every = max(1, len(history) // 6)
    labels = [p["finished"][5:10] if i % every == 0 else "" for i, p in enumerate(history)]
    chart = cls(
        js=[],
        style=_STYLE,
        width=720,
        height=280,
        show_dots=False,
        fill=kind == "stacked",
        x_labels_major=[label for label in labels if label],
        show_minor_x_labels=False,
        truncate_label=-1,
        disable_xml_declaration=True,
        legend_at_bottom=True,
        legend_at_bottom_columns=4,
        explicit_size=False,
        range=y_range,
        allow_interruptions=True,
        include_x_axis=kind == "stacked",
        value_formatter=_short_number,
    )
    chart.x_labels = labels
    for name, value, secondary in series:
        values = [value(p) for p in history]
        # a second axis with no point at all (no audits yet) has no range: pygal fails on it
        chart.add(name, values, secondary=secondary and any(v is not None for v in values))
    svg = _no_script(chart.render(is_unicode=True))
    caption = _e(title) + (f" <small>{_e(note)}</small>" if note else "")
    return (
        f'<figure class="chart" data-points="{len(history)}"><figcaption>{caption}</figcaption>'
        f'<div role="img" aria-label="{_e(title)}">{svg}</div></figure>'
    )


def site_page(site: Document, stored: set[str]) -> str:
    latest = site["latest"]
    title = f"{site['site']}: SEO dashboard"
    head = (
        f'<header><p><a href="../../../">All sites</a></p><h1>{_e(site["site"])}</h1>'
        f"<p>Live version <code>{_e(site['live_version'] or '-')}</code>.</p></header>"
    )
    if latest is None:
        return _page(
            title,
            head + '<main><p class="empty">There are no builds yet.</p></main>',
            root="../../../",
        )
    history = site["history"]
    stages = sorted({s for p in history for s in p["timings"]}, key=stage_order)
    charts = "".join(
        [
            _chart(
                "Lighthouse scores",
                history,
                [(c, _score_of(c), False) for c in CATEGORIES],
                y_range=(0, 1),
                note="mean of the audited pages",
            ),
            _chart(
                "LCP (ms) and CLS",
                history,
                [("LCP ms", lambda p: p["lcp"], False), ("CLS", lambda p: p["cls"], True)],
                note="worst audited page; CLS on the right axis",
            ),
            _chart(
                "SEO findings by severity",
                history,
                [
                    ("errors", lambda p: p["seo_errors"], False),
                    ("warnings", lambda p: p["seo_warnings"], False),
                ],
            ),
            _chart(
                "Seconds per stage",
                history,
                [(s, _stage_of(s), False) for s in stages],
                kind="stacked",
            ),
            _chart(
                "Objects and bytes published",
                history,
                [
                    ("objects", lambda p: p["objects"], False),
                    ("KB", lambda p: p["bytes"] / 1000, True),
                ],
                note="bytes (KB) on the right axis",
            ),
        ]
    )
    summary = (
        f"<p>Last build {_outcome(latest['outcome'])} at <time>{_e(latest['finished'])}</time>"
        f" ({_e(latest['reason'])}, {latest['seconds']:.1f} s)"
        + (f": {_e(latest['stage'] or '')}: {_e(latest['message'])}" if latest["message"] else "")
        + (
            f"; {latest['pages']} pages, {latest['rendered']} rendered, {latest['reused']} reused"
            if latest["pages"] is not None
            else ""
        )
        + f"; published {latest['published']['objects']} objects,"
        f" {_e(size(latest['published']['bytes']))}.</p>"
    )
    body = (
        head
        + "<main>"
        + summary
        + f'<section><h2>The last {len(history)} builds</h2><div class="charts">{charts}</div></section>'
        + _findings(site, latest, stored)
        + _builds_table(history, stages)
        + "</main>"
    )
    return _page(title, body, root="../../../")


def _score_of(category: str) -> Callable[[Document], float | None]:
    return lambda p: p["scores"][category]


def _stage_of(stage: str) -> Callable[[Document], float | None]:
    return lambda p: p["timings"].get(stage, 0.0)


def _findings(site: Document, latest: Document, stored: set[str]) -> str:
    parts = ["<section><h2>Latest findings</h2>"]
    seo = latest["seo"]
    parts.append(f"<h3>SEO: {seo['errors']} errors, {seo['warnings']} warnings</h3>")
    if seo["rules"]:
        rule_rows = "".join(
            f'<tr class="{_e(r["level"])}"><td>{_e(r["level"])}</td><td><code>{_e(r["rule"])}</code></td>'
            f'<td class="num">{r["count"]}</td><td>{_e(", ".join(p or "(site)" for p in r["pages"]))}</td></tr>'
            for r in seo["rules"]
        )
        parts.append(
            "<table><thead><tr><th>level</th><th>rule</th><th>pages</th>"
            f"<th>first pages</th></tr></thead><tbody>{rule_rows}</tbody></table>"
        )
    lh = latest["lighthouse"]
    parts.append("<h3>Lighthouse</h3>")
    if lh["pages"]:
        rows = []
        for page in lh["pages"]:
            key = f"{site['owner']}/{site['name']}/{page['report']}"
            report = (
                f'<a href="../../../reports/{_e(key)}.html">report</a>'
                if page["report"] and key in stored
                else "not stored"
            )
            m = page["metrics"]
            rows.append(
                f'<tr><th scope="row">{_e(page["path"])}</th>'
                + "".join(_score(page["scores"][c]) for c in CATEGORIES)
                + _num(m["lcp"], ",.0f")
                + _num(m["cls"], ".3f")
                + f"<td>{_e(', '.join(page['under_budget'])) or '-'}</td><td>{report}</td></tr>"
            )
        parts.append(
            "<table><thead><tr><th>page</th><th>perf</th><th>a11y</th><th>best pr.</th>"
            "<th>SEO</th><th>LCP ms</th><th>CLS</th><th>under budget</th><th>HTML report</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    else:
        parts.append("<p>No audits in this build.</p>")
    for f in lh["findings"]:
        parts.append(f'<p class="{_e(f["level"])}">{_e(f["path"])}: {_e(f["message"])}</p>')
    parts.append("<h3>Read with JavaScript off</h3>")
    if latest["no_javascript"]:
        items = "".join(
            f"<li>{_e(f['path'])}: {_e(f['message'])}</li>" for f in latest["no_javascript"]
        )
        parts.append(f"<ul>{items}</ul>")
    else:
        parts.append("<p>Every sampled page shows its content without JavaScript.</p>")
    parts.append("</section>")
    return "".join(parts)


def _builds_table(history: Sequence[Document], stages: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(s)} s</th>" for s in stages)
    rows = []
    for p in reversed(history):
        s = p["scores"]
        cells = [
            f"<td><time>{_e(p['finished'])}</time></td><td>{_outcome(p['outcome'])}</td>",
            f"<td><code>{_e(p['version'] or '-')}</code></td>",
            "".join(_score(s[c]) for c in CATEGORIES),
            _num(p["lcp"], ",.0f"),
            _num(p["cls"], ".3f"),
            f'<td class="num">{p["seo_errors"]}</td><td class="num">{p["seo_warnings"]}</td>',
            f'<td class="num">{p["seconds"]:.1f}</td>',
            "".join(f'<td class="num">{p["timings"].get(st, 0.0):.2f}</td>' for st in stages),
            f'<td class="num">{p["objects"]}</td><td class="num">{_e(size(p["bytes"]))}</td>',
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<section><h2>Builds</h2><table class="builds"><thead><tr><th>finished</th><th>result</th>'
        "<th>version</th><th>perf</th><th>a11y</th><th>best pr.</th><th>SEO</th><th>LCP ms</th>"
        f"<th>CLS</th><th>SEO errors</th><th>SEO warnings</th><th>seconds</th>{head}"
        f"<th>objects</th><th>bytes</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )
