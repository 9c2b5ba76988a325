"""Lighthouse and the no-JavaScript read on a sample of a build's pages, with budgets.

``check(build, config=...)`` picks the pages (the home page and the first
``pages_per_route`` pages of each route), re-audits only those whose content
changed since they were last measured (``full=True`` audits all), carries the
others' last scores forward, reads every sampled page with JavaScript on and
off, and compares scores with ``[lighthouse.budgets]``. The auditing itself is
behind :class:`~render.check.lhrunner.Runner`; the real one runs Lighthouse in
Chromium with the network cut off (:mod:`render.check.lhrunner`).

The result goes three ways: ``report.files()`` into the version's stored
reports beside it in the store (``lighthouse.json``, and one HTML report per
audited page by its sha256: :mod:`render.publish.reports`; never into the
public tree), ``report.ledger_audits()`` and ``report.ledger_findings()`` into
the ledger, and ``report.blocking`` into the publish decision.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from render.build.objects import Objects
from render.build.tree import Build, FileEntry, PageRecord, sha256
from render.check.jsparity import ParityFinding, compare
from render.check.lhrunner import (
    AuditJob,
    ChromiumRunner,
    FailureKind,
    JobResult,
    Method,
    NetworkBlock,
    Runner,
    RunResult,
)
from render.config import LighthouseConfig
from render.errors import RenderError
from render.run.ledger import AuditRow

__all__ = [
    "AuditError",
    "AuditState",
    "BudgetFailure",
    "LighthouseReport",
    "PageAudit",
    "ParityFinding",
    "Runner",
    "SampledPage",
    "check",
    "check_sample",
    "sample_pages",
]

CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
METRICS = ("lcp", "cls", "tbt", "fcp", "speed_index")
REPORT_JSON = "lighthouse.json"  # a name in the version's stored reports
REPORT_DIR = "lighthouse/"
PARITY_RULE = "js-only-content"


class AuditState(enum.Enum):
    fresh = "fresh"  # measured in this run
    reused = "reused"  # content unchanged since it was measured; last scores carried forward


@dataclass(frozen=True, kw_only=True)
class PageAudit:
    """The Lighthouse result of one sampled page."""

    path: str
    url: str
    state: AuditState
    measured_version: str  # content hash of the page the scores were measured on
    scores: Mapping[str, float | None]
    metrics: Mapping[str, float | None]  # milliseconds, except cls
    runs: int  # runs the median was taken from (0 when reused)
    report: str | None  # the HTML report's name (``lighthouse/<path>``), None without one
    report_hash: str | None  # its sha256: the stored report is ``reports/blobs/<sha256>``
    # what the next run needs to carry this audit and its no-JS read forward (not in the JSON):
    inputs: str = ""  # hash of the site's subresources when measured (see ``subresources``)
    parity: Mapping[str, Any] | None = None  # {"finding": ParityFinding JSON or None}

    @property
    def reused(self) -> bool:
        return self.state is AuditState.reused

    def to_json(self) -> dict[str, Any]:
        # Whether the scores were measured now or carried forward is left out on
        # purpose: a tree that did not change must give the same bytes (and so no
        # new version); measured_version says which content the scores are for.
        return {
            "path": self.path,
            "url": self.url,
            "measured_version": self.measured_version,
            "scores": _floats(self.scores),
            "metrics": _floats(self.metrics),
            "report": self.report_hash,
        }


def _floats(values: Mapping[str, float | None]) -> dict[str, float | None]:
    # Lighthouse says 1 where the ledger gives back 1.0: one spelling, same bytes
    return {k: None if v is None else float(v) for k, v in values.items()}


@dataclass(frozen=True, kw_only=True)
class BudgetFailure:
    path: str
    category: str
    score: float
    minimum: float

    @property
    def message(self) -> str:
        return f"{self.category} {self.score:.2f} is under the budget of {self.minimum:.2f}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "category": self.category,
            "score": self.score,
            "minimum": self.minimum,
        }


@dataclass(frozen=True, kw_only=True)
class AuditError:
    """A page whose audit crashed or timed out: neither a pass nor a zero."""

    path: str
    url: str
    kind: FailureKind
    message: str
    stderr_tail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "url": self.url,
            "kind": self.kind.value,
            "message": self.message,
            "stderr_tail": self.stderr_tail,
        }


@dataclass(frozen=True, kw_only=True)
class LighthouseReport:
    site: str
    enabled: bool
    audits: tuple[PageAudit, ...] = ()
    findings: tuple[ParityFinding, ...] = ()
    failures: tuple[BudgetFailure, ...] = ()
    errors: tuple[AuditError, ...] = ()
    network: NetworkBlock | None = None  # None when no browser ran
    method: Method | None = None
    form_factor: str = "mobile"
    budgets: Mapping[str, float] = field(default_factory=dict)
    block: bool = False
    seconds: float = 0.0
    reports: Mapping[str, bytes] = field(default_factory=dict)  # build path -> HTML report

    @property
    def blocking(self) -> bool:
        """Whether this blocks the publish: ``block = true`` and a budget failed or went unchecked."""
        unchecked = bool(self.errors) and bool(self.budgets)
        return self.block and (bool(self.failures) or unchecked)

    def audit(self, path: str) -> PageAudit | None:
        return next((a for a in self.audits if a.path == path), None)

    def to_json(self) -> bytes:
        data = {
            "site": self.site,
            "enabled": self.enabled,
            "network": self.network.value if self.network else None,
            "method": self.method.value if self.method else None,
            "form_factor": self.form_factor,
            "budgets": dict(self.budgets),
            "block": self.block,
            "blocking": self.blocking,
            "pages": [a.to_json() for a in sorted(self.audits, key=lambda a: a.path)],
            "js_only_content": [f.to_json() for f in sorted(self.findings, key=lambda f: f.path)],
            "budget_failures": [
                f.to_json() for f in sorted(self.failures, key=lambda f: (f.path, f.category))
            ],
            "errors": [e.to_json() for e in sorted(self.errors, key=lambda e: e.path)],
        }
        return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()

    def files(self) -> dict[str, bytes]:
        """The stored reports' JSON: ``{"lighthouse.json": ...}`` (nothing when disabled)."""
        if not self.enabled:
            return {}
        return {REPORT_JSON: self.to_json()}

    def html(self) -> dict[str, bytes]:
        """The audited pages' HTML reports by sha256, as ``render.publish.reports`` stores them."""
        by_path = {a.report: a.report_hash for a in self.audits if a.report and a.report_hash}
        return {by_path[p]: data for p, data in sorted(self.reports.items()) if p in by_path}

    def ledger_audits(self) -> list[AuditRow]:
        """For ``Ledger.record_lighthouse``; read back by ``Ledger.last_lighthouse``."""
        return [
            {
                "path": a.path,
                "measured_version": a.measured_version,
                "scores": dict(a.scores),
                "metrics": dict(a.metrics),
                "report": a.report_hash,
                "carry": None
                if a.parity is None
                else {
                    "inputs": a.inputs,
                    "parity": dict(a.parity),
                    "network": self.network.value if self.network else None,
                    "method": self.method.value if self.method else None,
                },
            }
            for a in sorted(self.audits, key=lambda a: a.path)
        ]

    def ledger_findings(self) -> list[Mapping[str, str]]:
        """JS-only content and Lighthouse failures as rows for ``Ledger.record_seo``."""
        rows: list[Mapping[str, str]] = [
            {"rule": PARITY_RULE, "level": "warning", "path": f.path, "message": f.message}
            for f in self.findings
        ]
        level = "error" if self.block else "warning"
        rows += [
            {
                "rule": f"lighthouse-{f.category}",
                "level": level,
                "path": f.path,
                "message": f.message,
            }
            for f in self.failures
        ]
        rows += [
            {
                "rule": f"lighthouse-{e.kind.value}",
                "level": level,
                "path": e.path,
                "message": e.message,
            }
            for e in self.errors
        ]
        return sorted(rows, key=lambda r: (r["path"], r["rule"]))


