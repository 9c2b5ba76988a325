"""Cron strings with crontab's meaning, as APScheduler 3 triggers.

``0 3 * * 0`` and ``0 3 * * 7`` are Sunday, as in crontab(5); APScheduler's own
``CronTrigger.from_crontab`` reads 0 as Monday, so every field is expanded here
to explicit values and day-of-week is passed by name. Two more crontab rules
that APScheduler does not follow are kept here:

- when both day-of-month and day-of-week are restricted (neither starts with
  ``*``), a day matching *either* one runs (``0 3 13 * 5``: the 13th and every
  Friday);
- on the day a time zone falls back, a wall-clock time that happens twice runs
  once, at its first occurrence (APScheduler 3.11.3 fires both). Jobs whose
  hour field starts with ``*`` keep running by elapsed time through the
  repeated hour, as cron's "wildcard" jobs do. A time skipped when clocks spring
  forward runs once, one hour later by the wall clock (02:30 runs at 03:30).

A leading sixth field is read as seconds (``*/5 * * * * *``), for tests and
demos; five fields are the normal form and run at second 0.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_SECOND = ("second", 0, 59)
_NAMES = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
    "sun": 0,
    "mon": 1,
    "tue": 2,
    "wed": 3,
    "thu": 4,
    "fri": 5,
    "sat": 6,
}
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


def _fields(expr: str) -> list[tuple[str, tuple[str, int, int]]]:
    parts = expr.split()
    specs = (_SECOND, *_FIELDS) if len(parts) == 6 else _FIELDS
    return list(zip(parts, specs, strict=False))


def _expand(text: str, name: str, low: int, high: int) -> set[int]:
    """The values one field allows; raises ValueError with a readable reason."""
    values: set[int] = set()
    for item in text.lower().split(","):
        match = _ITEM.match(item)
        if not match:
            raise ValueError(f"{name} field {text!r} is not valid")
        step = int(match.group(2)) if match.group(2) is not None else 1
        if step == 0:
            raise ValueError(f"{name} field {text!r} has a step of 0")
        if match.group(1) == "*":
            first, last = low, (6 if name == "day of week" else high)
        else:
            bounds = []
            for value in match.group(1).split("-"):
                number = int(value) if value.isdigit() else _NAMES.get(value)
                if number is None or not low <= number <= high:
                    raise ValueError(
                        f"{name} field {text!r}: {value!r} is out of range {low}-{high}"
                    )
                bounds.append(number)
            first = bounds[0]
            # "5/15" means 5-59/15, as in Vixie cron and APScheduler
            last = bounds[-1] if len(bounds) == 2 or match.group(2) is None else high
            if first > last:
                extra = " (use 7 for Sunday: 5-7)" if name == "day of week" else ""
                raise ValueError(
                    f"{name} field {text!r}: range {first}-{last} runs backwards{extra}"
                )
        values.update(range(first, last + 1, step))
    if name == "day of week" and 7 in values:
        values.discard(7)
        values.add(0)
    return values


def problem(expr: str) -> str | None:
    """Why ``expr`` is not a valid crontab string, or None."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        return f"expected 5 fields (minute hour day month weekday), got {len(fields)}: {expr!r}"
    expanded: dict[str, set[int]] = {}
    try:
        for text, (name, low, high) in _fields(expr):
            expanded[name] = _expand(text, name, low, high)
    except ValueError as exc:
        return str(exc)
    dom_text, dow_text = fields[-3], fields[-1]
    if dow_text.startswith("*"):  # else a restricted weekday can still match (crontab's OR)
        longest = max(_MONTH_DAYS[m - 1] for m in expanded["month"])
        if min(expanded["day of month"]) > longest:
            return f"day of month {dom_text!r} never occurs in month {fields[-2]!r}"
    return None


def _compact(values: set[int]) -> str:
    """``{1,2,3,7}`` -> ``"1-3,7"`` (APScheduler's field syntax)."""
    ordered = sorted(values)
    runs: list[str] = []
    start = prev = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ",".join(runs)


