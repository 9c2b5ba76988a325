"""Issue 19, config items: number ranges, unreadable site.toml files, site ids, host claims.

Each test here failed on the code before the fix; the report of the fix names the line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import subprocess
import sys
import threading
import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mirrorkit import publish_files, site_files
from s3server import moto_url, new_bucket, s3_config, s3_env
from sitekit import Host, SiteSpec, html, make_host, write_site

import render
from render import config
from render.config import SiteId, load_host, load_site
from render.errors import ConfigError, PublishError
from render.mirror import sync as mirror
from render.publish import hosts
from render.publish.manifest import root_key
from render.publish.store import LocalStore, S3Store, Store, open_store
from render.publish.versions import read_root
from render.scheduler import Daemon
from render.serve.live import LiveSites

__all__ = ["moto_url", "s3_env"]  # fixtures used by name below

HOST_SECTIONS = [
    config.HostSection,
    config.StoreConfig,
    config.MirrorConfig,
    config.CdnConfig,
    config.ScheduleConfig,
    config.LimitsConfig,
]
SITE_SECTIONS = [config.SiteSection, config.Route, config.SeoConfig, config.LighthouseConfig]


# --- item 13: every number has a declared range ---------------------------------


def test_every_number_field_declares_its_range() -> None:
    undeclared = [
        f"{cls.__name__}.{f.name}"
        for cls in [*HOST_SECTIONS, *SITE_SECTIONS]
        for f in dataclasses.fields(cls)
        if typing.get_type_hints(cls)[f.name] in (int, float)
        and f.name != "index"  # set by the loader, never read from a file
        and "between" not in f.metadata
    ]
    assert undeclared == [], "declare _f(..., between=(lowest, highest)) for these"


BAD_HOST_NUMBERS = [
    ("limits", "workers = 0", "limits.workers: must be between 1 and 64, got 0"),
    (
        "limits",
        "workers = 9223372036854775807",
        "limits.workers: must be between 1 and 64, got 9223372036854775807",
    ),
    (
        "limits",
        "template_memory_mb = 9223372036854775807",
        "limits.template_memory_mb: must be between 64 and 1048576, got 9223372036854775807",
    ),
    (
        "limits",
        "template_cpu_seconds = 0",
        "limits.template_cpu_seconds: must be between 1 and 3600, got 0",
    ),
    (
        "limits",
        "page_max_bytes = 0",
        "limits.page_max_bytes: must be between 1024 and 1073741824, got 0",
    ),
    ("limits", "query_seconds = nan", "limits.query_seconds: expected a finite number, got nan"),
    ("limits", "query_seconds = inf", "limits.query_seconds: expected a finite number, got inf"),
    ("limits", "query_seconds = 0", "limits.query_seconds: must be between 0.01 and 3600, got 0"),
    (
        "limits",
        "query_seconds = 1e308",
        "limits.query_seconds: must be between 0.01 and 3600, got 1e+308",
    ),
    (
        "limits",
        "sql_max_length = 0",
        "limits.sql_max_length: must be between 1 and 10000000, got 0",
    ),
    (
        "schedule",
        "misfire_grace = 0",
        "schedule.misfire_grace: must be between 1 and 2678400, got 0",
    ),
    ("schedule", "jitter = -1", "schedule.jitter: must be between 0 and 86400, got -1"),
    ("schedule", "poll = 0", "schedule.poll: must be between 1 and 3600, got 0"),
    ("store", "gc_grace_hours = nan", "store.gc_grace_hours: expected a finite number, got nan"),
    ("store", "concurrency = 100000", "store.concurrency: must be between 1 and 256, got 100000"),
    ("mirror", "keep = 0", "mirror.keep: must be between 1 and 1000, got 0"),
    ("cdn", "min_interval = -0.5", "cdn.min_interval: must be between 0 and 60, got -0.5"),
    ("cdn", "max_wait = -inf", "cdn.max_wait: expected a finite number, got -inf"),
]


@pytest.mark.parametrize(
    ("section", "line", "problem"), BAD_HOST_NUMBERS, ids=[b[1] for b in BAD_HOST_NUMBERS]
)
def test_a_number_out_of_range_in_render_toml_is_one_config_problem(
    tmp_path: Path, section: str, line: str, problem: str
) -> None:
    (tmp_path / "render.toml").write_text(f"[{section}]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_host(tmp_path / "render.toml")
    assert caught.value.problems == [f"render.toml: {problem}"]


def test_range_problems_are_collected_with_the_others(tmp_path: Path) -> None:
    (tmp_path / "render.toml").write_text(
        '[limits]\nworkers = 0\nquery_seconds = nan\n[store]\nkind = "ftp"\n[schedule]\nworkers = 65\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_host(tmp_path / "render.toml")
    assert caught.value.problems == [
        "render.toml: schedule.workers: must be between 1 and 64, got 65",
        "render.toml: limits.workers: must be between 1 and 64, got 0",
        "render.toml: limits.query_seconds: expected a finite number, got nan",
        "render.toml: store.kind: expected 'local' or 's3', got 'ftp'",
    ]


BAD_SITE_NUMBERS = [
    ("[lighthouse]\ntimeout = 0", "lighthouse.timeout: must be between 1 and 3600, got 0"),
    ("[lighthouse]\nruns = 1000", "lighthouse.runs: must be between 1 and 10, got 1000"),
    (
        "[lighthouse.budgets]\nseo = nan",
        "lighthouse.budgets.seo: expected a finite number, got nan",
    ),
    ("[lighthouse.budgets]\nseo = 2", "lighthouse.budgets.seo: must be between 0 and 1, got 2"),
    (
        '[[routes]]\npath = "/"\ntemplate = "i.html"\nquery = "select 1"\npaginate = -5',
        "routes[1].paginate: must be between 0 and 100000, got -5",
    ),
]


@pytest.mark.parametrize(
    ("toml", "problem"), BAD_SITE_NUMBERS, ids=[b[1] for b in BAD_SITE_NUMBERS]
)
def test_a_number_out_of_range_in_site_toml_is_one_config_problem(
    tmp_path: Path, toml: str, problem: str
) -> None:
    host = make_host(tmp_path, sites={"acme/blog": SiteSpec(lighthouse=None, extra_toml=toml)})
    with pytest.raises(ConfigError) as caught:
        host.site("acme/blog")
    assert caught.value.problems == [f"sites/acme/blog/site.toml: {problem}"]


def test_nightly_with_a_nan_deadline_stops_at_the_config(tmp_path: Path) -> None:
    host = make_host(
        tmp_path, sites={"acme/blog": SiteSpec()}, extra_toml="[limits]\nquery_seconds = nan\n"
    )
    result = host.cli("nightly")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: config: render.toml: limits.query_seconds: expected a finite number, got nan\n"
    )


# --- item 7: one bad site.toml never blocks the other tenants --------------------

GOOD_AND_BAD = {"acme/good": SiteSpec(), "acme/bad": SiteSpec()}


def _fifo(path: Path) -> Path:
    path.unlink()
    os.mkfifo(path)
    return path


@contextlib.contextmanager
def _released(fifo: Path) -> Iterator[None]:
    """On the way out, open the FIFO for writing once: a reader stuck on it (old code) wakes."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _cli(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, with this test's ``render`` on the path."""
    package_parent = str(Path(render.__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, "-m", "render", *args, "--config", str(host.config_path)],
        env={**os.environ, "PYTHONPATH": package_parent, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_fifo_site_toml_fails_its_site_and_nightly_builds_the_others(tmp_path: Path) -> None:
    host = make_host(tmp_path, sites=GOOD_AND_BAD)
    fifo = _fifo(host.site_dir("acme/bad") / "site.toml")
    with _released(fifo):
        result = _cli(host, "nightly")
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "Error: acme/bad: config: sites/acme/bad/site.toml: is a FIFO, not a regular file\n"
    )
    assert "render nightly: 2 sites, 1 failed" in result.stdout
    assert "published" in next(line for line in result.stdout.splitlines() if "acme/good" in line)


def test_a_fifo_site_toml_shows_as_a_config_error_in_status(tmp_path: Path) -> None:
    host = make_host(tmp_path, sites=GOOD_AND_BAD)
    fifo = _fifo(host.site_dir("acme/bad") / "site.toml")
    with _released(fifo):
        result = _cli(host, "status")
    assert result.returncode == 0, result.stderr
    bad = next(line for line in result.stdout.splitlines() if "acme/bad" in line)
    assert "config error" in bad and "is a FIFO, not a regular file" in bad
    assert any("acme/good" in line for line in result.stdout.splitlines())


LATIN_1 = b'[site]\nbase_url = "https://caf\xe9.example"\n'
LATIN_1_PROBLEM = (
    "sites/acme/bad/site.toml: line 2, column 24: byte 0xe9 (offset 30) is not UTF-8;"
    " save the file as UTF-8"
)


def test_a_latin_1_byte_in_site_toml_is_a_config_error_naming_line_and_offset(
    tmp_path: Path,
) -> None:
    host = make_host(tmp_path, sites=GOOD_AND_BAD)
    (host.site_dir("acme/bad") / "site.toml").write_bytes(LATIN_1)
    with pytest.raises(ConfigError) as caught:
        host.site("acme/bad")
    assert (caught.value.site, caught.value.problems) == ("acme/bad", [LATIN_1_PROBLEM])
    result = host.cli("nightly")
    assert result.exit_code == 1
    assert result.stderr == f"Error: acme/bad: config: {LATIN_1_PROBLEM}\n"
    assert "render nightly: 2 sites, 1 failed" in result.stdout


@pytest.mark.parametrize("bad", ["fifo", "latin-1"])
def test_the_scheduler_schedules_the_other_sites_past_a_bad_site_toml(
    tmp_path: Path, bad: str
) -> None:
    host = make_host(tmp_path, sites=GOOD_AND_BAD)
    toml = host.site_dir("acme/bad") / "site.toml"
    if bad == "fifo":
        _fifo(toml)
    else:
        toml.write_bytes(LATIN_1)
    daemon = Daemon(host.config, runner=lambda *a, **k: None, handle_signals=False)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # the old code's UnicodeDecodeError ends up here
            failed.append(exc)

    thread = threading.Thread(target=run, name="test-daemon")
    with _released(toml):
        thread.start()
        try:
            # a guard, not a timing assertion: the old code never gets ready
            assert daemon.ready.wait(60) or failed, "the daemon hangs on the bad site.toml"
            assert failed == []
            assert set(daemon.planned()) == {"acme/good"}
        finally:
            daemon.stop()
    thread.join(60)


@pytest.mark.parametrize("kind", ["symlink", "folder", "too large"])
def test_site_toml_must_be_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    host = make_host(tmp_path, sites=GOOD_AND_BAD)
    toml = host.site_dir("acme/bad") / "site.toml"
    if kind == "symlink":
        toml.unlink()
        toml.symlink_to(host.site_dir("acme/good") / "site.toml")
        problem = "is a symbolic link; it must be a regular file"
    elif kind == "folder":
        toml.unlink()
        toml.mkdir()
        problem = "is a folder, not a regular file"
    else:
        toml.write_text('[site]\nbase_url = "https://a.example"\n' + "#" * (1 << 20))
        problem = "is larger than 1024 KiB"
    with pytest.raises(ConfigError) as caught:
        host.site("acme/bad")
    assert caught.value.problems == [f"sites/acme/bad/site.toml: {problem}"]


# --- item 1: a site's id is its folder ------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: proof that a tenant's pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_a_hostile_owner_never_reaches_the_state_folder_or_unpickles(tmp_path: Path) -> None:
    evil = SiteSpec(site={"owner": "../../sites/evil"})
    host = make_host(tmp_path, sites={"acme/blog": SiteSpec(), "evil/blog": evil})
    marker = tmp_path / "pwned"
    # <state>/builds/../../sites/evil/blog is the tenant's own folder: a record planted there
    (host.site_dir("evil/blog") / "build.pickle").write_bytes(pickle.dumps(_Payload(marker)))
    result = host.cli("nightly")
    assert not marker.exists(), "the tenant's pickle ran in render's process"
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: evil/blog: config: sites/evil/blog/site.toml: site.owner: must be the folder's"
        " owner 'evil' (sites/evil/blog/), got '../../sites/evil'; a site's id is its folder\n"
    )
    assert sorted(p.name for p in (host.state_dir / "builds").iterdir()) == ["acme"]


