"""Screenshot a written dashboard in Debian's Chromium (JavaScript off), for the README.

    render init --demo demo && cd demo && render nightly && render dashboard
    .venv/bin/python scripts/screenshot_dashboard.py demo/.render/dashboard docs/dashboard.png

Takes the first site's page (``--overview`` for the list of sites).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("RENDER_CHROMIUM", "/usr/bin/chromium")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--overview", action="store_true")
    parser.add_argument("--height", type=int, default=1100)
    args = parser.parse_args()
    folder = args.folder.resolve()
    page_path = folder / "index.html"
    if not args.overview:
        page_path = sorted((folder / "sites").glob("*/*/index.html"))[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new"])
        try:
            context = browser.new_context(
                java_script_enabled=False, viewport={"width": 1280, "height": args.height}
            )
            page = context.new_page()
            page.goto(page_path.as_uri())
            page.screenshot(path=str(args.png))
        finally:
            browser.close()


if __name__ == "__main__":
    main()