def _cron_triggers(expr: str, tz: tzinfo) -> list[CronTrigger]:
    why = problem(expr)
    if why is not None:
        raise ValueError(why)
    parts = expr.split()
    values = {name: _expand(text, name, low, high) for text, (name, low, high) in _fields(expr)}
    kwargs = {
        "second": _compact(values["second"]) if "second" in values else "0",
        "minute": _compact(values["minute"]),
        "hour": _compact(values["hour"]),
        "month": _compact(values["month"]),
    }
    days = _compact(values["day of month"])
    weekdays = ",".join(_DAY_NAMES[d] for d in sorted(values["day of week"]))
    dom_star, dow_star = parts[-3].startswith("*"), parts[-1].startswith("*")
    if dom_star or dow_star:
        return [CronTrigger(day=days, day_of_week=weekdays, timezone=tz, **kwargs)]
    return [
        CronTrigger(day=days, day_of_week="*", timezone=tz, **kwargs),
        CronTrigger(day="*", day_of_week=weekdays, timezone=tz, **kwargs),
    ]


class CrontabTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler 3 trigger for a crontab string in a time zone, shifted by ``offset`` s.

    Pickles as ``(expr, timezone, offset)`` so the job store does not depend on
    APScheduler's private field objects.
    """

    def __init__(self, expr: str, *, timezone: str = "UTC", offset: int = 0) -> None:
        self.expr = " ".join(expr.split())
        self.timezone = timezone
        self.offset = offset
        self._setup()

    def _setup(self) -> None:
        self._tz = ZoneInfo(self.timezone)
        self._shift = timedelta(seconds=self.offset)
        self._triggers = _cron_triggers(self.expr, self._tz)
        self._wildcard_hour = self.expr.split()[-4].startswith("*")

    def __getstate__(self) -> dict[str, object]:
        return {"version": 1, "expr": self.expr, "timezone": self.timezone, "offset": self.offset}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.expr = str(state["expr"])
        self.timezone = str(state["timezone"])
        offset = state["offset"]
        self.offset = offset if isinstance(offset, int) else 0
        self._setup()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CrontabTrigger):
            return NotImplemented
        return (self.expr, self.timezone, self.offset) == (other.expr, other.timezone, other.offset)

    def __hash__(self) -> int:
        return hash((self.expr, self.timezone, self.offset))

    def __str__(self) -> str:
        shift = f" +{self.offset}s" if self.offset else ""
        return f"crontab[{self.expr} {self.timezone}{shift}]"

    def __repr__(self) -> str:
        return f"CrontabTrigger({self.expr!r}, timezone={self.timezone!r}, offset={self.offset})"

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # APScheduler mishandles a repeated wall time unless given times in its own zone
        tz, shift = self._tz, self._shift
        prev = (
            (previous_fire_time.astimezone(UTC) - shift).astimezone(tz)
            if previous_fire_time
            else None
        )
        base_now = (now.astimezone(UTC) - shift).astimezone(tz)
        while True:
            found = [t.get_next_fire_time(prev, base_now) for t in self._triggers]
            candidates = [c for c in found if c is not None]
            if not candidates:
                return None
            fire = min(candidates, key=lambda c: c.astimezone(UTC))
            if self._wildcard_hour or not _second_occurrence(fire, self._tz):
                shifted: datetime = (fire.astimezone(UTC) + shift).astimezone(tz)
                return shifted
            prev = base_now = fire


def _second_occurrence(moment: datetime, tz: tzinfo) -> bool:
    """True when ``moment``'s wall time happens twice that day and this is the repeat."""
    wall = moment.astimezone(tz).replace(tzinfo=None)
    first, second = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    offset_first, offset_second = first.utcoffset(), second.utcoffset()
    if offset_first is None or offset_second is None or offset_first <= offset_second:
        return False  # not ambiguous (or a spring-forward gap)
    return moment.astimezone(UTC) == second.astimezone(UTC)


def trigger(expr: str, *, timezone: str = "UTC", offset: int = 0) -> CrontabTrigger:
    """The trigger for a crontab string; raises ValueError naming the bad field."""
    return CrontabTrigger(expr, timezone=timezone, offset=offset)


def jitter_offset(key: str, jitter: int) -> int:
    """A stable spread in ``[0, jitter)`` seconds derived from ``key`` (a site id)."""
    if jitter <= 0:
        return 0
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % jitter


def next_fire(
    expr: str, *, timezone: str = "UTC", offset: int = 0, after: datetime | None = None
) -> datetime | None:
    """The first run strictly after ``after`` (default now), in the schedule's time zone."""
    now = after or datetime.now(UTC)
    when = trigger(expr, timezone=timezone, offset=offset)
    fire = when.get_next_fire_time(None, now)
    if fire is not None and fire <= now:
        fire = when.get_next_fire_time(fire, now + timedelta(microseconds=1))
    return fire
