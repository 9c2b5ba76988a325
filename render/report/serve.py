"""``/_dashboard/`` beside the live sites in ``render serve``: for the operator, never for visitors.

``render serve`` listens on 127.0.0.1 only; on top of that the dashboard
answers only to a loopback host name (``127.0.0.1``, ``localhost``,
``*.localhost``, ``[::1]``), so a page on another site that points a DNS name
at 127.0.0.1 cannot read it, and a tenant's own host name never shows it: a
request for ``/_dashboard/`` under a site's Host goes to the site (its 404).
The dashboard is rewritten (``render.report.dashboard``) when a build has
finished since it was written, at most every ``refresh_seconds``.
"""

from __future__ import annotations

import mimetypes
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from render.check.loopback import Resolver, Response
from render.config import HostConfig
from render.report.dashboard import write_dashboard
from render.run.ledger import open_ledger

PREFIX = "/_dashboard"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def is_loopback_host(header: str) -> bool:
    name = header.strip().lower()
    if name.startswith("["):
        name = name.split("]", 1)[0] + "]"
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    return name in _LOOPBACK_NAMES or name.endswith(".localhost") or name == ""


class WithDashboard:
    """A ``Resolver``: ``/_dashboard/...`` from the dashboard folder, everything else from ``inner``."""

    def __init__(
        self,
        inner: Resolver,
        *,
        host: HostConfig,
        folder: Path,
        budgets: Callable[[], Mapping[tuple[str, str], Mapping[str, float]]] | None = None,
        refresh_seconds: float = 5.0,
    ) -> None:
        self.inner = inner
        self.host = host
        self.folder = folder
        self.budgets = budgets
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._stamp: tuple[object, ...] | None = None
        self._checked = -1e9

    def __call__(self, host: str, path: str) -> Response:
        if not (path == PREFIX or path.startswith(PREFIX + "/")) or not is_loopback_host(host):
            return self.inner(host, path)
        if path == PREFIX:
            return Response(status=301, headers={"Location": PREFIX + "/"})
        self.refresh()
        rel = path[len(PREFIX) + 1 :]
        if rel == "" or rel.endswith("/"):
            rel += "index.html"
        root = self.folder.resolve()
        target = (root / rel).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return Response(status=404, body=b"not found\n", content_type="text/plain")
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind == "application/json":
            kind += "; charset=utf-8"
        return Response(
            body=target.read_bytes(), content_type=kind, headers={"Cache-Control": "no-cache"}
        )

    def refresh(self) -> None:
        """Rewrite the dashboard when the ledger has a build it does not show."""
        with self._lock:
            if time.monotonic() - self._checked < self.refresh_seconds and self._stamp is not None:
                return
            self._checked = time.monotonic()
            with open_ledger(self.host.state_dir) as ledger:
                row = ledger.select("select count(*), max(id), max(finished) from runs")
                stamp = tuple(row[0])
            if stamp == self._stamp and (self.folder / "index.html").is_file():
                return
            budgets = self.budgets() if self.budgets is not None else None
            write_dashboard(self.host, self.folder, budgets=budgets)
            self._stamp = stamp
