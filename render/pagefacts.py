"""Per-page SEO work done in the render worker while the page is in memory.

Placeholder until the SEO stage lands: returns the page unchanged and no facts.
"""

from __future__ import annotations

from typing import Any


def finish_page(html: str, *, url: str, canonical: str, lang: str) -> tuple[str, dict[str, Any]]:
    return html, {}
