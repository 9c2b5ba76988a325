"""A night of 20 sites: the local pool against two Celery workers on this same machine.

    .venv/bin/python bench/distribute.py [--sites 20] [--pages 1000]

Both nights use the same two cores: the local night builds the sites one
after another with two render processes each ([limits] workers = 2); the
Celery night has two workers of one build at a time, each build with one
render process. The figure is overhead, not speed-up. Prints one JSON line:
the two wall times, the relative overhead, and the task overhead per site
(each worker slot's busy time less the builds' own seconds, per site).
A redis-server and the workers are started and stopped here, on loopback.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from celerykit import redis_server, small_site, worker, write_config, write_sites  # noqa: E402

from render.config import load_host, load_site  # noqa: E402
from render.distribute import enqueue  # noqa: E402
from render.pipeline import Options, run_site  # noqa: E402


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
            local_text = local.read_text().replace("workers = 1", "workers = 2")
            local.write_text(local_text)
            host = load_host(local)
            started = time.perf_counter()
            for key in keys:
                site = load_site(host.sites_dir / key, host=host)
                run_site(site, host=host, reason="bench", options=Options(force=True))
            local_wall = time.perf_counter() - started

            # the Celery night: shared sites and store, two workers with states of their own
            sites, store = root / "sites", root / "store"
            write_sites(sites, specs)
            main_cfg = write_config(root / "main", sites=sites, store=store, broker=redis.url)
            configs = [
                write_config(root / f"w{i}", sites=sites, store=store, broker=redis.url)
                for i in (1, 2)
            ]
            with (
                worker(configs[0], name="w1", broker=redis.url),
                worker(configs[1], name="w2", broker=redis.url),
            ):
                started = time.perf_counter()
                runs = enqueue.run_sites(load_host(main_cfg), keys, reason="bench")
                celery_wall = time.perf_counter() - started
        failed = [r.site for r in runs if r.error is not None]
        built = sum(r.seconds for r in runs)
        per_site = (celery_wall * 2 - built) / len(keys)
        tasks = sum(r.summary["task_seconds"] for r in runs)
        carry = sum(r.summary["carry_seconds"] for r in runs)
        print(
            json.dumps(
                {
                    "sites": len(keys),
                    "pages_per_site": args.pages,
                    "local_night_s": round(local_wall, 2),
                    "celery_night_s": round(celery_wall, 2),
                    "overhead_pct": round(100 * (celery_wall - local_wall) / local_wall, 1),
                    "task_overhead_per_site_s": round(per_site, 3),
                    "task_overhead_pct_of_build": round(100 * per_site * len(keys) / built, 1),
                    # inside the task, around run_site: the record carried to and from the store
                    "record_carry_per_site_s": round(carry / len(keys), 3),
                    "task_less_build_per_site_s": round((tasks - built) / len(keys), 3),
                    # the rest: Celery's dispatch, the queue's tail on two slots, result round trips
                    "celery_per_site_s": round(per_site - (tasks - built) / len(keys), 3),
                    "failed": failed,
                }
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
