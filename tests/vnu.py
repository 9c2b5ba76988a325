"""The Nu HTML Checker (vnu-jar from npm, run with Java) as a test helper.

``run_vnu(paths)`` checks HTML files in one Java run and returns vnu's messages
as dicts (``type`` is "error", "info" (``subType`` "warning" for warnings) or
"non-document-error"; ``url`` names the file; ``message``, ``lastLine`` and
``extract`` say what and where). ``require_vnu()`` skips when Java or the jar is
missing, except under CI=true where that is a failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conftest import require

ROOT = Path(__file__).resolve().parent.parent
VNU_JAR = ROOT / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"


def require_vnu() -> None:
    require(shutil.which("java") is not None, "java is not installed (make setup)")
    require(VNU_JAR.is_file(), f"{VNU_JAR.relative_to(ROOT)} is missing (npm install)")


def run_vnu(paths: Sequence[Path], *, timeout: float = 240) -> list[dict[str, Any]]:
    """vnu's messages for ``paths`` (HTML files or folders of them), in vnu's order."""
    if not paths:
        return []
    command = [
        "java",
        "-Xss4m",
        "-jar",
        str(VNU_JAR),
        "--format",
        "json",
        "--stdout",
        "--exit-zero-always",
        "--skip-non-html",
        *(str(p) for p in paths),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise AssertionError(f"vnu failed (exit {done.returncode}): {done.stderr.strip()[:2000]}")
    messages: list[dict[str, Any]] = json.loads(done.stdout)["messages"]
    return messages


def errors(messages: Sequence[dict[str, Any]]) -> list[str]:
    """Errors as ``file:line: message`` lines, for readable assertion failures."""
    return [
        f"{Path(m.get('url', '')).name}:{m.get('lastLine', '?')}: {m.get('message', '')}"
        for m in messages
        if m.get("type") in ("error", "non-document-error")
    ]
