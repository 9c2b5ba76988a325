"""A night of 20 sites: the local pool against two Celery workers on this same machine.

    .venv/bin/python bench/distribute.py [--sites 20] [--pages 1000]

Both nights use the same two cores: the local night builds the sites one
after another with two render processes each ([limits] workers = 2); the
Celery night has two workers of one build at a time, each build with one
render process. The figure is overhead, not speed-up: the Celery night
overlaps two builds' serial stages (snapshot, SEO, publish), so its wall
time is shorter, and the overhead that counts is the task's: each worker
slot's busy time less the builds' own seconds, per site, against the
builds' seconds ("task_overhead_pct_of_build"; the goal is under 5 %). Its
parts: the record carried to and from the store, the rest of the task
around ``run_site`` (lock, config), the gap between a slot's tasks
(Celery's dispatch, ack and result) and the head and tail of the night
(the first task's start, a slot idle while the other finishes its last).

Then the next night: one row of every site changed, built again by both
(the usual night: a build that renders one page). Prints one JSON line.
A redis-server and the workers are started and stopped here, on loopback.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from celerykit import redis_server, small_site, worker, write_config, write_sites  # noqa: E402

from render.config import HostConfig, load_host, load_site  # noqa: E402
from render.distribute import enqueue  # noqa: E402
from render.pipeline import Options, run_site  # noqa: E402


def _local_night(host: HostConfig, keys: list[str], *, force: bool) -> float:
    started = time.perf_counter()
    for key in keys:
        site = load_site(host.sites_dir / key, host=host)
        run_site(site, host=host, reason="bench", options=Options(force=force))
    return time.perf_counter() - started


def _celery_night(
    host: HostConfig, keys: list[str]
) -> tuple[float, float, list[enqueue.RemoteRun]]:
    started_at = time.time()
    started = time.perf_counter()
    runs = enqueue.run_sites(host, keys, reason="bench")
    return time.perf_counter() - started, started_at, runs


def _figures(
    wall: float, local: float, started_at: float, runs: list[enqueue.RemoteRun]
) -> dict[str, Any]:
    """The night's overhead, and where a slot's time went besides the builds (per site)."""
    n = len(runs)
    # run_site whole, its own site lock and ledger too: the local night pays those as well
    built = sum(r.summary["run_seconds"] for r in runs)
    per_site = (wall * 2 - built) / n
    tasks = sum(r.summary["task_seconds"] for r in runs)
    carry = sum(r.summary["carry_seconds"] for r in runs)
    slots: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        slots.setdefault(r.worker, []).append((r.summary["began"], r.summary["ended"]))
    between = 0.0  # a slot's gap from one task's end to its next task's start
    head = 0.0  # enqueue to each slot's first task
    tail = 0.0  # each slot's last task to the night's end (the other slot still busy, results)
    for spans in slots.values():
        spans.sort()
        head += spans[0][0] - started_at
        between += sum(b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False))
        tail += started_at + wall - spans[-1][1]
    return {
        "local_night_s": round(local, 2),
        "celery_night_s": round(wall, 2),
        "overhead_pct": round(100 * (wall - local) / local, 1),
        "task_overhead_per_site_s": round(per_site, 3),
        "task_overhead_pct_of_build": round(100 * per_site * n / built, 1),
        # inside the task, around run_site: the record carried to and from the store
        "record_carry_per_site_s": round(carry / n, 3),
        "task_less_build_per_site_s": round((tasks - built) / n, 3),
        # the rest: Celery's dispatch, the queue's tail on two slots, result round trips
        "celery_per_site_s": round(per_site - (tasks - built) / n, 3),
        "between_tasks_per_site_s": round(between / n, 3),
        "head_and_tail_per_site_s": round((head + tail) / n, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--pages", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="render-bench-celery-") as tmp:
        root = Path(tmp)
        keys = [f"bench/s{i:02d}" for i in range(args.sites)]
        specs = {key: small_site(args.pages - 1, word=key[6:]) for key in keys}
        with redis_server(root) as redis:
            # the local night: its own sites, store and state
            local_sites = root / "local-sites"
            write_sites(local_sites, specs)
            local = write_config(
                root / "local",
                sites=local_sites,
                store=root / "local-store",
                broker=redis.url,
                schedule={"executor": "local"},
            )
            local.write_text(local.read_text().replace("workers = 1", "workers = 2"))
            local_host = load_host(local)
            local_wall = _local_night(local_host, keys, force=True)

            # the Celery night: shared sites and store, two workers with states of their own
            sites, store = root / "sites", root / "store"
            write_sites(sites, specs)
            main_host = load_host(
                write_config(root / "main", sites=sites, store=store, broker=redis.url)
            )
            configs = [
                write_config(root / f"w{i}", sites=sites, store=store, broker=redis.url)
                for i in (1, 2)
            ]
            with (
                worker(configs[0], name="w1", broker=redis.url),
                worker(configs[1], name="w2", broker=redis.url),
            ):
                celery_wall, started_at, runs = _celery_night(main_host, keys)
                first = _figures(celery_wall, local_wall, started_at, runs)
                # the next night: one row of every site changed, the usual night
                for folder in (local_sites, sites):
                    for key in keys:
                        _change_one_row(folder / key / "site.db")
                local_again = _local_night(local_host, keys, force=False)
                again_wall, again_at, again = _celery_night(main_host, keys)
                second = _figures(again_wall, local_again, again_at, again)
        runs = runs + again
        failed = [r.site for r in runs if r.error is not None]
        print(
            json.dumps(
                {
                    "sites": len(keys),
                    "pages_per_site": args.pages,
                    **first,
                    "next_night": {
                        **second,
                        "rendered_per_site": sum(r.rendered for r in again) / len(keys),
                    },
                    "failed": failed,
                }
            )
        )
    return 1 if failed else 0


def _change_one_row(database: Path) -> None:
    db = sqlite3.connect(database)
    with db:
        db.execute("update posts set body = body || ' (edited)' where id = 7")
    db.close()


if __name__ == "__main__":
    sys.exit(main())