def sample_pages(build: Build, pages_per_route: int) -> list[PageRecord]:
    """The home page, then the first ``pages_per_route`` HTML pages of each route, in route order."""
    html = [p for p in build.pages if p.path.endswith(".html")]
    chosen = [p for p in html if p.url == "/"][:1]
    by_route: dict[int, list[PageRecord]] = {}
    for page in html:
        if page.route >= 0 and page not in chosen:
            by_route.setdefault(page.route, []).append(page)
    for route in sorted(by_route):
        chosen += by_route[route][:pages_per_route]
    return chosen


def check(
    build: Build,
    *,
    config: LighthouseConfig,
    previous: Iterable[AuditRow] | None = None,
    runner: Runner | None = None,
    full: bool = False,
    progress: Callable[[str], None] | None = None,
) -> LighthouseReport:
    """Audit the sample of ``build``; ``previous`` is ``Ledger.last_lighthouse(...)``."""
    site = str(build.site.id)
    if not config.enabled:
        return LighthouseReport(site=site, enabled=False)
    return check_sample(
        sample_pages(build, config.pages_per_route),
        site=site,
        files=build.files,
        objects=build.objects,
        blobs=build.blobs,
        config=config,
        previous=previous,
        runner=runner,
        full=full,
        progress=progress,
    )


