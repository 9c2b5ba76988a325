"""The origin's ASGI application: live versions by Host header, and fresh pages on request.

A request goes host -> site (``render.serve.live.LiveSites.route``, the
resolution ``render serve`` uses, host claims included) -> path -> file of the
live version's tree, or the page ``render.origin.fresh`` says is current. Bytes
are cached in memory by content hash, within ``[origin] cache_mb``. Responses
carry the mirror's headers (``ovh/nginx/render-mirror.conf``), an ``ETag`` made
of the content hash (``If-None-Match`` gives 304), and honour ``HEAD`` and a
single ``Range``; a ``.br`` or ``.gz`` file beside a file in the tree is sent
to a client that accepts it. The versioned URL space (``/_v/<version>/...``,
``/_render/live.json``, ``/sw.js``) is answered as ``render serve`` answers it
(``render.serve.versioned``), from every version the store keeps: fresh pages
apply to the live version's public paths only, and ``/_v/<live>/`` serves the
published bytes.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import Future
from typing import Any

from render.build.tree import FileEntry
from render.check.loopback import Response
from render.config import HostConfig, load_site, site_dirs
from render.errors import RenderError
from render.origin.cache import BytesCache
from render.origin.fresh import PUBLISHED, Answer, SiteFresh
from render.origin.shared import Shared
from render.paths import is_file_url
from render.publish.store import Store
from render.report.dashboard import configured_budgets
from render.report.serve import PREFIX as DASHBOARD
from render.report.serve import WithDashboard, is_loopback_host
from render.run.buildlog import log_event
from render.serve import versioned
from render.serve.live import BlobMissing, Blobs, BrokenSite, LiveSite, LiveSites

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_IMMUTABLE = re.compile(r"\.[0-9a-f]{8,}\.(?:css|js|mjs|woff2?|png|jpe?g|gif|svg|webp|avif)$", re.I)
_DAY = re.compile(
    r"\.(?:css|js|mjs|json|png|jpe?g|gif|svg|webp|avif|ico|woff2?|ttf|otf|pdf|mp4|webm)$", re.I
)
_HOUR = re.compile(r"^/(?:robots\.txt|sitemap[^/]*\.xml)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
WATCH_SECONDS = 0.5
"""How often the databases' size and mtime are looked at between requests."""
_NOT_FOUND = b"<!doctype html><title>Not found</title><h1>Not found</h1>\n"


def cache_control(path: str) -> str:
    """The mirror's Cache-Control for a URL path (``$render_cache_control`` in nginx)."""
    if _IMMUTABLE.search(path):
        return "public, max-age=31536000, immutable"
    if _DAY.search(path):
        return "public, max-age=86400"
    if _HOUR.match(path):
        return "public, max-age=3600"
    return "public, max-age=60"


