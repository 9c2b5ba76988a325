"""The report document: what the ledger knows about each site's builds, in one versioned shape.

``render report SITE --json`` prints it for one site, ``render dashboard``
writes it for every site as ``data.json``, and the terminal report, the HTML
dashboard, the CSV files and the Prometheus metrics are all drawn from it, so
they can never disagree. Its shape is ``schema-1.json`` beside this file (JSON
Schema, draft 2020-12); a change that is not purely additive bumps ``schema``.

A *build* is a finished run that did something: every outcome but
``skipped`` (nothing changed, no build made). ``latest`` is a site's last
build; ``history`` its last ``HISTORY`` builds, oldest first, one point each:

- Lighthouse scores: the mean over the pages audited (or carried) in that build;
- LCP and CLS: the worst page's, since a budget is about the worst page;
- SEO errors and warnings: the findings of the SEO rules (Lighthouse budget
  failures and the no-JavaScript read are counted apart);
- objects and bytes published: blobs the build uploaded (0 when it made no new version).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from render.lighthouse import CATEGORIES, METRICS, PARITY_RULE
from render.publish.reports import reports_prefix
from render.run.ledger import Ledger

SCHEMA = 1
HISTORY = 90  # builds per site in ``history`` (the dashboard's charts)
FIRST_PAGES = 5  # pages listed per SEO rule

Document = dict[str, Any]


def schema() -> dict[str, Any]:
    """The JSON Schema of the document (``render/report/schema-1.json``)."""
    text = resources.files("render.report").joinpath(f"schema-{SCHEMA}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def site_ids(ledger: Ledger) -> list[tuple[str, str]]:
    """Every site the ledger knows, by owner and name."""
    rows = ledger.select(
        "select owner, site from sites union select owner, site from runs order by 1, 2"
    )
    return [(r[0], r[1]) for r in rows]


def document(
    ledger: Ledger,
    sites: Iterable[tuple[str, str]] | None = None,
    *,
    history: int = HISTORY,
    budgets: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
    now: float | None = None,
) -> Document:
    """``{"schema": 1, "generated": ..., "sites": [...]}`` for ``sites`` (default: every site)."""
    chosen = site_ids(ledger) if sites is None else list(sites)
    generated = iso(now if now is not None else datetime.now(UTC).timestamp())
    return {
        "schema": SCHEMA,
        "generated": generated,
        "sites": [
            site_document(
                ledger, owner, name, history=history, budgets=(budgets or {}).get((owner, name))
            )
            for owner, name in chosen
        ],
    }


def site_document(
    ledger: Ledger,
    owner: str,
    name: str,
    *,
    history: int = HISTORY,
    budgets: Mapping[str, float] | None = None,
) -> Document:
    runs = ledger.select(
        "select id, reason, started, finished, outcome, stage, message, pages, rendered, reused,"
        " version, timings from runs where owner=? and site=? and finished is not null"
        " and outcome != 'skipped' order by id desc limit ?",
        (owner, name, max(history, 1)),
    )
    live = ledger.select("select live_version from sites where owner=? and site=?", (owner, name))
    versions = {
        r["version"]: r
        for r in ledger.select(
            "select version, files, bytes, new_blobs, new_bytes from versions"
            " where owner=? and site=?",
            (owner, name),
        )
    }
    runs = list(reversed(runs))
    points = _history(ledger, owner, name, runs, versions) if history > 0 else []
    latest = _latest(ledger, owner, name, runs[-1], versions, budgets) if runs else None
    return {
        "site": f"{owner}/{name}",
        "owner": owner,
        "name": name,
        "live_version": live[0][0] if live else None,
        "latest": latest,
        "history": points[-history:] if history > 0 else [],
    }


def _published(run: Any, versions: Mapping[str, Any]) -> dict[str, Any]:
    row: Any = versions.get(run["version"]) if run["version"] else None
    new = run["outcome"] == "published" and row is not None
    return {
        "objects": row["new_blobs"] if new else 0,
        "bytes": row["new_bytes"] if new else 0,
        "files": row["files"] if row is not None else None,
        "total_bytes": row["bytes"] if row is not None else None,
    }


def _seconds(run: Any) -> float:
    return round(float(run["finished"] - run["started"]), 3)


STAGES = ("snapshot", "build", "seo", "lighthouse", "publish", "out", "mirror", "purge", "reports")


def stage_order(stage: str) -> tuple[int, str]:
    """The pipeline's order of stages (unknown ones after, by name)."""
    return (STAGES.index(stage) if stage in STAGES else len(STAGES), stage)


def _timings(run: Any) -> dict[str, float]:
    data = json.loads(run["timings"] or "{}")
    return {k: round(float(data[k]), 3) for k in sorted(data, key=stage_order)}


def _is_seo_rule(rule: str) -> bool:
    return rule != PARITY_RULE and not rule.startswith("lighthouse-")


