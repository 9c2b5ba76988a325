"""Pages whose data changed since the last build, rendered when a visitor asks for one.

Per site, the origin keeps the last build's record (``render.build.record``)
and a cheap key of the database's state: size, mtime and inode of the database
file and of its ``-wal``, and which build record is current. When the key
changes, the site's one worker thread copies the database (``snapshot.take``)
and asks ``builder.pending`` what a build of that copy would render: the same
column-level decision the incremental build makes (``render.build.changes``,
``render.build.reuse``). Until the next change that answer says, per path:

- stale or new (a new row): render it, once, in the sandboxed render processes
  (``render.build.workers``, the build's limits), on the first request for it;
  concurrent requests share that render (single-flight);
- gone (its row was deleted): 404;
- anything else: the published page, without waiting and without SQLite.

While the change is being read, a request waits for the answer only when its
page may be stale: the analysis first reads which tables and columns changed
(``render.build.changes``) and at once lets through every page of a route
that read none of them (``builder.pending``'s ``kept``); pages of the routes
that did wait for those routes to be planned again (on the 10,000-article
bench site, a fraction of a second: ``bench/origin.py`` prints it). The last
build's record is read once per build, not once per change.

A page rendered here is written into the build's objects folder under its hash
and its record into ``onrequest.pickle`` (``render.build.onrequest``): the next
build reuses it and publishes it. Nothing is served fresh when the build record
is not the live version's (a failed check, a rollback) or when templates or
routes changed since the build: those changes go through a build's checks.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from render import builder
from render.build import onrequest, snapshot, workers
from render.build.objects import PACKS, Objects
from render.build.record import RECORD, Previous, build_dir, load_previous
from render.build.renderer import PageDone, PageFailed
from render.build.tree import FileEntry, PageRecord, content_type
from render.config import HostConfig, load_site
from render.errors import RenderError
from render.files import utc_stamp
from render.origin.shared import Shared
from render.run.buildlog import log_event

StateKey = tuple[object, ...]


@dataclass(frozen=True, kw_only=True)
class Answer:
    """What to serve for one path of a site."""

    kind: str  # "published": the live tree's file; "fresh": ``hash``; "gone": 404
    hash: str = ""
    type: str = ""
    note: str = ""  # why the published page: "timeout", "failed", "busy"; "rendered" for fresh


PUBLISHED = Answer(kind="published")
_MOVED = "the database changed while it was copied"


@dataclass(frozen=True, kw_only=True)
class _Early:
    """What a change being read already says: these pages are as the last build made them."""

    record: Previous
    overlay: Mapping[str, PageRecord]
    unchanged: frozenset[str]
    matches: dict[str, bool] = field(default_factory=dict)


@dataclass(kw_only=True)
class _Job:
    """The analysis of one database state: ``early`` resolves when the kept routes are known
    (or when it ends), ``done`` when it ends."""

    key: StateKey
    done: Future[None]
    early: Future[None] = field(default_factory=Future)
    found: _Early | None = None
    wanted: set[str] = field(default_factory=set)  # asked for under this state: rendered once
    # known stale, even if nobody waits (an older state's analysis must not take them)


@dataclass(kw_only=True)
class _State:
    key: StateKey
    usable: bool
    reason: str = ""
    record: Previous = field(default_factory=Previous)
    record_id: tuple[int, int, int] | None = None
    stale: builder.Stale | None = None  # None: the database is as the last build read it
    overlay: Mapping[str, PageRecord] = field(default_factory=dict)
    pool: workers.Pool | None = None
    done: dict[str, str] = field(default_factory=dict)  # path -> hash of its fresh bytes
    failed: dict[str, str] = field(default_factory=dict)  # path -> the error
    inflight: dict[str, Future[None]] = field(default_factory=dict)
    matches: dict[str, bool] = field(default_factory=dict)  # live version -> record is its build


class SiteFresh:
    """One site's stale pages: found when its database changes, rendered on request."""

    def __init__(
        self,
        folder: Path,
        *,
        host: HostConfig,
        max_pending: int,
        shared: Shared,
        on_render: Callable[[str, str], None] | None = None,
    ) -> None:
        self.folder = folder  # sites/<owner>/<name>
        self.host = host
        self.max_pending = max_pending
        self._queued = 0  # renders queued or running, under every state: at most max_pending
        self.on_render = on_render  # (path, hash): a page rendered on request
        site = load_site(folder, host=host)
        self.id = str(site.id)
        self.database = site.database
        self.build = build_dir(host, site)
        self.objects = Objects(self.build / "objects")
        self._watched = (
            str(self.build / RECORD),
            str(self.database),
            str(self.database.with_name(self.database.name + "-wal")),
        )
        self.shared = shared
        self.renders = 0  # pages rendered on request, for tests and metrics
        self.analyses = 0
        self._flip = False
        self._state: _State | None = None
        self._analysing: _Job | None = None
        self._record: tuple[object, Previous] | None = None  # (record id, the record): read once
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"render-origin-{self.id}")
        self._closed = False

    # --- the request side (event loop; never blocks) -------------------------

    def key(self) -> StateKey:
        """The build record's id (``onrequest.record_id``) and the database's and its WAL's
        inode, size and mtime: three ``stat`` calls on every request, on paths made once."""
        record, database, wal = self._watched
        try:
            st = os.stat(record)
            parts: list[object] = [(st.st_ino, st.st_mtime_ns, st.st_size)]
        except FileNotFoundError:
            parts = [None]
        for path in (database, wal):
            try:
                st = os.stat(path)
                parts.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                parts.append(None)
        return tuple(parts)

    def poke(self) -> None:
        """Start finding what changed when the database did, before anyone asks (the watcher)."""
        key = self.key()
        with self._lock:
            st = self._state
            if (st is None or st.key != key) and not self._closed:
                self._job(key)

    def _job(self, key: StateKey) -> _Job:
        """The analysis of ``key``, started when it is not under way (lock held)."""
        job = self._analysing
        if job is None or job.key != key:
            job = _Job(key=key, done=Future())
            job.done = self._thread.submit(self._analyse, job)
            self._analysing = job
        return job

    def lookup(
        self, path: str, *, version: str, files: Mapping[str, FileEntry]
    ) -> Answer | Future[None]:
        """The answer for ``path``, or a future to wait on before asking again."""
        key = self.key()
        with self._lock:
            st = self._state
            if st is None or st.key != key:
                if self._closed:
                    return PUBLISHED
                job = self._job(key)
                found = job.found
                if found is not None and path in found.unchanged:
                    if not self._is_live(found.record, found.matches, version, files):
                        return PUBLISHED
                    return _as_built(found.overlay, path, files)
                if len(job.wanted) < self.max_pending:
                    job.wanted.add(path)
                return job.done if found is not None else job.early
            if (
                not st.usable
                or st.stale is None
                or not self._is_live(st.record, st.matches, version, files)
            ):
                return PUBLISHED
            if path in st.stale.render:
                if path in st.done:
                    return Answer(
                        kind="fresh", hash=st.done[path], type=content_type(path), note="rendered"
                    )
                if path in st.failed:
                    return Answer(kind="published", note="failed")
                future = st.inflight.get(path) or self._queue(st, path)
                return future if future is not None else Answer(kind="published", note="busy")
            old = st.record.pages.get(path) or st.overlay.get(path)
            if old is not None and path not in st.stale.paths:
                return Answer(kind="gone")
            return _as_built(st.overlay, path, files)

    def _queue(self, st: _State, path: str) -> Future[None] | None:
        """Queue the render of ``path`` (lock held); None past ``max_pending``."""
        if self._queued >= self.max_pending or self._closed:
            return None
        self._queued += 1
        future = self._thread.submit(self._render, st, path)
        st.inflight[path] = future
        return future

    def _is_live(
        self,
        record: Previous,
        matches: dict[str, bool],
        version: str,
        files: Mapping[str, FileEntry],
    ) -> bool:
        """The build record is the live version's build (not a failed check's, not a rollback's)."""
        known = matches.get(version)
        if known is None:
            known = all(
                (entry := files.get(p)) is not None and entry.hash == page.hash
                for p, page in record.pages.items()
            )
            matches[version] = known
            if not known:
                self._tell(
                    "origin.record_not_live",
                    version=version,
                    note="the last build is not the live version; serving published pages",
                )
        return known

    def read(self, digest: str) -> bytes:
        """Bytes rendered here (or by the build) from the build's objects folder."""
        return self.objects.read(digest)

    # --- the site's thread -------------------------------------------------------

    def _analyse(self, job: _Job) -> None:
        self.analyses += 1
        old = self._state
        key = job.key
        try:
            st = self._find(job)
        except Exception as exc:  # noqa: BLE001 - any failure: the published pages stay
            message = exc.message if isinstance(exc, RenderError) else repr(exc)
            st = _State(key=key, usable=False, reason=message)
            self._tell("origin.stale_unknown", logging.WARNING, error=message)
        with self._lock:
            self._state = st
            if self._analysing is job:
                self._analysing = None
            if not job.early.done():
                job.early.set_result(None)
            if st.reason == _MOVED and not self._closed:  # the analysis of the state now takes them
                now = self._job(self.key())
                now.wanted.update(sorted(job.wanted)[: max(0, self.max_pending - len(now.wanted))])
            elif st.stale is not None and st.usable:
                for path in sorted(job.wanted & st.stale.render.keys()):
                    self._queue(st, path)
        if st.stale is not None:
            gone = len((st.record.pages.keys() | st.overlay.keys()) - st.stale.paths)
            self._tell("origin.analysed", stale=len(st.stale.render), gone=gone, usable=st.usable)
        if old is not None and old.pool is not None and old.pool is not st.pool:
            old.pool.close()

    def _early(
        self, job: _Job, record: Previous, overlay: Mapping[str, PageRecord]
    ) -> Callable[[frozenset[str]], None]:
        """Let requests for pages of the routes kept whole through (``builder.pending``)."""

        def heard(unchanged: frozenset[str]) -> None:
            with self._lock:
                job.found = _Early(record=record, overlay=overlay, unchanged=unchanged)
                if not job.early.done():
                    job.early.set_result(None)

        return heard

    def _find(self, job: _Job) -> _State:
        key = job.key
        site = load_site(self.folder, host=self.host)
        record_id = key[0]
        if self._record is None or self._record[0] != record_id or record_id is None:
            self._record = (record_id, load_previous(self.build))
            # a build ran: see its packs, and let go of the ones it may have replaced (an
            # ``Objects`` keeps the packs it read open until it is dropped)
            self.objects = Objects(self.build / "objects")
        record = self._record[1]
        if not record.pages:
            return _State(key=key, usable=False, reason="no build record yet")
        overlay = onrequest.load(self.build)
        self._flip = not self._flip
        into = self.shared.scratch(self.id) / (
            "a" if self._flip else "b"
        )  # the other's may still run
        scratch = into / "objects"  # where render processes write; kept pages are copied out
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        with snapshot.take(site, into=into) as snap:
            if self.key() != key:  # the copy may hold a later state than ``key``: look again
                return _State(key=key, usable=False, reason=_MOVED)
            if snap.table_hashes and dict(snap.table_hashes) == dict(record.tables):
                return _State(key=key, usable=True, record=record, record_id=record_id)  # type: ignore[arg-type]
            merged = onrequest.merge(record, overlay)
            stale = builder.pending(
                site,
                snap,
                host=self.host,
                previous=merged,
                objects=scratch,
                kept=self._early(job, record, overlay),
            )
        if not stale.same_sources:
            self._tell(
                "origin.sources_changed",
                logging.WARNING,
                note="templates or routes changed since the last build; the next build renders them",
            )
            return _State(key=key, usable=False, reason="sources changed")
        pool = None
        if stale.render:
            pool = workers.Pool(stale.setup, limits=stale.limits)
            pool.grow(1)  # a render process is up before the first request for a stale page
        return _State(
            key=key,
            usable=True,
            record=record,
            record_id=record_id,  # type: ignore[arg-type]
            stale=stale,
            overlay=overlay,
            pool=pool,
        )

    def _render(self, st: _State, path: str) -> None:
        assert st.stale is not None
        try:
            with self.shared.page(self.id, path):  # another origin process may be rendering it
                digest = self._rendered_elsewhere(st, path) or self._render_here(st, path)
            with self._lock:
                st.done[path] = digest
            if self.on_render is not None:
                self.on_render(path, digest)
        except Exception as exc:  # a template or query error, a limit: the published page stays
            message = exc.message if isinstance(exc, RenderError) else repr(exc)
            with self._lock:
                st.failed[path] = message
            self._tell("origin.render_failed", logging.WARNING, path=path, error=message)
        finally:
            with self._lock:
                st.inflight.pop(path, None)
                self._queued -= 1

    def _rendered_elsewhere(self, st: _State, path: str) -> str | None:
        """The hash of ``path`` as another origin process rendered it from this same state."""
        page = onrequest.rendered(self.build, path, state=st.key)
        if page is None or not self.objects.has(page.hash):
            return None
        self._tell("origin.rendered_elsewhere", path=path, hash=page.hash[:12])
        return str(page.hash)

    def _render_here(self, st: _State, path: str) -> str:
        assert st.stale is not None
        spec, fingerprint = st.stale.render[path]
        if st.pool is None:
            st.pool = workers.Pool(st.stale.setup, limits=st.stale.limits)
        try:
            (result,) = st.pool.run(
                [spec],
                describe=lambda _i: f"{spec.url} (template {spec.template})",
                is_error=lambda r: isinstance(r, PageFailed),
            )
        except BaseException:
            st.pool.close()  # a worker was stopped: start afresh next time
            st.pool = None
            raise
        if isinstance(result, PageFailed):
            raise result.error()
        data = self._bytes(st.stale.setup.objects, result)
        digest = self.objects.write(data, result.hash)
        page = builder.page_record(
            spec, fingerprint, result, old=st.record.pages.get(path), now=utc_stamp()
        )
        onrequest.add(self.build, {path: page}, against=st.record_id, state=st.key)
        self.renders += 1
        self._tell("origin.rendered", path=path, hash=digest[:12])
        return digest

    @staticmethod
    def _bytes(objects: Path, done: PageDone) -> bytes:
        if done.pack is None:
            return (objects / done.hash).read_bytes()
        fd = os.open(objects / PACKS / done.pack, os.O_RDONLY)
        try:
            return os.pread(fd, done.size, done.offset)
        finally:
            os.close(fd)

    def _tell(self, event: str, level: int = logging.INFO, /, **fields: object) -> None:
        log_event(event, level, site=self.id, **fields)

    def close(self) -> None:
        """Let the render under way finish, drop the queued ones, stop the render processes."""
        with self._lock:
            self._closed = True
        self._thread.shutdown(wait=True, cancel_futures=True)
        st = self._state
        if st is not None and st.pool is not None:
            st.pool.close()


def _as_built(
    overlay: Mapping[str, PageRecord], path: str, files: Mapping[str, FileEntry]
) -> Answer:
    """A page as the last build made it, or as rendered on request since when that differs."""
    kept = overlay.get(path)
    if kept is not None and (path not in files or files[path].hash != kept.hash):
        return Answer(kind="fresh", hash=kept.hash, type=content_type(path), note="rendered")
    return PUBLISHED
