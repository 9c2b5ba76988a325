"""``run_site()``: the one orchestrator of the chain.

config -> snapshot -> build -> check -> publish -> ledger. ``render build``,
``render force``, ``render nightly`` and the scheduler all call it; none of
them re-implements a step. A stage that fails stops this site's run with its
error, the ledger records it, and the live version stays live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from render import builder, snapshot
from render.config import HostConfig, SiteConfig, SiteId
from render.errors import RenderError
from render.ledger import open_ledger
from render.tree import Build, materialize


class Outcome(Enum):
    published = "published"  # a new version is live
    built = "built"  # built and checked; nothing published (no store asked for)
    unchanged = "unchanged"  # the built tree equals the live version; no new version
    skipped = "skipped"  # database, templates and config unchanged since the last success
    failed = "failed"  # a stage raised; the live version is unchanged


@dataclass(frozen=True, kw_only=True)
class RunReport:
    site: SiteId
    reason: str
    outcome: Outcome
    seconds: float
    pages: int = 0
    rendered: int = 0
    reused: int = 0
    version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: RenderError | None = None
    build: Build | None = None


Progress = Callable[[str, int, int], None]
"""``(stage, done, total)``: called as pages render."""


def run_site(
    site: SiteConfig,
    *,
    host: HostConfig,
    reason: str = "build",
    force: bool = False,
    out: Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunReport:
    """Build, check and publish one site. Raises the stage's ``RenderError`` on failure."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    ledger = open_ledger(host.state_dir)
    run_id = ledger.start_run(site.id.owner, site.id.name, reason=reason)
    try:
        with snapshot.take(
            site, into=host.state_dir / "snapshots" / site.id.owner / site.id.name
        ) as snap:
            timings["snapshot"] = snap.seconds
            previous = builder.load_previous(builder.build_dir(host, site))
            sources = builder.scan_sources(site, previous)
            input_hash = sources.input_hash(snap)
            if (
                not force
                and out is None
                and ledger.last_input_hash(site.id.owner, site.id.name) == input_hash
            ):
                report = RunReport(
                    site=site.id, reason=reason, outcome=Outcome.skipped,
                    seconds=time.perf_counter() - started, timings=timings,
                )  # fmt: skip
                ledger.finish_run(run_id, outcome=report.outcome.value, timings=timings)
                return report
            on_pages = (
                None if progress is None else (lambda done, total: progress("build", done, total))
            )
            build = builder.build(
                site, snap, host=host, sources=sources, previous=previous, progress=on_pages
            )
            timings["build"] = build.seconds
        if out is not None:
            materialize(build.files, build.objects, out)
        ledger.set_input_hash(site.id.owner, site.id.name, input_hash)
        report = RunReport(
            site=site.id, reason=reason, outcome=Outcome.built, seconds=time.perf_counter() - started,
            pages=len(build.pages), rendered=build.rendered, reused=build.reused,
            timings=timings, build=build,
        )  # fmt: skip
        ledger.finish_run(
            run_id, outcome=report.outcome.value, pages=report.pages, rendered=report.rendered,
            reused=report.reused, version=report.version, timings=timings,
        )  # fmt: skip
        return report
    except RenderError as exc:
        exc.with_site(
            str(site.id), hint=_live_hint(ledger.live_version(site.id.owner, site.id.name))
        )
        ledger.finish_run(
            run_id,
            outcome=Outcome.failed.value,
            stage=exc.stage,
            message=exc.message,
            timings=timings,
        )
        raise
    except BaseException as exc:
        ledger.finish_run(
            run_id, outcome=Outcome.failed.value, stage="bug", message=repr(exc), timings=timings
        )
        raise
    finally:
        ledger.close()


def _live_hint(live: str | None) -> str:
    if live is None:
        return "nothing was published; the site has no live version yet."
    return f"the live version {live} is unchanged."
