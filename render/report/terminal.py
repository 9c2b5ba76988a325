"""The latest build of a site as rich tables: what ``render report SITE`` shows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from render.lighthouse import CATEGORIES

_SHORT = {"performance": "perf", "accessibility": "a11y", "best-practices": "bp", "seo": "seo"}


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def renderables(site: dict[str, Any]) -> Iterator[RenderableType]:
    """Tables for one site of the report document."""
    latest = site["latest"]
    if latest is None:
        yield Text(f"{site['site']}: no builds yet (run 'render force {site['site']}')")
        return
    yield _summary(site, latest)
    if latest["timings"]:
        stages = Table(title="Seconds per stage", title_justify="left")
        for stage in latest["timings"]:
            stages.add_column(stage, justify="right")
        stages.add_column("total", justify="right")
        stages.add_row(
            *[f"{v:.2f}" for v in latest["timings"].values()], f"{latest['seconds']:.2f}"
        )
        yield stages
    seo = latest["seo"]
    title = f"SEO: {seo['errors']} errors, {seo['warnings']} warnings"
    if seo["rules"]:
        rules = Table(title=title, title_justify="left")
        for column in ("level", "rule", "pages", "first pages"):
            rules.add_column(column, justify="right" if column == "pages" else "left")
        for rule in seo["rules"]:
            style = "red" if rule["level"] == "error" else "yellow"
            more = rule["count"] - len(rule["pages"])
            first = ", ".join(p or "(site)" for p in rule["pages"]) + (
                f" (+{more})" if more else ""
            )
            rules.add_row(Text(rule["level"], style=style), rule["rule"], str(rule["count"]), first)
        yield rules
    else:
        yield Text(title)
    yield from _lighthouse(latest)
    if latest["no_javascript"]:
        nojs = Table(title="Read with JavaScript off", title_justify="left")
        nojs.add_column("page")
        nojs.add_column("finding")
        for f in latest["no_javascript"]:
            nojs.add_row(f["path"], f["message"])
        yield nojs
    else:
        yield Text("Read with JavaScript off: every sampled page shows its content")


def _summary(site: dict[str, Any], latest: dict[str, Any]) -> Table:
    table = Table(title=f"{site['site']}: latest build", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    outcome = latest["outcome"]
    style = "green" if outcome in ("published", "unchanged") else "red"
    table.add_row("result", Text(outcome, style=style))
    if latest["message"]:
        table.add_row("error", f"{latest['stage']}: {latest['message']}")
    table.add_row("version", latest["version"] or "-")
    table.add_row("live version", site["live_version"] or "-")
    table.add_row("when", f"{latest['finished']} ({latest['reason']}, {latest['seconds']:.2f} s)")
    if latest["pages"] is not None:
        table.add_row(
            "pages", f"{latest['pages']} ({latest['rendered']} rendered, {latest['reused']} reused)"
        )
    pub = latest["published"]
    table.add_row(
        "published",
        f"{pub['objects']} objects, {size(pub['bytes'])}"
        + (f" (version: {pub['files']} files, {size(pub['total_bytes'])})" if pub["files"] else ""),
    )
    if latest["reports"]:
        table.add_row("stored reports", latest["reports"])
    return table


def _lighthouse(latest: dict[str, Any]) -> Iterator[RenderableType]:
    lh = latest["lighthouse"]
    if not lh["pages"] and not lh["findings"]:
        yield Text("Lighthouse: no audits in this build")
        return
    budgets = lh["budgets"]
    title = "Lighthouse" + (
        " (budgets: " + ", ".join(f"{_SHORT.get(k, k)} {v:.2f}" for k, v in budgets.items()) + ")"
        if budgets
        else ""
    )
    table = Table(title=title, title_justify="left")
    table.add_column("page")
    for category in CATEGORIES:
        table.add_column(_SHORT[category], justify="right")
    for metric in ("LCP", "CLS", "TBT", "FCP"):
        table.add_column(metric, justify="right")
    for page in lh["pages"]:
        cells: list[RenderableType] = [page["path"]]
        for category in CATEGORIES:
            score = page["scores"][category]
            under = category in page["under_budget"] or (
                score is not None and category in budgets and score < budgets[category]
            )
            text = "-" if score is None else f"{score:.2f}"
            cells.append(Text(text, style="red" if under else "green" if score == 1 else ""))
        m = page["metrics"]
        cls = "-" if m["cls"] is None else f"{m['cls']:.3f}"
        cells += [_ms(m["lcp"]), cls, _ms(m["tbt"]), _ms(m["fcp"])]
        table.add_row(*cells)
    yield table
    for f in lh["findings"]:
        yield Text(
            f"  {f['level']}: {f['path']}: {f['message']}",
            style="red" if f["level"] == "error" else "yellow",
        )
