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
from pathlib import Path

import pytest
from sitekit import Host, SiteSpec, html, make_host, write_site

import render
from render import config
from render.config import SiteId, load_host, load_site
from render.errors import ConfigError
from render.publish import read_root
from render.scheduler import Daemon
from render.store import open_store

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
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


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
        folder, [problem], "rename the folder",
    )  # fmt: skip
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