def test_a_site_cannot_publish_over_another_tenants_site(tmp_path: Path) -> None:
    host = make_host(tmp_path, sites={"acme/blog": SiteSpec()})
    victim = host.run("acme/blog").version
    mallory = SiteSpec(
        site={"owner": "acme", "name": "blog"},
        templates={"index.html": html("<p>defaced</p>")},
    )
    write_site(host.site_dir("mallory/blog"), mallory)
    result = host.cli("nightly")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: mallory/blog: config: sites/mallory/blog/site.toml: site.owner: must be the"
        " folder's owner 'mallory' (sites/mallory/blog/), got 'acme'; a site's id is its folder\n"
    )
    root, _ = read_root(open_store(host.config), owner="acme", name="blog")
    assert root is not None and root.version == victim


@pytest.mark.parametrize("folder", ["Acme/blog", "acme/my.blog", "acme/-blog", "acme/my blog"])
def test_a_folder_name_that_is_not_a_site_id_fails_that_site(tmp_path: Path, folder: str) -> None:
    host = make_host(tmp_path, sites={"acme/good": SiteSpec(), folder: SiteSpec()})
    bad = folder.split("/")[0] if folder.startswith("Acme") else folder.split("/")[1]
    problem = (
        f"sites/{folder}/site.toml: the folder name {bad!r} is not a site id: use lowercase"
        " letters, digits, '-' and '_', starting with a letter or digit, at most 63 characters"
    )
    with pytest.raises(ConfigError) as caught:
        load_site(host.site_dir(folder), host=host.config)
    assert (caught.value.site, caught.value.problems, caught.value.hint) == (
        folder,
        [problem],
        "rename the folder",
    )
    result = host.cli("nightly")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {folder}: config: {problem}\nHint: rename the folder\n"
    assert "render nightly: 2 sites, 1 failed" in result.stdout


