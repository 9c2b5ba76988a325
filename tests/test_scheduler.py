"""The scheduler daemon: cron times, restarts, reconciliation, auto mode, locks and SIGTERM.

Time runs for real, in seconds: six-field cron strings (seconds first) fire
every few seconds, and every wait polls a condition with a deadline. Builds go
through the daemon's runner seam (``schedkit.record_runner`` takes the real
site lock and records each build; ``schedkit.publish_runner`` publishes with
the real ``render.publish.versions`` into a real ``LocalStore``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from render.config import load_host, load_site
from render.publish.packs import StoredBlobs
from render.publish.store import LocalStore
from render.publish.versions import publish_tree, read_root, read_tree
from render.run.locks import site_lock
from render.scheduler import JOBSTORE_FILE, Daemon, SiteRunner, next_run, running

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

from schedkit import (  # noqa: E402
    record_runner,
    runs,
    version_files,
    wait_for,
    write_host,
    write_site,
)

NEVER = "0 0 1 1 *"  # New Year's midnight: does not fire during a test run
EVENT = "render_event"


@contextmanager
def daemon(
    config: Path, *, runner: SiteRunner = record_runner, reconcile: float = 60.0
) -> Iterator[Daemon]:
    """A daemon running in a thread of this process; stopped (and checked stopped) on exit."""
    d = Daemon(load_host(config), runner=runner, reconcile_every=reconcile, handle_signals=False)
    failure: list[BaseException] = []

    def main() -> None:
        try:
            d.run()
        except BaseException as exc:  # surfaced below
            failure.append(exc)

    thread = threading.Thread(target=main, name="daemon")
    thread.start()
    wait_for(lambda: d.ready.is_set() or failure, timeout=20, what="the daemon to start")
    try:
        assert not failure, failure
        yield d
    finally:
        d.stop()
        thread.join(30)
        assert not thread.is_alive(), "the daemon did not stop"
        assert not failure, failure


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    return [
        dict(getattr(r, "render_fields", {}))
        for r in caplog.records
        if getattr(r, EVENT, None) == name
    ]


def jobs_in_store(state: Path) -> list[str]:
    with sqlite3.connect(state / JOBSTORE_FILE) as db:
        return sorted(row[0] for row in db.execute("select id from apscheduler_jobs"))


def test_two_sites_run_at_their_own_cron_times(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="render")
    config = write_host(
        tmp_path,
        sites={
            "acme/even": {"schedule": "*/4 * * * * *"},  # seconds 0, 4, 8, ...
            "acme/odd": {"schedule": "2-59/4 * * * * *"},  # seconds 2, 6, 10, ...
        },
    )
    state = tmp_path / "state"

    def both_ran_twice() -> bool:
        sites = [r["site"] for r in runs(state)]
        return sites.count("acme/even") >= 2 and sites.count("acme/odd") >= 2

    with daemon(config):
        wait_for(both_ran_twice, timeout=30, what="two runs of each site")
    for run in runs(state):
        phase = 0 if run["site"] == "acme/even" else 2
        assert (run["enter"] - phase) % 4 < 2.0, run  # it started at its own cron second
        assert run["reason"] == "schedule"
    ends = events(caplog, "build.end")
    assert {e["site"] for e in ends} == {"acme/even", "acme/odd"}
    assert all(e["outcome"] == "published" and e["reason"] == "schedule" for e in ends)
    assert all(isinstance(e["seconds"], float) for e in ends)


def test_restart_keeps_the_jobs_and_runs_a_missed_run_once(tmp_path: Path) -> None:
    config = write_host(tmp_path, sites={"acme/blog": {"schedule": "*/2 * * * * *"}})
    state = tmp_path / "state"
    with daemon(config):
        wait_for(lambda: runs(state), timeout=20, what="a first run")
    down_at = time.time()
    assert jobs_in_store(state) == ["acme/blog"]
    # stay down across at least two of its run times
    wait_for(lambda: time.time() > down_at + 4.5, timeout=10, what="missed runs")
    before = len(runs(state))
    with daemon(config) as d:
        wait_for(
            lambda: any(r["reason"] == "schedule" for r in runs(state)[before:]),
            timeout=20,
            what="a scheduled run after the restart",
        )
        assert list(d.planned()) == ["acme/blog"]
    after = runs(state)[before:]
    assert [r["reason"] for r in after][:2] == ["catch-up", "schedule"]
    assert sum(r["reason"] == "catch-up" for r in after) == 1
    assert jobs_in_store(state) == ["acme/blog"]  # kept, not duplicated


def test_jobs_follow_the_sites_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="render")
    config = write_host(tmp_path, sites={"acme/blog": {"schedule": NEVER}})
    state = tmp_path / "state"
    with daemon(config, reconcile=0.3) as d:
        assert list(d.planned()) == ["acme/blog"]
        write_site(tmp_path, "acme/shop", {"schedule": "* * * * * *"})  # a new site
        wait_for(
            lambda: [r for r in runs(state) if r["site"] == "acme/shop"],
            timeout=20,
            what="the new site's first build",
        )
        write_site(tmp_path, "acme/blog", {"schedule": "* * * * * *"})  # a schedule change
        wait_for(
            lambda: [r for r in runs(state) if r["site"] == "acme/blog"],
            timeout=20,
            what="the rescheduled site's build",
        )
        (tmp_path / "sites/acme/shop/site.toml").unlink()  # a removed site
        wait_for(lambda: list(d.planned()) == ["acme/blog"], timeout=20, what="the job removed")
        count = len([r for r in runs(state) if r["site"] == "acme/shop"])
        wait_for(
            lambda: len([r for r in runs(state) if r["site"] == "acme/blog"]) >= 3,
            timeout=20,
            what="more builds of the remaining site",
        )
        assert len([r for r in runs(state) if r["site"] == "acme/shop"]) <= count + 1
    assert [e["site"] for e in events(caplog, "job.added")] == ["acme/blog", "acme/shop"]
    assert [e["site"] for e in events(caplog, "job.changed")] == ["acme/blog"]
    assert [e["site"] for e in events(caplog, "job.removed")] == ["acme/shop"]
    assert jobs_in_store(state) == ["acme/blog"]


def test_a_broken_site_is_reported_and_the_others_keep_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="render")
    config = write_host(
        tmp_path,
        sites={
            "acme/good": {"schedule": "* * * * * *"},
            "acme/bad": {"schedule": "* * * * * *"},
        },
    )
    bad = tmp_path / "sites/acme/bad/site.toml"
    bad.write_text(
        '[site]\nbase_url = "https://x.example"\nschedule = "0 3 * *"\ntimezon = "UTC"\n'
    )
    state = tmp_path / "state"
    with daemon(config, reconcile=0.3):
        wait_for(lambda: len(runs(state)) >= 3, timeout=20, what="three builds of the good site")
    assert {r["site"] for r in runs(state)} == {"acme/good"}
    errors = events(caplog, "config.error")
    assert errors == [
        {
            "site": "acme/bad",
            "error": "acme/bad: config: sites/acme/bad/site.toml: unknown key 'site.timezon'"
            " (did you mean 'timezone'?); sites/acme/bad/site.toml: site.schedule:"
            " expected 5 fields (minute hour day month weekday), got 4: '0 3 * *'",
            "note": "site skipped until its site.toml is fixed",
        }
    ]  # fmt: skip  -- reported once, not at every reconciliation


def test_a_site_broken_after_it_was_scheduled_fails_its_builds_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="render")
    config = write_host(tmp_path, sites={"acme/blog": {"schedule": "* * * * * *"}})
    state = tmp_path / "state"
    with daemon(config, reconcile=0.3):
        wait_for(lambda: runs(state), timeout=20, what="a first build")
        (tmp_path / "sites/acme/blog/site.toml").write_text("[site\n")
        wait_for(
            lambda: [e for e in events(caplog, "build.end") if e["outcome"] == "failed"],
            timeout=20,
            what="a failed build",
        )
    failed = [e for e in events(caplog, "build.end") if e["outcome"] == "failed"][0]
    assert str(failed["error"]).startswith(
        "acme/blog: config: sites/acme/blog/site.toml: invalid TOML"
    )


WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("pragma journal_mode=wal")
    for i in range(int(sys.argv[2])):
        db.execute("insert into posts (title) values (?)", (f"post {i}",))
        time.sleep(0.15)
    print(time.time())
    """
)


