"""The no-JavaScript read: what a crawler that runs no scripts misses.

Each sampled page is loaded twice in Chromium (by :mod:`render.check.auditworker`):
with JavaScript on, taking the text of its main content (``<main>``, else the
body), and with JavaScript off, taking all visible text. Every line of the
first that does not appear in the second is content only a script writes; a
page with any is a finding that names the page and quotes the first such line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MIN_CHARS = 12
"""Shorter lines (a counter, a date, "Menu") are ignored: scripts often touch those."""
EXCERPT_CHARS = 80

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, kw_only=True)
class ParityFinding:
    """Main content seen only with JavaScript on one page."""

    path: str
    url: str
    excerpt: str  # the first line seen only with JavaScript, shortened
    missing: int  # characters of main content seen only with JavaScript
    total: int  # characters of main content with JavaScript

    @property
    def message(self) -> str:
        return (
            f"{self.missing} of {self.total} characters of main content appear only with"
            f' JavaScript, e.g. "{self.excerpt}"'
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "url": self.url,
            "excerpt": self.excerpt,
            "missing": self.missing,
            "total": self.total,
        }


def _normalize(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def js_only_lines(js_on: str, js_off: str, *, min_chars: int = MIN_CHARS) -> list[str]:
    """Lines of the JavaScript-on text that the JavaScript-off text does not contain."""
    seen = _normalize(js_off)
    missing = []
    for line in js_on.splitlines():
        text = _normalize(line)
        if len(text) >= min_chars and text not in seen:
            missing.append(text)
    return missing


def _shorten(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"


def compare(path: str, url: str, *, js_on: str, js_off: str) -> ParityFinding | None:
    """A finding when main content appears only with JavaScript, else None."""
    missing = js_only_lines(js_on, js_off)
    if not missing:
        return None
    return ParityFinding(
        path=path,
        url=url,
        excerpt=_shorten(missing[0]),
        missing=sum(len(line) for line in missing),
        total=len(_normalize(js_on)),
    )