def test_owner_and_name_that_repeat_the_folder_are_accepted(tmp_path: Path) -> None:
    host = make_host(
        tmp_path, sites={"acme/blog": SiteSpec(site={"owner": "acme", "name": "blog"})}
    )
    assert host.site("acme/blog").id == SiteId(owner="acme", name="blog")


@pytest.mark.parametrize(
    ("key", "value"),
    [("state", "sites/.render"), ("state", "."), ("sites", ".render/builds")],
)
def test_the_state_folder_and_the_sites_folder_never_overlap(
    tmp_path: Path, key: str, value: str
) -> None:
    (tmp_path / "render.toml").write_text(f'[host]\n{key} = "{value}"\n')
    with pytest.raises(ConfigError) as caught:
        load_host(tmp_path / "render.toml")
    state, sites = (value, "sites") if key == "state" else (".render", value)
    assert caught.value.problems == [
        f"render.toml: host.state: {state!r} overlaps the sites folder {sites!r}, which tenants write"
    ]


def test_store_and_mirror_folders_stay_out_of_the_sites_folder(tmp_path: Path) -> None:
    (tmp_path / "render.toml").write_text(
        '[store]\npath = "sites/acme"\n[mirror]\npath = "sites/acme/blog/mirror"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_host(tmp_path / "render.toml")
    assert caught.value.problems == [
        "render.toml: store.path: 'sites/acme' overlaps the sites folder 'sites', which tenants write",
        "render.toml: mirror.path: 'sites/acme/blog/mirror' overlaps the sites folder 'sites',"
        " which tenants write",
    ]


@pytest.mark.parametrize("owner", ["..", "../x", "", "A", ".hidden", "a/b", "x" * 64])
def test_a_site_id_is_always_two_plain_folder_names(owner: str) -> None:
    with pytest.raises(ValueError, match="not a site id"):
        SiteId(owner=owner, name="blog")


# --- item 3: a host name belongs to the first site that published it ---------------

H = "blog.test"
TAKEN = (
    "the host blog.test (base_url) belongs to acme/blog, which published it first",
    "change [site] base_url in site.toml, or release the host: acme/blog releases it when it"
    " publishes with another base_url",
)


def _put(
    store: Store, tmp_path: Path, owner: str, name: str, base_url: str = f"http://{H}/"
) -> str:
    """Publish a new version of ``owner/name`` (its pages name the base_url, as real ones do)."""
    return publish_files(
        store,
        site_files(f"{owner}-{name}-{base_url.split('/')[2]}"),
        objects=tmp_path / "objects",
        owner=owner,
        name=name,
        base_url=base_url,
    )


def _refused(store: Store, tmp_path: Path, owner: str, name: str, **kw: str) -> PublishError:
    with pytest.raises(PublishError) as caught:
        _put(store, tmp_path, owner, name, **kw)
    return caught.value


def test_a_second_site_cannot_take_a_published_host(tmp_path: Path) -> None:
    host = make_host(tmp_path, sites={"acme/blog": SiteSpec()})
    owner_version = host.run("acme/blog").version
    write_site(host.site_dir("aaa/evil"), SiteSpec())  # same base_url, sorts first
    result = host.cli("nightly")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: aaa/evil: publish: the host example.com (base_url) belongs to acme/blog,"
        " which published it first\n"
        "Hint: change [site] base_url in site.toml, or release the host: acme/blog releases it"
        " when it publishes with another base_url\n"
    )
    config = host.config
    store = open_store(config)
    assert read_root(store, owner="aaa", name="evil") == (None, None)
    assert store.list("sites/aaa/") == []  # refused before uploading anything
    assert (config.mirror_path / "hosts.map").read_text().splitlines()[1:] == [
        "example.com acme/blog;"
    ]
    served = LiveSites(store, cache=tmp_path / "cache")("example.com", "/")
    assert served.headers["X-Render-Version"] == owner_version


