"""``render plan``: how many workers a night of N sites needs, from the ledger's measured seconds.

Each finished build in the ledger recorded its seconds per stage (snapshot,
build, seo, lighthouse, publish, ...). The plan takes the mean of each stage
over the builds that published or found nothing new, scales the stages that
grow with pages (build, seo) to the planned pages per site, and the audits to
the planned audits per site, and divides the night's work by what one worker
does in the window: a worker of this machine's size runs ``slots`` builds at
a time (each build has ``[limits] workers`` render processes of its own).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from render.run.ledger import Ledger

PER_PAGE = ("build", "seo")  # stages whose seconds grow with the pages rendered


@dataclass(frozen=True, kw_only=True)
class Plan:
    sites: int
    pages: float  # per site
    audits: float  # Lighthouse audits per site
    builds_measured: int
    stage_seconds: dict[str, float]  # per site, scaled to ``pages`` and ``audits``
    audit_seconds: float  # one audit, as measured (or assumed)
    site_seconds: float
    night_seconds: float  # the work of the whole night, one build at a time
    window_hours: float
    slots: int
    workers: int


def measured(ledger: Ledger) -> tuple[int, float, dict[str, float], float | None]:
    """Builds measured, their mean pages, mean seconds per stage, mean seconds per audit."""
    rows = ledger.select(
        "select r.id, r.pages, r.timings,"
        " (select count(*) from lighthouse_scores l where l.run_id = r.id) as audits"
        " from runs r where r.outcome in ('published', 'unchanged') and r.pages is not null"
    )
    if not rows:
        return 0, 0.0, {}, None
    totals: dict[str, float] = {}
    pages = 0
    audits = 0
    audit_seconds = 0.0
    for row in rows:
        timings = json.loads(row["timings"] or "{}")
        for stage, seconds in timings.items():
            totals[stage] = totals.get(stage, 0.0) + float(seconds)
        pages += int(row["pages"])
        if row["audits"]:
            audits += int(row["audits"])
            audit_seconds += float(timings.get("lighthouse", 0.0))
    n = len(rows)
    return (
        n,
        pages / n,
        {k: v / n for k, v in totals.items()},
        audit_seconds / audits if audits else None,
    )


def plan(
    ledger: Ledger,
    *,
    sites: int,
    pages: float | None = None,
    audits: float = 0.0,
    audit_seconds: float | None = None,
    window_hours: float = 4.0,
    slots: int = 1,
) -> Plan | None:
    """The plan for ``sites`` sites; None when the ledger has no finished build to measure."""
    count, mean_pages, stages, per_audit = measured(ledger)
    if count == 0:
        return None
    target = mean_pages if pages is None else pages
    scale = target / mean_pages if mean_pages else 1.0
    scaled = {
        stage: seconds * scale if stage in PER_PAGE else seconds
        for stage, seconds in stages.items()
        if stage != "lighthouse"
    }
    one_audit = audit_seconds if audit_seconds is not None else (per_audit or 4.0)
    if audits:
        scaled["lighthouse"] = audits * one_audit
    site = sum(scaled.values())
    night = site * sites
    workers = max(1, math.ceil(night / (window_hours * 3600 * slots)))
    return Plan(
        sites=sites,
        pages=target,
        audits=audits,
        builds_measured=count,
        stage_seconds=scaled,
        audit_seconds=one_audit,
        site_seconds=site,
        night_seconds=night,
        window_hours=window_hours,
        slots=slots,
        workers=workers,
    )
