"""Builds on Celery workers: a real redis-server and real ``render worker`` processes.

Each worker is a machine of its own (its own render.toml and state folder);
the sites folder and the store (a local folder) are shared, as an NFS mount
and a bucket would be. The enqueuing host has a state folder of its own too,
so its ledger holds only what came back as results.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from celerykit import _wait, redis_server, small_site, worker, write_config, write_sites
from click.testing import CliRunner

from render.config import load_host, load_site
from render.distribute import broker, enqueue
from render.run import locks

pytestmark = pytest.mark.timeout(240)


def _layout(
    tmp_path: Path, url: str, *, schedule: dict[str, object] | None = None
) -> dict[str, Path]:
    sites, store = tmp_path / "sites", tmp_path / "store"
    sites.mkdir()
    store.mkdir()
    extra = {"lock_lease": 2, **(schedule or {})}
    return {
        "sites": sites,
        "store": store,
        "main": write_config(tmp_path / "main", sites=sites, store=store, broker=url),
        "w1": write_config(tmp_path / "w1", sites=sites, store=store, broker=None, schedule=extra),
        "w2": write_config(tmp_path / "w2", sites=sites, store=store, broker=None, schedule=extra),
    }


def _versions(store: Path, key: str) -> list[str]:
    folder = store / "sites" / key / "versions"
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []


def _runs(state: Path) -> list[sqlite3.Row]:
    """The runs in a ledger; none while it is still being created."""
    if not (state / "ledger.sqlite").exists():
        return []
    db = sqlite3.connect(state / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("select * from runs order by id").fetchall()
    except sqlite3.OperationalError:  # the table is not there yet
        return []
    finally:
        db.close()


def test_nightly_on_two_workers_publishes_every_site_once(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        keys = [f"t{i % 4}/site{i:02d}" for i in range(20)]
        write_sites(
            paths["sites"], {key: small_site(3, word=key.replace("/", "-")) for key in keys}
        )
        env = {"RENDER_BROKER_URL": redis.url}  # the workers' config names no broker: the env does
        with (
            worker(paths["w1"], name="w1", broker=redis.url, env=env),
            worker(paths["w2"], name="w2", broker=redis.url, env=env),
        ):
            from render.cli import main

            result = CliRunner().invoke(
                main,
                ["nightly", "--executor", "celery", "--config", str(paths["main"])],
                catch_exceptions=False,
            )
        assert result.exit_code == 0, result.output
        assert "20 sites on Celery workers, 0 failed" in result.output
        assert redis.url not in result.output
        for key in keys:
            assert len(_versions(paths["store"], key)) == 1, key
        host = load_host(paths["main"])
        runs = _runs(host.state_dir)
        assert sorted(f"{r['owner']}/{r['site']}" for r in runs) == sorted(keys)
        assert {r["outcome"] for r in runs} == {"published"}
        assert all(r["pages"] == 4 and r["version"] for r in runs)
        from render.run.ledger import open_ledger

        with open_ledger(host.state_dir) as ledger:
            for key in keys:
                owner, _, name = key.partition("/")
                assert ledger.live_version(owner, name) == _versions(paths["store"], key)[0][:-5]
        # both machines took builds, and each kept its own ledger as a local cache
        worked = [len(_runs(load_host(paths[w]).state_dir)) for w in ("w1", "w2")]
        assert sum(worked) == 20 and min(worked) > 0, worked


def _root_version(store: Path, key: str) -> str:
    return str(json.loads((store / "sites" / key / "root.json").read_text())["version"])


def test_a_worker_killed_mid_build_hands_the_build_back_and_it_publishes_once(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        key = "acme/big"
        # big enough that the build is still rendering when its pool process is killed
        write_sites(paths["sites"], {key: small_site(3000, word="big")})
        env = {"RENDER_BROKER_URL": redis.url}
        host = load_host(paths["main"])
        app = broker.make_app(host)
        try:
            with (
                worker(paths["w1"], name="w1", broker=redis.url, env=env) as w1,
                worker(paths["w2"], name="w2", broker=redis.url, env=env) as w2,
            ):
                result = enqueue.submit(app, key, reason="nightly")
                site = load_site(paths["sites"] / key, host=host)
                states = {w.name: load_host(w.config).state_dir for w in (w1, w2)}

                def building() -> tuple[str, int] | None:
                    for name, state in states.items():
                        holder = locks.running(state, site.id)
                        started = any(r["finished"] is None for r in _runs(state))
                        if holder is not None and started:
                            return name, holder.pid
                    return None

                victim, pid = _wait(building, timeout=60, what="a worker building the site")
                os.kill(pid, signal.SIGKILL)  # the pool process running the build
                run = enqueue.collect(result, key=key, reason="nightly", timeout=180)
            assert run.error is None, run.error
            assert run.outcome is not None and run.outcome.value == "published"
            # the killed build never finished; the redelivered one did
            killed = [r for r in _runs(states[victim]) if r["id"] == 1]
            assert killed and killed[0]["finished"] is None
            finished = [r for s in states.values() for r in _runs(s) if r["finished"] is not None]
            assert [r["outcome"] for r in finished] == ["published"]
            # one version, and it is the live one: nothing half-made is live
            assert _versions(paths["store"], key) == [f"{run.version}.json"]
            assert _root_version(paths["store"], key) == run.version
        finally:
            app.close()


def test_two_enqueues_of_one_site_at_once_publish_once(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        key = "acme/blog"
        write_sites(paths["sites"], {key: small_site(400, word="blog")})
        env = {"RENDER_BROKER_URL": redis.url}
        host = load_host(paths["main"])
        app = broker.make_app(host)
        try:
            with (
                worker(paths["w1"], name="w1", broker=redis.url, env=env),
                worker(paths["w2"], name="w2", broker=redis.url, env=env),
            ):
                first = enqueue.submit(app, key, reason="nightly")
                second = enqueue.submit(app, key, reason="nightly")
                runs = [
                    enqueue.collect(r, key=key, reason="nightly", timeout=120)
                    for r in (first, second)
                ]
        finally:
            app.close()
        assert all(r.error is None for r in runs), [r.error for r in runs]
        # two machines with state folders of their own: only the lock in Redis kept them apart
        outcomes = sorted(r.outcome.value for r in runs if r.outcome is not None)
        assert outcomes == ["published", "unchanged"]
        assert len(_versions(paths["store"], key)) == 1


def test_the_site_lock_in_redis_waits_expires_and_says_when_it_is_lost(tmp_path: Path) -> None:
    import redis as redispy

    from render.config import SiteId
    from render.distribute import sitelock
    from render.errors import LockedError

    site = SiteId(owner="acme", name="blog")
    with redis_server(tmp_path) as server:
        client = redispy.Redis.from_url(server.url)
        try:
            with sitelock.hold(client, site, lease=2, wait=0) as held:
                assert not held.lost()
                with (
                    pytest.raises(LockedError, match="another worker holds this site's lock"),
                    sitelock.hold(client, site, lease=2, wait=0.3),
                ):
                    pass
                client.delete(sitelock.key(site))  # as if the lease ran out while stalled
                _wait(held.lost, timeout=10, what="the lease to be reported lost")
            # a holder that never releases (its machine died): free a lease later
            orphan = client.lock(sitelock.key(site), timeout=1)
            assert orphan.acquire(blocking=False)
            with sitelock.hold(client, site, lease=2, wait=10) as again:
                assert not again.lost()
        finally:
            client.close()


def _set_body(sites: Path, key: str, row: int, body: str) -> None:
    db = sqlite3.connect(sites / key / "site.db")
    with db:
        db.execute("update posts set body = ? where id = ?", (body, row))
    db.close()


def _build_on(
    app: object, paths: dict[str, Path], name: str, url: str, key: str
) -> enqueue.RemoteRun:
    """One build of ``key`` with only worker ``name`` running."""
    with worker(paths[name], name=name, broker=url, env={"RENDER_BROKER_URL": url}):
        return enqueue.collect(
            enqueue.submit(app, key, reason="nightly"),  # type: ignore[arg-type]
            key=key,
            reason="nightly",
            timeout=120,
        )


def test_a_worker_with_empty_state_restores_the_record_and_builds_incrementally(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        key = "acme/blog"
        write_sites(paths["sites"], {key: small_site(50, word="blog")})
        host = load_host(paths["main"])
        private = paths["store"] / "sites" / key / "private"
        app = broker.make_app(host)
        try:
            first = _build_on(app, paths, "w1", redis.url, key)
            assert first.outcome is not None and first.rendered == 51, first
            assert (private / "build-record").is_file()
            packs_after_first = set((private / "record").iterdir())
            _set_body(paths["sites"], key, 7, "changed")
            assert not (paths["w2"].parent / ".render").exists()
            second = _build_on(app, paths, "w2", redis.url, key)
            assert second.error is None, second.error
            restored = second.summary["restored"]
            assert (restored["pages"], restored["blobs"], restored["missing"]) == (51, 51, 0)
            assert second.outcome is not None and second.outcome.value == "published"
            assert (second.pages, second.rendered, second.reused) == (51, 1, 50)
            # one page rendered: one group of page records put in the store, not the record
            (new_pack,) = set((private / "record").iterdir()) - packs_after_first
            stored = json.loads((private / "build-record").read_bytes().partition(b"\n")[0])
            assert len(stored["packs"][new_pack.name[: -len(".pack")]]) == 1

            # back on w1, whose own record is older than the store's: it takes the store's
            # (one group fetched) and renders only the page changed since w2's build
            _set_body(paths["sites"], key, 9, "changed too")
            third = _build_on(app, paths, "w1", redis.url, key)
            assert third.error is None, third.error
            assert third.summary["restored"]["groups"] == 1
            assert (third.rendered, third.reused) == (1, 50)

            # w2 now holds a stale record and a stale ledger; the database goes back to
            # what w2 last built from. That is not the live version: w2 must build it
            _set_body(paths["sites"], key, 9, "body 9")
            fourth = _build_on(app, paths, "w2", redis.url, key)
            assert fourth.error is None, fourth.error
            assert fourth.outcome is not None and fourth.outcome.value == "published"
            assert (fourth.rendered, fourth.reused) == (1, 50)
            assert _root_version(paths["store"], key) == fourth.version
        finally:
            app.close()
        # the record is never served: no manifest names it
        for version in _versions(paths["store"], key):
            text = (paths["store"] / "sites" / key / "versions" / version).read_text()
            assert "build-record" not in text and "private" not in text


def test_plan_estimates_workers_from_the_ledger(tmp_path: Path) -> None:
    from sitekit import make_host

    host = make_host(
        tmp_path,
        sites={f"acme/s{i}": small_site(20, word=f"s{i}") for i in range(2)},
        extra_toml="[mirror]\nenabled = false\n",
    )
    empty = host.cli("plan", "--sites", "10")
    assert empty.exit_code == 2
    assert empty.output == (
        "Error: the ledger has no finished build to measure\n"
        "Hint: run 'render nightly' once first\n"
    )
    assert host.cli("nightly").exit_code == 0
    result = host.cli(
        "plan",
        "--sites",
        "10000",
        "--pages",
        "1000",
        "--audits",
        "5",
        "--audit-seconds",
        "4",
        "--window",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert "one site: 1000 pages, 5 audits (from 2 builds)" in result.output
    from render.distribute.capacity import plan
    from render.run.ledger import open_ledger

    with open_ledger(host.state_dir) as ledger:
        found = plan(ledger, sites=10000, pages=1000, audits=5, audit_seconds=4, window_hours=4)
    assert found is not None
    assert found.stage_seconds["lighthouse"] == 20.0
    # 10,000 sites at 20 s of audits alone is 55.6 hours: at least 14 workers for 4 hours
    assert found.workers >= 14
    assert f"{found.workers} workers of this size" in result.output


def test_the_night_finishes_when_redis_restarts_in_the_middle(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        keys = [f"acme/s{i}" for i in range(8)]
        write_sites(paths["sites"], {key: small_site(300, word=key[5:]) for key in keys})
        env = {"RENDER_BROKER_URL": redis.url}
        host = load_host(paths["main"])
        restarted: list[str] = []

        def restart_once(run: enqueue.RemoteRun) -> None:
            if not restarted:  # the first result is in; the other builds are queued or running
                redis.stop()
                redis.start()  # same port; the append-only file brings the queue back
                restarted.append(run.site)

        with (
            worker(paths["w1"], name="w1", broker=redis.url, env=env),
            worker(paths["w2"], name="w2", broker=redis.url, env=env),
        ):
            runs = enqueue.run_sites(host, keys, reason="nightly", on_done=restart_once)
        assert restarted
        assert [r.error for r in runs] == [None] * len(keys)
        for key in keys:
            assert len(_versions(paths["store"], key)) == 1, key
        outcomes = sorted(
            (f"{r['owner']}/{r['site']}", r["outcome"]) for r in _runs(host.state_dir)
        )
        assert outcomes == [(key, "published") for key in sorted(keys)]


def test_the_scheduler_daemon_enqueues_under_the_celery_executor(tmp_path: Path) -> None:
    from render.scheduler import Daemon, Reason

    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        write_sites(paths["sites"], {"acme/blog": small_site(3, word="blog")})
        env = {"RENDER_BROKER_URL": redis.url}
        host = load_host(paths["main"])
        with worker(paths["w1"], name="w1", broker=redis.url, env=env):
            Daemon(host, handle_signals=False).build("acme/blog", Reason.schedule)
        (run,) = _runs(host.state_dir)
        assert (run["reason"], run["outcome"], run["pages"]) == ("schedule", "published", 4)
        assert len(_versions(paths["store"], "acme/blog")) == 1


def test_the_broker_url_is_a_secret_and_a_missing_broker_is_one_error(tmp_path: Path) -> None:
    from celerykit import free_port

    port = free_port()  # nothing listens here
    sites, store = tmp_path / "sites", tmp_path / "store"
    write_sites(sites, {"acme/blog": small_site(1, word="blog")})
    config = write_config(
        tmp_path / "main", sites=sites, store=store, broker=f"redis://:hunter2@127.0.0.1:{port}/0"
    )
    host = load_host(config)
    assert "hunter2" not in repr(host)
    assert broker.broker_url(host).reveal().endswith(f"{port}/0")
    assert "hunter2" not in repr(broker.broker_url(host))
    from render.cli import main

    result = CliRunner().invoke(main, ["nightly", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: queue: the broker did not answer: Error 111 connecting to 127.0.0.1:{port}."
        " Connection refused.\n"
        "Hint: is redis-server running at [schedule] broker_url (or $RENDER_BROKER_URL)?\n"
    )
    assert "hunter2" not in result.output
    # no broker at all: the config names what to set
    write_config(tmp_path / "bare", sites=sites, store=store, broker=None)
    bare = CliRunner().invoke(
        main,
        ["nightly", "--config", str(tmp_path / "bare" / "render.toml")],
        catch_exceptions=False,
    )
    assert bare.exit_code == 2
    assert bare.output == (
        "Error: config: schedule.broker_url: required when the executor is 'celery'\n"
        "Hint: set [schedule] broker_url in render.toml or $RENDER_BROKER_URL\n"
    )


def _wait_alive(url: str, names: tuple[str, ...]) -> None:
    """Until every worker in ``names`` has said, in Redis, that it takes builds."""
    import redis as redispy

    from render.distribute import affinity

    client = redispy.Redis.from_url(url)
    try:
        _wait(
            lambda: {n.split("@")[0] for n in affinity.slots(client)} == set(names),
            timeout=30,
            what=f"heartbeats of {names}",
        )
    finally:
        client.close()


def test_a_night_sends_each_site_to_the_worker_that_built_it_and_past_a_stopped_one(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        mine = {"w1": ["acme/a1", "acme/a2"], "w2": ["acme/b1", "acme/b2"]}
        keys = [key for group in mine.values() for key in group]
        write_sites(paths["sites"], {key: small_site(60, word=key[5:]) for key in keys})
        env = {"RENDER_BROKER_URL": redis.url}
        host = load_host(paths["main"])
        # the first builds: each worker alone builds its two sites
        for name, group in mine.items():
            with worker(paths[name], name=name, broker=redis.url, env=env):
                first = enqueue.run_sites(host, group, reason="nightly")
            assert [r.summary["node"].split("@")[0] for r in first] == [name, name]

        def night(*running: str) -> dict[str, enqueue.RemoteRun]:
            for key in keys:
                _set_body(paths["sites"], key, 3, f"edit {len(_runs(host.state_dir))}")
            with contextlib.ExitStack() as stack:
                for name in running:
                    stack.enter_context(
                        worker(paths[name], name=name, broker=redis.url, env=env, concurrency=2)
                    )
                _wait_alive(redis.url, running)
                runs = enqueue.run_sites(host, keys, reason="nightly")
            return {r.site: r for r in runs}

        # both free: every site goes back to the worker holding its record
        second = night("w1", "w2")
        for name, group in mine.items():
            for key in group:
                run = second[key]
                assert run.error is None, run.error
                assert run.summary["node"].split("@")[0] == name, (key, run.summary["node"])
                assert run.summary["restored"] is None  # nothing fetched: its own record
                assert (run.rendered, run.reused) == (1, 60)

        # w1 stopped: its sites go to w2, which restores their records and builds them
        third = night("w2")
        for key in keys:
            run = third[key]
            assert run.error is None, run.error
            assert run.outcome is not None and run.outcome.value == "published"
            assert run.summary["node"].split("@")[0] == "w2"
            assert (run.rendered, run.reused) == (1, 60)
        assert all(third[key].summary["restored"] is not None for key in mine["w1"])
        assert all(third[key].summary["restored"] is None for key in mine["w2"])
        for key in keys:
            assert _root_version(paths["store"], key) == third[key].version
