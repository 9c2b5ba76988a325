"""Builds on Celery workers: a real redis-server and real ``render worker`` processes.

Each worker is a machine of its own (its own render.toml and state folder);
the sites folder and the store (a local folder) are shared, as an NFS mount
and a bucket would be. The enqueuing host has a state folder of its own too,
so its ledger holds only what came back as results.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from celerykit import redis_server, small_site, worker, write_config, write_sites
from click.testing import CliRunner

from render.config import load_host

pytestmark = pytest.mark.timeout(240)


def _layout(tmp_path: Path, url: str, *, schedule: dict[str, object] | None = None) -> dict[str, Path]:
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
    db = sqlite3.connect(state / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("select * from runs order by id").fetchall()
    finally:
        db.close()


def _ledger_file(state: Path) -> Path:
    return next(state.glob("ledger*"))


def test_nightly_on_two_workers_publishes_every_site_once(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        paths = _layout(tmp_path, redis.url)
        keys = [f"t{i % 4}/site{i:02d}" for i in range(20)]
        write_sites(paths["sites"], {key: small_site(3, word=key.replace("/", "-")) for key in keys})
        env = {"RENDER_BROKER_URL": redis.url}  # the workers' config names no broker: the env does
        with worker(paths["w1"], name="w1", broker=redis.url, env=env), \
                worker(paths["w2"], name="w2", broker=redis.url, env=env):  # fmt: skip
            from render.cli import main

            result = CliRunner().invoke(
                main, ["nightly", "--executor", "celery", "--config", str(paths["main"])],
                catch_exceptions=False,
            )  # fmt: skip
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