class Sampled(Protocol):
    """What an audit needs of a sampled page (a ``PageRecord`` has it)."""

    @property
    def path(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def hash(self) -> str: ...


@dataclass(frozen=True, kw_only=True)
class SampledPage:
    """A sampled page as a message carries it to an audit elsewhere (``render.audit``)."""

    path: str
    url: str
    hash: str


def check_sample(
    sample: Sequence[Sampled],
    *,
    site: str,
    files: Mapping[str, FileEntry],
    objects: Path,
    blobs: Objects,
    config: LighthouseConfig,
    previous: Iterable[AuditRow] | None = None,
    runner: Runner | None = None,
    full: bool = False,
    progress: Callable[[str], None] | None = None,
) -> LighthouseReport:
    """``check`` of pages already sampled, in a tree of ``files`` whose bytes are in ``objects``.

    ``blobs`` reads and writes that folder (a carried audit's HTML report is read from it).
    """
    if not config.enabled:
        return LighthouseReport(site=site, enabled=False)
    started = time.monotonic()
    last = {} if full else {p["path"]: p for p in previous or ()}
    inputs = tree_subresources(files)
    jobs: list[AuditJob] = []
    whole: dict[str, Mapping[str, Any]] = {}  # pages carried with their no-JS read: no browser
    how: tuple[NetworkBlock | None, Method | None] = (None, None)  # how those were measured
    for page in sample:
        carried = last.get(page.path)
        carry = None if carried is None else carried["carry"]
        fresh = (
            carried is None
            or carried["measured_version"] != page.hash
            or (carry is not None and carry["inputs"] != inputs)
        )
        if not fresh and carry is not None:  # measured with these inputs: carry the no-JS read too
            whole[page.path] = carry["parity"]
            if how == (None, None) and carry["network"] and carry["method"]:
                how = (NetworkBlock(carry["network"]), Method(carry["method"]))
            continue
        jobs.append(AuditJob(path=page.path, url=page.url, runs=config.runs if fresh else 0))
    outcome = None
    if jobs:
        try:
            runner = runner or ChromiumRunner.from_config(config)
        except RenderError as exc:
            raise exc.with_site(site) from None
        outcome = runner.run(files, objects, jobs, config=config, progress=progress)
    audits: list[PageAudit] = []
    findings: list[ParityFinding] = []
    errors: list[AuditError] = []
    reports: dict[str, bytes] = {}
    runs = {job.path: job.runs for job in jobs}
    for page in sample:
        parity: Mapping[str, Any] | None
        if page.path in whole:
            parity = whole[page.path]
            if parity.get("finding"):
                findings.append(ParityFinding(**parity["finding"]))
            audit, html, error = _reused(page, last[page.path], blobs)
        else:
            result = outcome.results.get(page.path) if outcome else None
            if result is None or result.failure is not None:
                errors.append(_error(page, result))
                continue
            parity = None
            if result.js_on is not None and result.js_off is not None:
                finding = compare(page.path, page.url, js_on=result.js_on, js_off=result.js_off)
                parity = {"finding": None if finding is None else finding.to_json()}
                if finding is not None:
                    findings.append(finding)
            if runs[page.path]:
                audit, html, error = _fresh(page, result)
            else:
                audit, html, error = _reused(page, last[page.path], blobs)
        if audit is not None:
            audit = replace(audit, inputs=inputs, parity=parity)
        if error is not None:
            errors.append(error)
        if audit is not None:
            audits.append(audit)
            if audit.report is not None and html is not None:
                reports[audit.report] = html
    return LighthouseReport(
        site=site,
        enabled=True,
        audits=tuple(audits),
        findings=tuple(findings),
        failures=tuple(_budget_failures(audits, config.budgets)),
        errors=tuple(errors),
        network=outcome.network if outcome else how[0],
        method=outcome.method if outcome else how[1],
        form_factor=config.form_factor,
        budgets=dict(config.budgets),
        block=config.block,
        seconds=time.monotonic() - started,
        reports=reports,
    )


def subresources(build: Build) -> str:
    """A hash of every file a page may load besides pages: styles, scripts, images, fonts.

    A page's scores and its no-JS read depend on these as much as on its own
    bytes (an island's module in ``static/islands/`` can change what appears
    with JavaScript), so a carried audit must have been measured with the same.
    Pages, feeds, the sitemap and render's own reports are left out.
    """
    return tree_subresources(build.files)


def tree_subresources(files: Mapping[str, FileEntry]) -> str:
    """``subresources`` of a tree of ``files``."""
    kept = sorted(
        (path, entry.hash)
        for path, entry in files.items()
        if not entry.type.startswith(("text/html", "application/xml", "text/plain"))
        and not (path.startswith("_render/") and path.endswith((".json", ".html")))
    )
    return sha256(repr(kept).encode())


def report_path(page: Sampled) -> str:
    """A page's HTML report's name: ``lighthouse/<path>`` (stored by its sha256, not by this)."""
    return REPORT_DIR + page.path


def median_run(runs: Sequence[RunResult]) -> RunResult | None:
    """The run with the median performance score among those that produced scores."""
    usable = [r for r in runs if r.error is None and r.scores]
    if not usable:
        return None
    ranked = sorted(usable, key=lambda r: r.scores.get("performance") or 0.0)
    return ranked[(len(ranked) - 1) // 2]


def _fresh(
    page: Sampled, result: JobResult
) -> tuple[PageAudit | None, bytes | None, AuditError | None]:
    best = median_run(result.runs)
    if best is None:
        reason = next((r.error for r in result.runs if r.error), "no scores")
        failed = AuditError(
            path=page.path, url=page.url, kind=FailureKind.crash, message=f"Lighthouse: {reason}"
        )
        return None, None, failed
    missing = [c for c in CATEGORIES if best.scores.get(c) is None]
    error: AuditError | None = None
    if missing:
        message = f"Lighthouse gave no score for {', '.join(missing)}"
        error = AuditError(path=page.path, url=page.url, kind=FailureKind.crash, message=message)
    audit = PageAudit(
        path=page.path,
        url=page.url,
        state=AuditState.fresh,
        measured_version=page.hash,
        scores={c: best.scores.get(c) for c in CATEGORIES},
        metrics={m: best.metrics.get(m) for m in METRICS},
        runs=len(result.runs),
        report=report_path(page) if best.html is not None else None,
        report_hash=sha256(best.html) if best.html is not None else None,
    )
    return audit, best.html, error


def _reused(
    page: Sampled, last: AuditRow, blobs: Objects
) -> tuple[PageAudit | None, bytes | None, AuditError | None]:
    digest = last["report"]
    html = blobs.read(digest) if digest and blobs.has(digest) else None
    audit = PageAudit(
        path=page.path,
        url=page.url,
        state=AuditState.reused,
        measured_version=str(last["measured_version"]),
        scores={c: last["scores"].get(c) for c in CATEGORIES},
        metrics={m: last["metrics"].get(m) for m in METRICS},
        runs=0,
        report=report_path(page) if html is not None else None,
        report_hash=digest if html is not None else None,
    )
    return audit, html, None


def _error(page: Sampled, result: JobResult | None) -> AuditError:
    if result is None or result.failure is None:
        return AuditError(path=page.path, url=page.url, kind=FailureKind.crash, message="no result")
    failure = result.failure
    return AuditError(
        path=page.path,
        url=page.url,
        kind=failure.kind,
        message=failure.message,
        stderr_tail=failure.stderr_tail,
    )


def _budget_failures(
    audits: Iterable[PageAudit], budgets: Mapping[str, float]
) -> list[BudgetFailure]:
    failures = []
    for audit in audits:
        for category, minimum in sorted(budgets.items()):
            score = audit.scores.get(category)
            if score is not None and score < minimum:
                failures.append(
                    BudgetFailure(path=audit.path, category=category, score=score, minimum=minimum)
                )
    return failures