class Origin:
    """The ASGI application. ``fresh=False`` serves the published versions only."""

    def __init__(
        self, host: HostConfig, store: Store, *, access_log: bool = True, fresh: bool = True
    ) -> None:
        self.host = host
        self.store = store
        self.access_log = access_log
        self.max_wait = host.origin.max_wait_ms / 1000
        self.cache = BytesCache(host.origin.cache_mb << 20)
        # roots are re-read by a thread of their own (``_refresh``), never on a request's path
        self.live = LiveSites(
            store,
            cache=host.state_dir / "origin-cache",
            refresh_seconds=float("inf"),
            report=lambda line: log_event("origin.site", note=line),
        )
        self.refresh_seconds = host.origin.refresh_seconds
        # the operator's dashboard: for a loopback client asking by a loopback name only
        self.dashboard = WithDashboard(
            lambda _host, _path: Response(status=404, body=b"not found\n"),
            host=host,
            folder=host.state_dir / "origin-dashboard",
            budgets=lambda: configured_budgets(host),
        )
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self.fresh: dict[tuple[str, str], SiteFresh] = {}
        self.shared: Shared | None = None
        if fresh:
            self.shared = Shared(host.state_dir / "origin")  # its processes' scratch and locks
            for folder in site_dirs(host):
                try:
                    load_site(folder, host=host)
                except RenderError as exc:
                    log_event(
                        "origin.config_error",
                        30,
                        site=f"{folder.parent.name}/{folder.name}",
                        error=exc.message,
                    )
                    continue
                self.fresh[(folder.parent.name, folder.name)] = SiteFresh(
                    folder, host=host, max_pending=host.origin.max_pending, shared=self.shared
                )

    # --- ASGI ----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            started = time.perf_counter()
            status, size, note = await self._http(scope, send)
            if self.access_log:
                log_event(
                    "origin.request",
                    method=scope["method"],
                    host=_header(scope, b"host"),
                    path=scope["path"],
                    status=status,
                    bytes=size,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                    note=note,
                )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.live.refresh, force=True)
                except RenderError as exc:
                    log_event("origin.store_error", 30, error=exc.message)
                self._refresher = threading.Thread(
                    target=self._refresh, name="render-origin-roots", daemon=True
                )
                self._refresher.start()
                for site in self.fresh.values():  # find stale pages before the first visitor
                    site.poke()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _refresh(self) -> None:
        """Re-read every site's ``root.json`` each ``refresh_seconds`` (a publish shows within
        that), and look at each site's database every ``WATCH_SECONDS``."""
        last = time.monotonic()
        while not self._stop.wait(min(self.refresh_seconds, WATCH_SECONDS)):
            for (
                site
            ) in self.fresh.values():  # a changed database is looked at before a visitor asks
                site.poke()
            if time.monotonic() - last < self.refresh_seconds:
                continue
            last = time.monotonic()
            try:
                self.live.refresh(force=True)
            except RenderError as exc:  # the store cannot be listed: the last listing serves
                log_event("origin.store_error", 30, error=exc.message)

    def close(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        for site in self.fresh.values():
            site.close()
        if self.shared is not None:
            self.shared.close()

    async def _http(self, scope: Scope, send: Send) -> tuple[int, int, str]:
        method = scope["method"]
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return (
                await _send(
                    send,
                    405,
                    b"method not allowed\n",
                    {"Allow": "GET, HEAD", "Content-Type": "text/plain; charset=utf-8"},
                    head=False,
                ),
                0,
                "",
            )
        host_header = _header(scope, b"host")
        host = host_header.split(":")[0].lower()
        path = scope["path"]
        dashboard = path == DASHBOARD or path.startswith(DASHBOARD + "/")
        if dashboard and from_loopback(scope) and is_loopback_host(host_header):
            shown = await asyncio.to_thread(self.dashboard, host_header, path)
            headers = {"Content-Type": shown.content_type, **shown.headers}
            return (
                await _send(send, shown.status, shown.body, headers, head=head),
                len(shown.body),
                "dashboard",
            )
        try:
            found = self.live.route(host, path)
        except RenderError as exc:
            body = f"unavailable: {exc.message}\n".encode()
            return (
                await _send(
                    send, 503, body, {"Content-Type": "text/plain; charset=utf-8"}, head=head
                ),
                len(body),
                "",
            )
        if isinstance(found, Response):
            headers = {"Content-Type": found.content_type, **found.headers}
            return (
                await _send(send, found.status, found.body, headers, head=head),
                len(found.body),
                "",
            )
        site, rest, prefix = found
        if isinstance(site, BrokenSite):
            body = f"{site.owner}/{site.name} is unavailable: {site.problem}\n".encode()
            return (
                await _send(
                    send, 503, body, {"Content-Type": "text/plain; charset=utf-8"}, head=head
                ),
                len(body),
                "",
            )
        if versioned.claims(rest):  # as render serve answers it; never rendered on request
            answer = await asyncio.to_thread(self.live.versioned, site, rest, prefix=prefix)
            if answer is not None:
                headers = {
                    "Content-Type": answer.content_type,
                    "X-Content-Type-Options": "nosniff",
                    **answer.headers,
                }
                return (
                    await _send(send, answer.status, answer.body, headers, head=head),
                    len(answer.body),
                    "",
                )
        return await self._page(scope, send, site, rest, prefix, head=head)

    async def _page(
        self, scope: Scope, send: Send, site: LiveSite, path: str, prefix: str, *, head: bool
    ) -> tuple[int, int, str]:
        rel = path.lstrip("/")
        key = rel + "index.html" if rel == "" or rel.endswith("/") else rel
        answer = await self._answer(site, key)
        status = 200
        if answer.kind == "gone" or (answer.kind == "published" and key not in site.files):
            if (
                answer.kind == "published"
                and rel
                and not rel.endswith("/")
                and not is_file_url(path)
                and f"{rel}/index.html" in site.files
            ):
                location = f"{prefix}{path}/"
                if scope.get("query_string"):
                    location += "?" + scope["query_string"].decode("latin-1")
                await _send(send, 301, b"", {"Location": location}, head=head)
                return 301, 0, ""
            status, key = 404, "404.html"
            missing = await self._answer(site, key)
            if missing.kind == "fresh":
                answer = Answer(
                    kind="fresh", hash=missing.hash, type=missing.type, note=answer.note
                )
            elif key not in site.files:
                headers = {
                    "Content-Type": "text/html; charset=utf-8",
                    versioned.VERSION_HEADER: site.version,
                }
                return (
                    await _send(send, 404, _NOT_FOUND, headers, head=head),
                    len(_NOT_FOUND),
                    answer.note,
                )
            else:
                answer = Answer(kind="published", note=answer.note)
        if answer.kind == "fresh":
            entry = FileEntry(hash=answer.hash, size=-1, type=answer.type)
            encoding = ""
        else:
            entry, encoding = _variant(site.files, key, _header(scope, b"accept-encoding"))
        headers = {
            "Content-Type": entry.type,
            "ETag": f'"{entry.hash}"',
            "Cache-Control": cache_control(path),
            versioned.VERSION_HEADER: site.version,
            "X-Content-Type-Options": "nosniff",
            "Accept-Ranges": "bytes",
        }
        if encoding:
            headers["Content-Encoding"] = encoding
        if encoding or f"{key}.br" in site.files or f"{key}.gz" in site.files:
            headers["Vary"] = "Accept-Encoding"
        if answer.kind == "fresh":
            headers["X-Render-Page"] = "fresh"
        if answer.note in ("timeout", "failed", "busy"):
            headers["Warning"] = '110 - "Response is Stale"'
            headers["X-Render-Page"] = f"published; {answer.note}"
        if status == 200 and _matches(_header(scope, b"if-none-match"), entry.hash):
            del headers["Content-Type"], headers["Accept-Ranges"]
            await _send(send, 304, b"", headers, head=True)
            return 304, 0, answer.note
        try:
            body = await self._bytes(site, entry.hash, fresh=answer.kind == "fresh")
        except OSError:
            body = b"blob missing from the store\n"
            return (
                await _send(send, 502, body, {"Content-Type": "text/plain"}, head=head),
                len(body),
                answer.note,
            )
        ranged = _header(scope, b"range")
        if (
            status == 200
            and _RANGE.match(ranged.strip())
            and _if_range(_header(scope, b"if-range"), entry.hash)
        ):
            span = _span(ranged, len(body))
            if span is None:
                headers["Content-Range"] = f"bytes */{len(body)}"
                return await _send(send, 416, b"", headers, head=head), 0, answer.note
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            part = body[start : end + 1]
            return await _send(send, 206, part, headers, head=head), len(part), answer.note
        return await _send(send, status, body, headers, head=head), len(body), answer.note

    async def _answer(self, site: LiveSite, key: str) -> Answer:
        fresh = self.fresh.get((site.owner, site.name))
        if fresh is None:
            return PUBLISHED
        deadline = time.monotonic() + self.max_wait
        while True:
            got = fresh.lookup(key, version=site.version, files=site.files)
            if isinstance(got, Answer):
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0 or got.cancelled():
                return Answer(kind="published", note="timeout")
            if not got.done():
                try:
                    await asyncio.wait_for(asyncio.shield(_wrap(got)), remaining)
                except TimeoutError:
                    return Answer(kind="published", note="timeout")
                except Exception:  # noqa: BLE001, S112 - the site's state records the failure
                    continue
            elif fresh.lookup(key, version=site.version, files=site.files) is got:
                return Answer(
                    kind="published", note="failed"
                )  # a finished future that changes nothing

    async def _bytes(self, site: LiveSite, digest: str, *, fresh: bool) -> bytes:
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        if fresh:
            owner = self.fresh[(site.owner, site.name)]
            data = await asyncio.to_thread(owner.read, digest)
        else:
            data = await asyncio.to_thread(self._blob, site, digest)
        self.cache.put(digest, data)
        return data

    def _blob(self, site: LiveSite, digest: str) -> bytes:
        try:
            return Blobs(self.store, site).read(digest)
        except BlobMissing:  # the page's answer for a file it cannot read
            raise FileNotFoundError(digest) from None


def _wrap(future: Future[None]) -> asyncio.Future[None]:
    return asyncio.wrap_future(future)


def from_loopback(scope: Scope) -> bool:
    """The client is on this machine (the origin may listen on a public address)."""
    client = scope.get("client")
    return client is not None and str(client[0]) in ("127.0.0.1", "::1")


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _matches(if_none_match: str, digest: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or f'"{digest}"' in tags


def _if_range(if_range: str, digest: str) -> bool:
    return not if_range or if_range.strip() == f'"{digest}"'


def _span(header: str, size: int) -> tuple[int, int] | None:
    """The one range ``header`` asks for within ``size`` bytes; None when unsatisfiable."""
    match = _RANGE.match(header.strip())
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        return None if length == 0 else (max(0, size - length), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return None if start >= size or end < start else (start, end)


def _variant(files: Mapping[str, FileEntry], key: str, accept: str) -> tuple[FileEntry, str]:
    """The file to send for ``key``: its precompressed ``.br`` or ``.gz`` when the client takes it."""
    entry = files[key]
    accepted = (
        {part.split(";")[0].strip().lower() for part in accept.split(",")} if accept else set()
    )
    for suffix, encoding in ((".br", "br"), (".gz", "gzip")):
        variant = files.get(key + suffix)
        if variant is not None and encoding in accepted:
            return FileEntry(hash=variant.hash, size=variant.size, type=entry.type), encoding
    return entry, ""


async def _send(
    send: Send, status: int, body: bytes, headers: Mapping[str, str], *, head: bool
) -> int:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if status != 304:
        raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})
    return status