def test_auto_mode_turns_a_burst_of_writes_into_one_build(tmp_path: Path) -> None:
    config = write_host(
        tmp_path,
        sites={"acme/blog": {"schedule": NEVER, "auto": True}},
        schedule={"poll": 1, "debounce": 2},
    )
    database = tmp_path / "sites/acme/blog/site.db"
    with sqlite3.connect(database) as db:
        db.execute("create table posts (id integer primary key, title text)")
    db.close()
    state = tmp_path / "state"

    def write(count: int) -> float:
        done = subprocess.run(
            [sys.executable, "-c", WRITER, str(database), str(count)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return float(done.stdout)

    def auto_runs() -> list[dict[str, object]]:
        return [r for r in runs(state) if r["reason"] == "auto"]

    with daemon(config):
        burst_end = write(12)  # ~2 s of edits from another process
        first = wait_for(auto_runs, timeout=20, what="the auto build")[0]
        assert first["enter"] >= burst_end + 1.0  # it waited for the edits to go quiet
        quiet_until = time.time() + 4  # debounce + two polls: no second build comes
        wait_for(lambda: time.time() > quiet_until, timeout=10, what="a quiet spell")
        assert len(auto_runs()) == 1
        write(1)  # a later edit is a new build
        wait_for(lambda: len(auto_runs()) == 2, timeout=20, what="the second auto build")
    assert len(auto_runs()) == 2
    assert [r["reason"] for r in runs(state)] == ["auto", "auto"]


def test_next_run_and_running_for_status(tmp_path: Path) -> None:
    config = write_host(
        tmp_path,
        sites={
            "acme/blog": {"schedule": "0 3 * * 0", "timezone": "Europe/Berlin"},
            "acme/shop": {},
        },
        schedule={"jitter": 600, "default": "30 4 * * *"},
    )
    host = load_host(config)
    blog = load_site(tmp_path / "sites/acme/blog", host=host)
    shop = load_site(tmp_path / "sites/acme/shop", host=host)
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday
    when = next_run(blog, host, now=now)
    assert when is not None
    assert str(when.tzinfo) == "Europe/Berlin"  # in the site's own zone
    assert (when.strftime("%a %Y-%m-%d %H"), when.minute < 10) == ("Sun 2026-11-29 03", True)
    assert next_run(blog, host, now=now) == when  # the jitter is stable
    other = next_run(shop, host, now=now)
    assert other is not None and other.astimezone(UTC).strftime("%Y-%m-%d %H") == "2026-11-26 04"
    assert running(host.state_dir, blog.id) is None
    with site_lock(host.state_dir, blog.id, wait=False, reason="force"):
        holder = running(host.state_dir, blog.id)
        assert holder is not None and (holder.pid, holder.reason) == (os.getpid(), "force")
    assert running(host.state_dir, blog.id) is None


# --- the real command, in its own process ----------------------------------------


def start_cli(
    config: Path, runner: str, *, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    code = "import sys; from render.cli import main; sys.exit(main())"
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "scheduler",
            "--config",
            str(config),
            "--log-format",
            "json",
            "--runner",
            runner,
        ],
        env={**os.environ, "PYTHONPATH": str(TESTS), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_cli(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> list[dict[str, object]]:
    """Signal the daemon, wait for it, check it exits 0; return its JSON log lines."""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in err.splitlines()]


def test_forced_and_scheduled_builds_never_overlap(tmp_path: Path) -> None:
    config = write_host(
        tmp_path, sites={"acme/blog": {"schedule": "* * * * * *"}}, schedule={"workers": 1}
    )
    state = tmp_path / "state"
    env = {"SCHEDKIT_HOLD": "0.3"}
    proc = start_cli(config, "schedkit:record_runner", env=env)
    try:
        wait_for(
            lambda: runs(state) or proc.poll() is not None, timeout=30, what="a scheduled build"
        )
        force = subprocess.run(
            [sys.executable, str(TESTS / "schedkit.py"), "force", str(config), "acme/blog", "6"],
            env={**os.environ, **env, "PYTHONPATH": str(TESTS)},
            timeout=60,
        )
        assert force.returncode == 0
        # a second daemon on the same state folder refuses to start
        second = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from render.cli import main; sys.exit(main())",
                "scheduler",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stderr.startswith(
            f"Error: lock: a scheduler is already running: pid {proc.pid} on "
        )
    finally:
        lines = stop_cli(proc)
    entries = sorted(runs(state), key=lambda r: r["enter"])
    assert {r["reason"] for r in entries} == {"schedule", "force"}
    assert sum(r["reason"] == "force" for r in entries) == 6
    for before, after in zip(entries, entries[1:], strict=False):
        assert before["exit"] <= after["enter"], (before, after)
    names = [line["event"] for line in lines]
    assert names[0] == "job.added" and "daemon.start" in names and names[-1] == "daemon.stop"
    end = next(line for line in lines if line["event"] == "build.end")
    assert set(end) >= {"time", "level", "site", "reason", "outcome", "seconds"}
    assert (end["site"], end["reason"], end["outcome"]) == ("acme/blog", "schedule", "published")


def test_sigterm_mid_publish_keeps_one_whole_version_live(tmp_path: Path) -> None:
    config = write_host(
        tmp_path, sites={"acme/blog": {"schedule": "* * * * * *"}}, schedule={"workers": 1}
    )
    host = load_host(config)
    store = LocalStore(host.store_path)
    objects = tmp_path / "v1-objects"
    first = publish_tree(
        version_files(objects, "v1", 40),
        objects,
        owner="acme",
        name="blog",
        base_url="https://blog.example",
        store=store,
        ledger=None,
    )

    def live() -> tuple[str, set[bytes]]:
        """The live version and the bytes a reader gets by following root -> tree -> blobs."""
        root, _ = read_root(store, owner="acme", name="blog")
        assert root is not None
        tree = read_tree(store, owner="acme", name="blog", version=root.version)
        blobs = StoredBlobs(store, owner="acme", name="blog", tree=tree)
        bodies = set()
        for entry in tree.files.values():
            data = blobs.read(entry.hash)  # a range of a pack, checked against the hash
            assert data is not None, f"{root.version} names a missing blob"
            bodies.add(data)
        assert len(bodies) == 40
        return root.version, bodies

    marker = host.state_dir / "publishing"
    proc = start_cli(config, "schedkit:publish_runner")
    wait_for(lambda: marker.exists() or proc.poll() is not None, timeout=30, what="a publish")
    lines = stop_cli(proc)  # SIGTERM while blobs are still uploading
    version, bodies = live()
    assert version == first.version  # abandoned before the root switch: the old version, whole
    assert all(b"v1 page" in body for body in bodies)
    end = next(line for line in lines if line["event"] == "build.end")
    assert end["outcome"] == "abandoned"
    names = [line["event"] for line in lines]
    assert "daemon.stopping" in names
    assert names[-2:] == ["build.deferred", "daemon.stop"]

    # the next start runs the abandoned nightly as a catch-up and publishes it whole
    marker.unlink()
    proc = start_cli(config, "schedkit:publish_runner", env={"SCHEDKIT_DELAY": "0"})

    def published() -> bool:
        root, _ = read_root(store, owner="acme", name="blog")
        return root is not None and root.version != first.version

    wait_for(
        lambda: published() or proc.poll() is not None, timeout=30, what="the catch-up publish"
    )
    lines = stop_cli(proc, signal.SIGINT)
    version, bodies = live()
    assert version != first.version
    assert len({body.split(b" page")[0] for body in bodies}) == 1  # one whole version
    assert next(line for line in lines if line["event"] == "build.start")["reason"] == "catch-up"
