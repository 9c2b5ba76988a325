"""Each site's last build as Prometheus metrics, through ``prometheus_client``.

``render metrics`` prints them in the text exposition format, for
node-exporter's textfile collector (``ovh/grafana/`` has a dashboard that
reads them). Every series carries a ``site="owner/name"`` label; they are
gauges, since each says what the last build measured, not a running count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from render.lighthouse import CATEGORIES
from render.report.document import document
from render.run.ledger import Ledger

OK = ("published", "unchanged")


class LedgerCollector(Collector):
    """Reads the ledger once per ``collect``: one set of samples per site."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Metric]:
        sites = document(self.ledger, history=1)["sites"]
        g = _Gauges()
        g.add("sites", "Sites the ledger knows", [], len(sites))
        for site in sites:
            latest = site["latest"]
            if latest is None:
                continue
            _site_samples(g, site["site"], latest, site["history"][-1])
        yield from g.families.values()


class _Gauges:
    def __init__(self) -> None:
        self.families: dict[str, GaugeMetricFamily] = {}

    def add(self, name: str, doc: str, labels: list[tuple[str, str]], value: float | None) -> None:
        if value is None:
            return
        full = f"render_{name}"
        family = self.families.get(full)
        if family is None:
            family = GaugeMetricFamily(full, doc, labels=[k for k, _ in labels])
            self.families[full] = family
        family.add_metric([v for _, v in labels], float(value))


def _site_samples(g: _Gauges, site: str, latest: dict[str, Any], point: dict[str, Any]) -> None:
    s = [("site", site)]
    g.add(
        "last_build_timestamp_seconds",
        "When the last build finished (Unix time)",
        s,
        _unix(latest["finished"]),
    )
    g.add("last_build_seconds", "Seconds the last build took", s, latest["seconds"])
    g.add(
        "last_build_success",
        "1 when the last build published or found nothing to change",
        s,
        1 if latest["outcome"] in OK else 0,
    )
    g.add(
        "last_build_outcome",
        "The last build's outcome (1 for the outcome it had)",
        [*s, ("outcome", latest["outcome"])],
        1,
    )
    for stage, seconds in latest["timings"].items():
        g.add(
            "last_build_stage_seconds",
            "Seconds per stage of the last build",
            [*s, ("stage", stage)],
            seconds,
        )
    g.add("last_build_pages", "Pages in the last build", s, latest["pages"])
    g.add("last_build_pages_rendered", "Pages the last build rendered", s, latest["rendered"])
    g.add("last_build_pages_reused", "Pages the last build reused", s, latest["reused"])
    g.add(
        "last_build_published_objects",
        "Objects the last build uploaded",
        s,
        latest["published"]["objects"],
    )
    g.add(
        "last_build_published_bytes",
        "Bytes the last build uploaded",
        s,
        latest["published"]["bytes"],
    )
    for category in CATEGORIES:
        g.add(
            "lighthouse_score",
            "Lighthouse score of the last build, mean of its audited pages",
            [*s, ("category", category)],
            point["scores"][category],
        )
    for page in latest["lighthouse"]["pages"]:
        for category in CATEGORIES:
            g.add(
                "lighthouse_page_score",
                "Lighthouse score of one audited page",
                [*s, ("page", page["path"]), ("category", category)],
                page["scores"][category],
            )
    lcp = point["lcp"]
    g.add(
        "lighthouse_lcp_seconds",
        "Largest Contentful Paint of the slowest audited page",
        s,
        None if lcp is None else lcp / 1000,
    )
    g.add("lighthouse_cls", "Cumulative Layout Shift of the worst audited page", s, point["cls"])
    seo = latest["seo"]
    lighthouse = latest["lighthouse"]["findings"]
    for kind, level, count in (
        ("seo", "error", seo["errors"]),
        ("seo", "warning", seo["warnings"]),
        ("lighthouse", "error", sum(f["level"] == "error" for f in lighthouse)),
        ("lighthouse", "warning", sum(f["level"] == "warning" for f in lighthouse)),
        ("no_javascript", "warning", len(latest["no_javascript"])),
    ):
        g.add(
            "findings",
            "Findings of the last build by kind and severity",
            [*s, ("kind", kind), ("level", level)],
            count,
        )


def _unix(text: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def exposition(ledger: Ledger) -> str:
    """The Prometheus text format of every site's last build."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(ledger))
    return generate_latest(registry).decode()
