"""Rewrite tests/golden/demo.json from a fresh build of the demo site.

    .venv/bin/python tests/golden/make.py

Run it when a change to render or to the demo site is meant to change the
demo's bytes, and say why in the commit.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_golden import GOLDEN, golden_tree  # noqa: E402

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        tree = golden_tree(Path(tmp))
    GOLDEN.write_text(json.dumps(tree, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}: {len(tree)} files")
