"""Cron strings with crontab's meaning (``0 3 * * 0`` is Sunday)."""

from __future__ import annotations

import re

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_NAMES = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
    "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
}  # fmt: skip
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


def problem(expr: str) -> str | None:
    """Why ``expr`` is not a valid five-field crontab string, or None."""
    fields = expr.split()
    if len(fields) != 5:
        return f"expected 5 fields (minute hour day month weekday), got {len(fields)}: {expr!r}"
    for text, (name, low, high) in zip(fields, _FIELDS, strict=True):
        for item in text.lower().split(","):
            match = _ITEM.match(item)
            if not match:
                return f"{name} field {text!r} is not valid"
            if match.group(2) is not None and int(match.group(2)) == 0:
                return f"{name} field {text!r} has a step of 0"
            if match.group(1) == "*":
                continue
            for value in match.group(1).split("-"):
                number = _NAMES.get(value) if not value.isdigit() else int(value)
                if number is None or not low <= number <= high:
                    return f"{name} field {text!r}: {value!r} is out of range {low}-{high}"
    return None
