"""A build's audit output, stored beside its version and never inside the public tree.

Findings files and Lighthouse HTML reports are for the site's owner and the
host's operators, not for visitors: they live under a key prefix that no
server of this project serves (``render serve``, the mirror and the edge all
resolve paths through a version tree, and no tree names these keys)::

    sites/<owner>/<site>/reports/<version>/seo.json          every SEO finding of the build
    sites/<owner>/<site>/reports/<version>/lighthouse.json   scores, metrics, budgets, no-JS read
    sites/<owner>/<site>/reports/<version>/index.json        what the folder holds; written last
    sites/<owner>/<site>/reports/blobs/<sha256>              a Lighthouse HTML report, uploaded once

HTML reports are content-addressed, like the site's blobs: a page whose audit
was carried forward names the report it already has, so a publish after a
one-row edit uploads the one new report and three small JSON files. They are
written after the root switch (``store_reports``), so they never delay it, and
``collect`` (called by ``render gc``) deletes a version's folder with the
version and the HTML reports no kept version names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from render.errors import PublishError
from render.publish.manifest import JSON_TYPE, site_prefix
from render.publish.store import Store

HTML_TYPE = "text/html; charset=utf-8"
REPORT_CACHE = "private, no-cache"
INDEX = "index.json"


def reports_prefix(owner: str, name: str) -> str:
    return f"{site_prefix(owner, name)}reports/"


def report_key(owner: str, name: str, version: str, file: str) -> str:
    """``sites/<owner>/<site>/reports/<version>/<file>``."""
    return f"{reports_prefix(owner, name)}{version}/{file}"


def html_key(owner: str, name: str, digest: str) -> str:
    """Where the Lighthouse HTML report with this sha256 is kept."""
    return f"{reports_prefix(owner, name)}blobs/{digest}"


@dataclass(frozen=True, kw_only=True)
class StoredReports:
    """What ``store_reports`` wrote."""

    version: str
    files: tuple[str, ...]  # keys of the JSON files
    uploaded_html: int  # HTML reports the store did not have yet
    uploaded_bytes: int


def store_reports(
    store: Store,
    *,
    owner: str,
    name: str,
    version: str,
    files: Mapping[str, bytes],
    html: Mapping[str, bytes],
) -> StoredReports:
    """Write ``files`` (name -> JSON bytes) for ``version`` and any missing ``html`` (sha -> bytes).

    A version re-checked without changes (the same tree published again) gets
    its files replaced: they say what its latest check found.
    """
    uploaded = 0
    uploaded_bytes = 0
    try:
        for digest, data in sorted(html.items()):
            key = html_key(owner, name, digest)
            if not store.exists(key):
                store.put(key, data, content_type=HTML_TYPE, cache_control=REPORT_CACHE)
                uploaded += 1
                uploaded_bytes += len(data)
        keys = []
        for file, data in sorted(files.items()):
            key = report_key(owner, name, version, file)
            store.put(key, data, content_type=JSON_TYPE, cache_control=REPORT_CACHE)
            keys.append(key)
            uploaded_bytes += len(data)
        index = {"version": version, "files": sorted(files), "html": sorted(html)}
        data = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
        store.put(
            report_key(owner, name, version, INDEX),
            data,
            content_type=JSON_TYPE,
            cache_control=REPORT_CACHE,
        )
    except PublishError as exc:
        raise PublishError(
            f"version {version} is live, but its reports were not stored: {exc.message}",
            hint="the next build of the site stores them again",
        ) from None
    return StoredReports(
        version=version, files=tuple(keys), uploaded_html=uploaded, uploaded_bytes=uploaded_bytes
    )


def read_report(store: Store, *, owner: str, name: str, version: str, file: str) -> bytes | None:
    """One stored report file of ``version``, or None when it has none."""
    return store.get(report_key(owner, name, version, file))


def read_html(store: Store, *, owner: str, name: str, digest: str) -> bytes | None:
    return store.get(html_key(owner, name, digest))


@dataclass(frozen=True, kw_only=True)
class Collected:
    """What ``collect`` removed (or would remove, on a dry run)."""

    keys: tuple[str, ...]
    bytes: int


def collect(
    store: Store,
    *,
    owner: str,
    name: str,
    kept: set[str],
    dropped: set[str],
    cutoff: float,
    dry_run: bool = False,
) -> Collected:
    """Delete the reports of the ``dropped`` versions and HTML reports no ``kept`` version names.

    A folder of a version gc neither kept nor dropped (one published after gc
    listed the versions, or left by a version deleted by hand) goes only once
    it is older than ``cutoff`` (a time), and so does an unnamed HTML report:
    a build that switched its root a moment ago may be writing them now.
    """
    prefix = reports_prefix(owner, name)
    listed = store.list(prefix)
    named: set[str] = set()
    for version in sorted(kept):
        data = store.get(report_key(owner, name, version, INDEX))
        if data is None:
            continue
        try:
            named |= set(json.loads(data).get("html", []))
        except (ValueError, AttributeError):
            raise PublishError(
                f"{report_key(owner, name, version, INDEX)} in the store is corrupt",
                hint="delete it; the next build of the site writes it again",
            ) from None
    drop = []
    for obj in listed:
        rest = obj.key[len(prefix) :]
        folder, _, leaf = rest.partition("/")
        if folder == "blobs":
            if leaf not in named and obj.modified < cutoff:
                drop.append(obj)
        elif folder in dropped or (folder not in kept and obj.modified < cutoff):
            drop.append(obj)
    # a version's index goes last, so an interrupted gc leaves a folder gc still sees
    drop.sort(key=lambda o: (o.key.endswith("/" + INDEX), o.key))
    if not dry_run and drop:
        store.delete([o.key for o in drop])
    return Collected(keys=tuple(o.key for o in drop), bytes=sum(o.size for o in drop))
