"""A staged version's audit, then its root switch: the work of an audit task.

With ``[schedule] executor = "celery"`` and ``[schedule] audits = "queue"``, a
build stops before the root switch (``pipeline.Options(stage=True)``): the new
version's blobs and tree are in the store and the live version is still live.
``audit_staged`` runs on a machine with Chromium: the staged tree's bytes come
from the store into this machine's objects folder (kept per site, so the next
audit fetches only what changed), Lighthouse and the no-JavaScript read run on
the pages the build sampled, the findings go into this machine's ledger (the
next audit of the site here carries the scores of unchanged pages forward) and
into the result, and the gate decides: a pass switches the root, with a
compare-and-swap on the root as the build read it; a block raises
``CheckFailed`` and the live version stays live.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from render import lighthouse
from render.build.objects import Objects
from render.check.gate import lighthouse_gate
from render.config import HostConfig, SiteConfig
from render.errors import CheckFailed, ConflictError, PublishError, RenderError
from render.pipeline import Outcome, sync_mirror
from render.publish import purge
from render.publish.manifest import VersionTree
from render.publish.packs import StoredBlobs
from render.publish.reports import read_report, store_reports
from render.publish.staging import Staged, switch
from render.publish.store import Store, open_store
from render.publish.versions import Publication, read_root, read_tree
from render.run.ledger import AuditRow, open_ledger
from render.seo import REPORT_PATH as SEO_REPORT


@dataclass(frozen=True, kw_only=True)
class Audited:
    """A staged version audited: switched live, found live already, or blocked by the gate."""

    outcome: Outcome | None  # published; unchanged: the same tree went live first; None: blocked
    audits: lighthouse.LighthouseReport
    publication: Publication | None
    fetched: int  # blobs this machine fetched from the store to serve the tree
    timings: dict[str, float] = field(default_factory=dict)
    blocked: CheckFailed | None = None  # the gate's verdict; the live version stays live

    def ledger_audits(self) -> list[AuditRow]:
        return self.audits.ledger_audits()


def audit_staged(
    site: SiteConfig,
    staged: Staged,
    sample: Sequence[lighthouse.SampledPage],
    *,
    host: HostConfig,
    full: bool = False,
) -> Audited:
    """Audit ``staged`` and switch the root to it, unless the gate blocks it (``blocked``).

    Raises the ``RenderError`` of an audit that could not run or a switch that
    failed (``ConflictError``: another version went live first and stays live).
    """
    owner, name = site.id.owner, site.id.name
    timings: dict[str, float] = {}
    objects = Objects(host.site_state("audits", site.id) / "objects")
    objects.folder.mkdir(parents=True, exist_ok=True)
    store = open_store(host)
    try:
        mark = time.perf_counter()
        tree = read_tree(store, owner=owner, name=name, version=staged.version)
        files = tree.files
        fetched = _fetch(store, objects, owner, name, tree, host)
        timings["fetch"] = time.perf_counter() - mark
        with open_ledger(host.state_dir) as ledger:
            run_id = ledger.start_run(owner, name, reason="audit")
            mark = time.perf_counter()
            try:
                audits = lighthouse.check_sample(
                    sample,
                    site=str(site.id),
                    files=files,
                    objects=objects.folder,
                    blobs=objects,
                    config=site.lighthouse,
                    previous=ledger.last_lighthouse(owner, name),
                    full=full,
                )
                timings["lighthouse"] = time.perf_counter() - mark
                for data in audits.html().values():  # the next audit here may carry them
                    objects.write(data)
                ledger.record_seo(run_id, owner, name, list(audits.ledger_findings()))
                ledger.record_lighthouse(run_id, owner, name, audits.ledger_audits())
                try:
                    lighthouse_gate(audits)
                except CheckFailed as exc:
                    ledger.finish_run(
                        run_id,
                        outcome="failed_check",
                        stage=exc.stage,
                        message=exc.message,
                        timings=timings,
                    )
                    return Audited(
                        outcome=None,
                        audits=audits,
                        publication=None,
                        fetched=fetched,
                        timings=timings,
                        blocked=exc,
                    )
                done = _go_live(
                    site,
                    staged,
                    host=host,
                    store=store,
                    objects=objects,
                    audits=audits,
                    fetched=fetched,
                    timings=timings,
                )
            except RenderError as exc:
                outcome = "failed_check" if exc.stage == "check" else "failed"
                ledger.finish_run(
                    run_id, outcome=outcome, stage=exc.stage, message=exc.message, timings=timings
                )
                raise
            ended = Outcome.unchanged if done.outcome is None else done.outcome
            ledger.finish_run(run_id, outcome=ended.value, version=staged.version, timings=timings)
        return done
    finally:
        store.close()


def _go_live(
    site: SiteConfig,
    staged: Staged,
    *,
    host: HostConfig,
    store: Store,
    objects: Objects,
    audits: lighthouse.LighthouseReport,
    fetched: int,
    timings: dict[str, float],
) -> Audited:
    """The root switch, then the reports, the mirror and the CDN purge, as a publish does."""
    owner, name = site.id.owner, site.id.name
    mark = time.perf_counter()
    try:
        publication = switch(
            staged, objects=objects.folder, store=store, concurrency=host.store.concurrency
        )
    except ConflictError:
        current, _ = read_root(store, owner=owner, name=name)
        if current is None or current.files_hash != staged.root.files_hash:
            raise
        # the same tree went live first (the same site built twice): nothing left to do
        return Audited(
            outcome=Outcome.unchanged,
            audits=audits,
            publication=None,
            fetched=fetched,
            timings=timings,
        )
    timings["publish"] = time.perf_counter() - mark
    with _timed(timings, "reports"):
        seo_json = read_report(
            store, owner=owner, name=name, version=staged.version, file=SEO_REPORT
        )
        store_reports(
            store,
            owner=owner,
            name=name,
            version=staged.version,
            files={**({SEO_REPORT: seo_json} if seo_json else {}), **audits.files()},
            html=audits.html(),
        )
    if host.mirror.enabled:
        with _timed(timings, "mirror"):
            sync_mirror(host, store, owner, name)
    purge.purge_publication(publication, site=site, host=host)
    return Audited(
        outcome=Outcome.published,
        audits=audits,
        publication=publication,
        fetched=fetched,
        timings=timings,
    )


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    mark = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - mark


def _fetch(
    store: Store, objects: Objects, owner: str, name: str, tree: VersionTree, host: HostConfig
) -> int:
    """The blobs of ``tree`` this machine lacks, from the store; how many it fetched."""
    missing = sorted(tree.hashes() - objects.hashes())

    def gone(digest: str, key: str) -> None:
        raise PublishError(
            f"blob {digest} of the staged version is missing from {store.description} ({key})",
            hint="a gc ran past the grace period since the build; build the site again",
        )

    StoredBlobs(store, owner=owner, name=name, tree=tree).fetch(
        missing,
        lambda digest, data: objects.write(data, digest),
        concurrency=host.store.concurrency,
        missing=gone,
    )
    return len(missing)