def test_a_site_that_moves_releases_its_old_host(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _put(store, tmp_path, "acme", "blog")
    error = _refused(store, tmp_path, "zeta", "blog")
    assert (error.site, error.message, error.hint) == ("zeta/blog", *TAKEN)
    _put(store, tmp_path, "acme", "blog", base_url="http://new.test/")
    assert (hosts.holder(store, H), hosts.holder(store, "new.test")) == (None, "acme/blog")
    _put(store, tmp_path, "zeta", "blog")
    assert hosts.holder(store, H) == "zeta/blog"
    error = _refused(store, tmp_path, "acme", "blog")  # and acme cannot come back
    assert (
        error.message
        == "the host blog.test (base_url) belongs to zeta/blog, which published it first"
    )


def test_a_host_live_before_claims_existed_stays_with_its_site(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _put(store, tmp_path, "acme", "blog")
    store.delete([hosts.claim_key(H)])  # as a render without host claims left the store
    error = _refused(store, tmp_path, "aaa", "evil")
    assert (error.site, error.message, error.hint) == ("aaa/evil", *TAKEN)


@pytest.mark.parametrize(("hours", "free"), [(1, False), (49, True)])
def test_a_claim_whose_site_never_went_live_is_free_after_the_grace(
    tmp_path: Path, hours: int, free: bool
) -> None:
    store = LocalStore(tmp_path / "store")
    # acme/blog claimed the host, then its publish stopped before the root switch
    hosts.claim(
        store,
        host=H,
        site="acme/blog",
        version="20260101T000000Z-00000000",
        grace_hours=48,
        now=datetime.now(UTC) - timedelta(hours=hours),
    )
    if free:
        _put(store, tmp_path, "zeta", "blog")
        assert hosts.holder(store, H) == "zeta/blog"
    else:
        assert _refused(store, tmp_path, "zeta", "blog").message == TAKEN[0]


class _Racing:
    """A store whose first read of a host claim waits for the other publisher's (a seam, no patch)."""

    def __init__(self, store: Store, barrier: threading.Barrier) -> None:
        self._store = store
        self._barrier = barrier
        self._waited = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        got = self._store.get_tagged(key)
        if key.startswith("hosts/") and not self._waited:
            self._waited = True
            self._barrier.wait()  # both publishers have read "nobody holds it"
        return got


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_sites_racing_for_one_host_cannot_both_win(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "local":
        stores = [LocalStore(tmp_path / "store") for _ in range(2)]
    else:
        endpoint = request.getfixturevalue("moto_url")
        bucket = new_bucket(endpoint)
        stores = [S3Store(s3_config(endpoint, bucket)) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=60)
    outcomes: dict[str, str] = {}

    def publish_as(site: str, store: Store) -> None:
        owner, name = site.split("/")
        try:
            _put(_Racing(store, barrier), tmp_path / site, owner, name)  # type: ignore[arg-type]
            outcomes[site] = "published"
        except PublishError as exc:
            outcomes[site] = exc.message

    threads = [
        threading.Thread(target=publish_as, args=(site, store))
        for site, store in zip(["acme/blog", "zeta/blog"], stores, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    winner = hosts.holder(stores[0], H)
    loser = "zeta/blog" if winner == "acme/blog" else "acme/blog"
    assert outcomes == {
        winner: "published",
        loser: f"the host blog.test (base_url) belongs to {winner}, which published it first",
    }
    assert read_root(stores[0], owner=loser.split("/")[0], name="blog") == (None, None)


def test_mirror_and_serve_give_a_shared_host_to_its_holder(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    holder_version = _put(store, tmp_path, "zeta", "blog")
    # aaa/blog went live with the same host before host claims existed
    _put(store, tmp_path, "aaa", "blog", base_url="http://other.test/")
    root, _ = read_root(store, owner="aaa", name="blog")
    assert root is not None
    legacy = dataclasses.replace(root, base_url=f"http://{H}/")
    store.put(
        root_key("aaa", "blog"),
        legacy.to_bytes(),
        content_type="application/json",
        cache_control="no-cache",
    )
    mirror_root = tmp_path / "mirror"
    mirror.sync(store, mirror_root)
    assert (mirror_root / "hosts.map").read_text().splitlines()[1:] == ["blog.test zeta/blog;"]
    served = LiveSites(store, cache=tmp_path / "cache")(H, "/")
    assert served.headers["X-Render-Version"] == holder_version
