"""``render dashboard`` for 100 sites with 90 builds each: prints one JSON line.

    .venv/bin/python bench/dashboard.py [--sites 100] [--builds 90] [--workers N]

The history is written through the ledger's own API (tests/reportkit.py: per
build, timings, SEO findings, three audited pages, a new version), into a
fresh host under a temporary folder; its writing is not timed. Then the
report document is read alone once (``document_s``), and the whole dashboard
is written (``dashboard_s``: the document again, data.json, the CSVs, the
overview and every site page with its five pygal charts), three times; the
median is the figure. The issue's bound is 10 s on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from reportkit import add_history  # noqa: E402

from render.config import load_host  # noqa: E402
from render.report.dashboard import write_dashboard  # noqa: E402
from render.report.document import document  # noqa: E402
from render.run.ledger import open_ledger  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--builds", type=int, default=90)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="render-bench-dash-") as tmp:
        root = Path(tmp)
        (root / "render.toml").write_text("")
        (root / "sites").mkdir()
        host = load_host(root / "render.toml")
        started = time.perf_counter()
        with open_ledger(host.state_dir) as ledger:
            for i in range(args.sites):
                add_history(
                    ledger, f"owner{i // 10:02d}", f"site{i:03d}", builds=args.builds, seed=i
                )
        history_s = time.perf_counter() - started
        with open_ledger(host.state_dir) as ledger:
            mark = time.perf_counter()
            doc = document(ledger)
            document_s = time.perf_counter() - mark
        rounds = []
        cpu = []
        for _ in range(args.rounds):
            mark, cpu_mark = time.perf_counter(), _cpu()
            written = write_dashboard(host, root / "dashboard", workers=args.workers)
            rounds.append(time.perf_counter() - mark)
            cpu.append(_cpu() - cpu_mark)
        size = sum(p.stat().st_size for p in (root / "dashboard").rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "sites": len(doc["sites"]),
                "builds_per_site": args.builds,
                "workers": args.workers
                if args.workers is not None
                else min(os.cpu_count() or 1, 4),
                "history_write_s": round(history_s, 2),
                "document_s": round(document_s, 3),
                "dashboard_s": round(statistics.median(rounds), 2),
                "dashboard_rounds_s": [round(r, 2) for r in rounds],
                "cpu_s": round(statistics.median(cpu), 2),
                "files": written.files,
                "bytes": size,
                "limit_s": 10.0,
            }
        )
    )


def _cpu() -> float:
    self_ = os.times()
    return self_.user + self_.system + self_.children_user + self_.children_system


if __name__ == "__main__":
    main()
