"""A long build history written through the ledger's own API (tests and bench/dashboard.py)."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta

from render.publish.reports import store_reports
from render.publish.store import Store
from render.run.ledger import Ledger

PAGES = ("index.html", "posts/index.html", "posts/first/index.html")
STAGES = ("snapshot", "build", "seo", "lighthouse", "publish", "mirror", "reports")


def report_html(owner: str, name: str, path: str, build: int) -> bytes:
    return f"<!doctype html><title>Lighthouse {owner}/{name} {path} #{build}</title>".encode()


def add_history(
    ledger: Ledger,
    owner: str,
    name: str,
    *,
    builds: int,
    seed: int = 1,
    store: Store | None = None,
    start: datetime | None = None,
) -> list[str]:
    """Record ``builds`` published builds of ``owner/name``, one a night; return their versions.

    Each build has timings, SEO findings (errors on some nights), three audited
    pages with scores and metrics, and a new version; with ``store``, the last
    build's reports are stored beside its version as the pipeline stores them.
    """
    rng = random.Random(f"{owner}/{name}/{seed}")
    moment = start or datetime(2026, 8, 1, 3, 0, tzinfo=UTC)
    versions = []
    parent = None
    for i in range(builds):
        moment += timedelta(days=1)
        version = f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{i:08x}"
        run_id = ledger.start_run(owner, name, reason="schedule")
        errors = 1 if i % 7 == 3 else 0
        findings = [
            {
                "rule": "description-missing",
                "level": "warning",
                "path": f"tags/t{k}/index.html",
                "message": "no <meta name=description>",
            }
            for k in range(2 + i % 3)
        ] + [
            {
                "rule": "link-broken",
                "level": "error",
                "path": "posts/first/index.html",
                "message": "links to /gone/, which is not in the build",
            }
            for _ in range(errors)
        ]
        findings.append(
            {
                "rule": "js-only-content",
                "level": "warning",
                "path": "index.html",
                "message": "12 of 40 words appear only with JavaScript",
            }
        )
        ledger.record_seo(run_id, owner, name, findings)
        html: dict[str, bytes] = {}
        audits = []
        for path in PAGES:
            data = report_html(owner, name, path, i)
            digest = hashlib.sha256(data).hexdigest()
            html[digest] = data
            perf = round(min(1.0, 0.6 + 0.3 * rng.random() + i / (builds * 10)), 2)
            audits.append(
                {
                    "path": path,
                    "measured_version": hashlib.sha256(f"{path}{i}".encode()).hexdigest(),
                    "scores": {
                        "performance": perf,
                        "accessibility": 1.0,
                        "best-practices": round(0.9 + 0.1 * rng.random(), 2),
                        "seo": 1.0,
                    },
                    "metrics": {
                        "lcp": round(900 + 1500 * rng.random()),
                        "cls": round(0.1 * rng.random(), 4),
                        "tbt": round(50 * rng.random()),
                        "fcp": 800.0,
                        "speed_index": 1000.0,
                    },
                    "report": digest,
                }
            )
        ledger.record_lighthouse(run_id, owner, name, audits)
        new_blobs = 3 + rng.randrange(20)
        ledger.record_version(
            owner,
            name,
            version=version,
            parent=parent,
            created=moment.isoformat(),
            files=280,
            bytes=1_500_000,
            new_blobs=new_blobs,
            new_bytes=new_blobs * 9_000,
            seconds=0.4,
            live=True,
        )
        timings = {
            s: round(0.05 + rng.random() * (2.0 if s == "lighthouse" else 0.5), 3) for s in STAGES
        }
        ledger.finish_run(
            run_id,
            outcome="published",
            pages=280,
            rendered=1 + rng.randrange(10),
            reused=270,
            version=version,
            timings=timings,
        )
        if store is not None and i == builds - 1:
            store_reports(
                store,
                owner=owner,
                name=name,
                version=version,
                files={"seo.json": b"{}\n"},
                html=html,
            )
        versions.append(version)
        parent = version
    return versions
