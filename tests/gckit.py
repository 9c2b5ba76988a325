"""Shared pieces for the gc tests: a store that runs a piece of the test at one precise call,
a thread whose result the test reads, the check that a version reads back whole, and the
``store`` fixture (local and S3)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from s3server import new_bucket, s3_config

from render.errors import PublishError
from render.publish.packs import StoredBlobs
from render.publish.store import LocalStore, S3Store, Store
from render.publish.versions import read_root, read_tree


class Hooked:
    """``inner``, except that ``hook`` runs once, at the first ``method`` call whose key has ``part``.

    ``when="before"`` runs it before that call reaches the store, ``"after"`` once it returned.
    """

    def __init__(
        self,
        inner: Store,
        *,
        method: str,
        part: str,
        hook: Callable[[], None],
        when: str = "before",
    ) -> None:
        self._inner, self._method, self._part, self._hook, self._when = (
            inner,
            method,
            part,
            hook,
            when,
        )
        self.fired = False
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def hooked(*args: object, **kwargs: object) -> object:
            key = str(args[0]) if args else ""
            with self._lock:  # concurrent uploads: exactly one of them is the first
                due = not self.fired and self._part in key
                self.fired = self.fired or due
            if due and self._when == "before":
                self._hook()
            result = attr(*args, **kwargs)
            if due and self._when == "after":
                self._hook()
            return result

        return hooked


class RootReads:
    """``inner``, setting ``again`` at the second read of ``root.json``: a writer waiting out a lease."""

    def __init__(self, inner: Store, again: threading.Event) -> None:
        self._inner = inner
        self.reads = 0
        self.again = again

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._inner, name)
        if name != "get_tagged":
            return attr

        def counted(key: str) -> object:
            if key.endswith("/root.json"):
                self.reads += 1
                if self.reads > 1:
                    self.again.set()
            return attr(key)

        return counted


def in_thread(
    fn: Callable[[], object], done: threading.Event | None = None
) -> tuple[threading.Thread, list[object]]:
    """Run ``fn`` in a thread; its result (or exception) lands in the list, then ``done`` is set."""
    out: list[object] = []
    done = done or threading.Event()

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def assert_whole(store: Store, version: str | None = None) -> str:
    """Every blob ``version`` (default: the live one) names reads back with the bytes of its hash,
    from its pack or its loose key; the version it checked."""
    if version is None:
        root, _ = read_root(store, owner="acme", name="blog")
        assert root is not None
        version = root.version
    tree = read_tree(store, owner="acme", name="blog", version=version)
    blobs = StoredBlobs(store, owner="acme", name="blog", tree=tree)
    broken = []
    for digest in sorted(tree.hashes()):
        try:
            data = blobs.read(digest)
        except PublishError:
            data = None
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            broken.append(digest)
    assert broken == [], f"{len(broken)} blobs of {version} are gone"
    return version


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A local folder store, then an S3 store on moto (the test module imports ``moto_url``)."""
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
        return
    endpoint = request.getfixturevalue("moto_url")
    s3 = S3Store(s3_config(endpoint, new_bucket(endpoint)))
    yield s3
    s3.close()