def _history(
    ledger: Ledger, owner: str, name: str, runs: Sequence[Any], versions: Mapping[str, Any]
) -> list[Document]:
    if not runs:
        return []
    first = runs[0]["id"]
    counts: dict[int, dict[str, int]] = {}
    for r in ledger.select(
        "select run_id, level, count(*) from seo_findings where owner=? and site=? and run_id>=?"
        f" and rule != '{PARITY_RULE}' and rule not like 'lighthouse-%' group by run_id, level",
        (owner, name, first),
    ):
        counts.setdefault(r[0], {})[r[1]] = r[2]
    scores: dict[int, Any] = {
        r["run_id"]: r
        for r in ledger.select(
            "select run_id, count(*) as pages, avg(performance) as performance,"
            " avg(accessibility) as accessibility, avg(best_practices) as best_practices,"
            " avg(seo) as seo, max(json_extract(metrics, '$.lcp')) as lcp,"
            " max(json_extract(metrics, '$.cls')) as cls from lighthouse_scores"
            " where owner=? and site=? and run_id>=? group by run_id",
            (owner, name, first),
        )
    }
    out = []
    for run in runs:
        lh = scores.get(run["id"])
        published = _published(run, versions)
        out.append(
            {
                "run": run["id"],
                "finished": iso(run["finished"]),
                "outcome": run["outcome"],
                "version": run["version"],
                "seconds": _seconds(run),
                "timings": _timings(run),
                "pages": run["pages"],
                "rendered": run["rendered"],
                "objects": published["objects"],
                "bytes": published["bytes"],
                "scores": {c: _round(lh[c.replace("-", "_")]) if lh else None for c in CATEGORIES},
                "lcp": _round(lh["lcp"]) if lh else None,
                "cls": _round(lh["cls"], 4) if lh else None,
                "seo_errors": counts.get(run["id"], {}).get("error", 0),
                "seo_warnings": counts.get(run["id"], {}).get("warning", 0),
            }
        )
    return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _latest(
    ledger: Ledger,
    owner: str,
    name: str,
    run: Any,
    versions: Mapping[str, Any],
    budgets: Mapping[str, float] | None,
) -> Document:
    findings = ledger.select(
        "select rule, level, path, message from seo_findings"
        " where owner=? and site=? and run_id=? order by rowid",  # the (owner, site, run_id) index
        (owner, name, run["id"]),
    )
    rules: dict[str, dict[str, Any]] = {}
    lighthouse_findings = []
    no_javascript = []
    for f in findings:
        if f["rule"] == PARITY_RULE:
            no_javascript.append({"path": f["path"], "message": f["message"]})
        elif f["rule"].startswith("lighthouse-"):
            lighthouse_findings.append(dict(f))
        else:
            entry = rules.setdefault(
                f["rule"], {"rule": f["rule"], "level": f["level"], "count": 0, "pages": []}
            )
            entry["count"] += 1
            if len(entry["pages"]) < FIRST_PAGES:
                entry["pages"].append(f["path"])
    ordered = sorted(rules.values(), key=lambda r: (r["level"] != "error", r["rule"]))
    under: dict[str, list[str]] = {}
    for lf in lighthouse_findings:
        category = lf["rule"].removeprefix("lighthouse-")
        if category in CATEGORIES:
            under.setdefault(lf["path"], []).append(category)
    pages = []
    for a in ledger.select(
        "select path, measured_version, performance, accessibility, best_practices, seo,"
        " metrics, report from lighthouse_scores where owner=? and site=? and run_id=?"
        " order by path",
        (owner, name, run["id"]),
    ):
        metrics = json.loads(a["metrics"] or "{}")
        pages.append(
            {
                "path": a["path"],
                "measured_version": a["measured_version"],
                "scores": {c: _round(a[c.replace("-", "_")]) for c in CATEGORIES},
                "metrics": {m: _round(metrics.get(m), 4) for m in METRICS},
                "report": a["report"],
                "under_budget": sorted(under.get(a["path"], [])),
            }
        )
    version = run["version"]
    stored = version if run["outcome"] in ("published", "unchanged") else None
    return {
        "run": run["id"],
        "reason": run["reason"],
        "outcome": run["outcome"],
        "stage": run["stage"],
        "message": run["message"],
        "started": iso(run["started"]),
        "finished": iso(run["finished"]),
        "seconds": _seconds(run),
        "version": version,
        "pages": run["pages"],
        "rendered": run["rendered"],
        "reused": run["reused"],
        "timings": _timings(run),
        "published": _published(run, versions),
        "seo": {
            "errors": sum(r["count"] for r in ordered if r["level"] == "error"),
            "warnings": sum(r["count"] for r in ordered if r["level"] == "warning"),
            "rules": ordered,
        },
        "lighthouse": {
            "budgets": {k: float(v) for k, v in sorted((budgets or {}).items())},
            "pages": pages,
            "findings": lighthouse_findings,
        },
        "no_javascript": no_javascript,
        "reports": None if stored is None else f"{reports_prefix(owner, name)}{stored}/",
    }
