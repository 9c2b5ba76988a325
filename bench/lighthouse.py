"""How long the Lighthouse stage takes, per driving method and parallelism.

    .venv/bin/python bench/lighthouse.py            # all methods on a small tree of its own
    .venv/bin/python bench/lighthouse.py --quick    # the default method only

``lighthouse_bench(build, config)`` is what ``bench/run.py`` calls for the demo
site and the 10,000-article site (default sampling). It prints nothing; the
``__main__`` prints one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from render.build.tree import Build, FileEntry  # noqa: E402
from render.check.lhrunner import AuditJob, ChromiumRunner, Method, RunOutcome  # noqa: E402
from render.config import LighthouseConfig  # noqa: E402
from render.lighthouse import check, sample_pages  # noqa: E402


@dataclass
class _Recording:
    """A Runner that passes through to the real one and keeps its outcome for the figures."""

    inner: ChromiumRunner
    outcome: RunOutcome | None = None

    def run(
        self,
        files: Mapping[str, FileEntry],
        objects: Path,
        jobs: Sequence[AuditJob],
        *,
        config: LighthouseConfig,
        progress: Callable[[str], None] | None = None,
    ) -> RunOutcome:
        self.outcome = self.inner.run(files, objects, jobs, config=config, progress=progress)
        return self.outcome


def _phases(outcome: RunOutcome | None) -> dict[str, float]:
    """Mean seconds of each phase: browser startup, one Lighthouse run, one no-JS read.

    ``traced`` is how far into the first run Lighthouse had recorded the page
    load; the no-JS read runs from then on, beside the rest of that run.
    """
    if outcome is None:
        return {}
    sums: dict[str, list[float]] = {}
    for result in outcome.results.values():
        for phase, seconds in result.timings.items():
            per = seconds / max(1, len(result.runs)) if phase == "lighthouse" else seconds
            sums.setdefault(phase, []).append(per)
    return {phase: round(statistics.mean(values), 2) for phase, values in sorted(sums.items())}


def _timed(build: Build, config: LighthouseConfig, method: Method, parallel: int) -> dict[str, Any]:
    config = replace(config, parallel=parallel)
    runner = _Recording(ChromiumRunner.from_config(config, method=method))
    started = time.monotonic()
    report = check(build, config=config, runner=runner, full=True)
    seconds = time.monotonic() - started
    audited = len(report.audits) + len(report.errors)
    return {
        "phases": _phases(runner.outcome),
        "method": method.value,
        "parallel": parallel,
        "pages": audited,
        "seconds": round(seconds, 2),
        "seconds_per_page": round(seconds / max(1, audited), 2),
        "errors": [f"{e.path}: {e.kind.value}: {e.message}" for e in report.errors],
        "network": report.network.value if report.network else None,
        "scores": {a.path: dict(a.scores) for a in report.audits},
        "load_average": round(os.getloadavg()[0], 2),
    }


def lighthouse_bench(
    build: Build,
    config: LighthouseConfig,
    *,
    methods: Sequence[Method] = (Method.node,),
    parallels: Sequence[int] = (1, 2),
) -> dict[str, Any]:
    """Wall time of the checks (every sampled page audited), per method and parallelism."""
    sampled = len(sample_pages(build, config.pages_per_route))
    runs = [_timed(build, config, m, p) for m in methods for p in parallels]
    # the headline is the default method at the configured parallelism (what a build runs)
    first = next(
        (r for r in runs if r["parallel"] == config.parallel and r["method"] == methods[0].value),
        runs[0],
    )
    best = min(runs, key=lambda r: r["seconds"])
    speedup = {}
    for method in methods:
        by_parallel = {r["parallel"]: r["seconds"] for r in runs if r["method"] == method.value}
        if 1 in by_parallel and 2 in by_parallel:
            speedup[method.value] = round(by_parallel[1] / by_parallel[2], 2)
    return {
        "sampled_pages": sampled,
        "runs_per_page": config.runs,
        "settle_ms": config.settle_ms,
        "method": first["method"],
        "parallel": first["parallel"],
        "seconds": first["seconds"],
        "seconds_per_page": first["seconds_per_page"],
        "fastest": {"method": best["method"], "parallel": best["parallel"]},
        "speedup_1_to_2": speedup,
        "measurements": runs,
    }


def _small_tree(root: Path) -> Build:
    from lhpages import FAST, make_build, page  # type: ignore[import-not-found]

    pages = {"/": (0, FAST)}
    for route in range(1, 4):
        body = f"<main><h1>Article {route}</h1><p>{'Some article text. ' * 40}</p></main>"
        pages[f"/r{route}/first/"] = (route, page(f"Article {route}", body))
        pages[f"/r{route}/second/"] = (route, page(f"Second {route}", body))
    build: Build = make_build(root, pages)
    return build


def main(argv: Sequence[str]) -> int:
    quick = "--quick" in argv
    methods = (Method.node,) if quick else (Method.node, Method.cli, Method.cli_fresh)
    with tempfile.TemporaryDirectory(prefix="render-bench-lh-") as tmp:
        build = _small_tree(Path(tmp))
        result = lighthouse_bench(build, LighthouseConfig(timeout=120), methods=methods)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
