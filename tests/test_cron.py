"""Cron strings mean what crontab means, in the site's time zone, across DST changes."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from render import cron


def fires(expr: str, tz: str, start: datetime, end: datetime, *, offset: int = 0) -> list[datetime]:
    """Every fire time in [start, end], walked the way APScheduler walks a job's trigger."""
    trigger = cron.trigger(expr, timezone=tz, offset=offset)
    out: list[datetime] = []
    prev, now = None, start
    while (fire := trigger.get_next_fire_time(prev, now)) is not None and fire <= end:
        out.append(fire)
        prev = now = fire
    return out


def local_day(tz: str, day: tuple[int, int, int]) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    start = datetime(*day, tzinfo=zone)
    return start, start + timedelta(days=1) - timedelta(microseconds=1)


def wall(fire: datetime, tz: str) -> str:
    return fire.astimezone(ZoneInfo(tz)).strftime("%a %Y-%m-%d %H:%M")


@pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN", "6-7", "0,3"])
def test_weekday_zero_and_seven_are_sunday(dow: str) -> None:
    after = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
    days = {
        wall(f, "UTC")[:3] for f in fires(f"0 3 * * {dow}", "UTC", after, after + timedelta(days=7))
    }
    assert "Sun" in days
    assert "Mon" not in days


def test_weekday_ranges_and_steps_count_from_sunday() -> None:
    week = datetime(2026, 11, 22, tzinfo=UTC), datetime(2026, 11, 28, 23, 59, tzinfo=UTC)  # Sun-Sat
    assert [wall(f, "UTC")[:3] for f in fires("0 3 * * 1-5", "UTC", *week)] == [
        "Mon",
        "Tue",
        "Wed",
        "Thu",
        "Fri",
    ]
    assert [wall(f, "UTC")[:3] for f in fires("0 3 * * */2", "UTC", *week)] == [
        "Sun",
        "Tue",
        "Thu",
        "Sat",
    ]
    assert [wall(f, "UTC")[:3] for f in fires("0 3 * * 5-7", "UTC", *week)] == ["Sun", "Fri", "Sat"]


def test_day_of_month_or_weekday_when_both_are_restricted() -> None:
    # crontab: "0 3 13 * 5" runs on the 13th AND on every Friday (not only on Friday the 13th)
    month = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    got = [wall(f, "UTC") for f in fires("0 3 13 * 5", "UTC", *month)]
    assert got == [
        "Fri 2026-12-04 03:00",
        "Fri 2026-12-11 03:00",
        "Sun 2026-12-13 03:00",
        "Fri 2026-12-18 03:00",
        "Fri 2026-12-25 03:00",
    ]
    # with a wildcard weekday, the day of month alone decides
    assert [wall(f, "UTC") for f in fires("0 3 13 * *", "UTC", *month)] == ["Sun 2026-12-13 03:00"]


def test_runs_in_the_site_time_zone() -> None:
    got = cron.next_fire(
        "0 3 * * *", timezone="Europe/Berlin", after=datetime(2026, 11, 27, tzinfo=UTC)
    )
    assert got is not None
    assert got.astimezone(UTC) == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    assert got.astimezone(ZoneInfo("Europe/Berlin")).hour == 3


@pytest.mark.parametrize(
    ("tz", "day", "expr", "expected"),
    [
        # fall back: the wall time happens twice; the job runs at the first one only
        ("America/New_York", (2025, 11, 2), "30 1 * * *", ["05:30"]),
        ("Europe/Berlin", (2025, 10, 26), "30 2 * * *", ["00:30"]),
        ("Europe/Berlin", (2025, 10, 26), "0 2 * * *", ["00:00"]),
        ("Europe/Berlin", (2025, 10, 26), "30 3 * * *", ["02:30"]),
        # spring forward: the wall time never happens; the job still runs, once
        ("America/New_York", (2025, 3, 9), "30 2 * * *", ["07:30"]),
        ("Europe/Berlin", (2025, 3, 30), "30 2 * * *", ["01:30"]),
        ("Europe/Berlin", (2025, 3, 30), "30 3 * * *", ["01:30"]),
    ],
)
def test_dst_change_day_runs_once(
    tz: str, day: tuple[int, int, int], expr: str, expected: list[str]
) -> None:
    got = fires(expr, tz, *local_day(tz, day))
    assert [f.astimezone(UTC).strftime("%H:%M") for f in got] == expected


def test_dst_days_in_a_row_keep_one_run_per_day() -> None:
    # a job walked through a whole autumn week in Berlin: seven runs, each at 02:30 local
    start = datetime(2025, 10, 23, tzinfo=ZoneInfo("Europe/Berlin"))
    got = fires("30 2 * * *", "Europe/Berlin", start, start + timedelta(days=7))
    assert len(got) == 7
    assert {f.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") for f in got} == {"02:30"}


def test_hourly_jobs_keep_running_through_the_repeated_hour() -> None:
    # wildcard hours run by elapsed time, as cron does: 25 hourly runs on a 25-hour day
    got = fires("0 * * * *", "Europe/Berlin", *local_day("Europe/Berlin", (2025, 10, 26)))
    assert len(got) == 25
    assert (
        len(fires("0 * * * *", "Europe/Berlin", *local_day("Europe/Berlin", (2025, 3, 30)))) == 23
    )


def test_offset_shifts_every_run_by_the_same_seconds() -> None:
    start = datetime(2025, 10, 25, tzinfo=ZoneInfo("Europe/Berlin"))
    plain = fires("30 2 * * *", "Europe/Berlin", start, start + timedelta(days=3))
    shifted = fires("30 2 * * *", "Europe/Berlin", start, start + timedelta(days=3), offset=437)
    assert [s - p for s, p in zip(shifted, plain, strict=True)] == [timedelta(seconds=437)] * 3


def test_jitter_offset_is_stable_and_spread() -> None:
    offsets = [cron.jitter_offset(f"owner/site{i}", 600) for i in range(200)]
    assert offsets == [cron.jitter_offset(f"owner/site{i}", 600) for i in range(200)]
    assert all(0 <= o < 600 for o in offsets)
    assert len(set(offsets)) > 150  # a thousand sites do not all start at 03:00:00
    assert cron.jitter_offset("owner/site", 0) == 0


def test_six_fields_have_seconds_first() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    got = fires("*/20 * * * * *", "UTC", start, start + timedelta(minutes=1))
    assert [f.second for f in got] == [0, 20, 40, 0]


def test_trigger_survives_the_job_store() -> None:
    trigger = cron.trigger("0 3 * * 0", timezone="Europe/Berlin", offset=12)
    copy = pickle.loads(pickle.dumps(trigger))
    assert copy == trigger
    now = datetime(2026, 11, 27, tzinfo=UTC)
    assert copy.get_next_fire_time(None, now) == trigger.get_next_fire_time(None, now)
    assert str(copy) == "crontab[0 3 * * 0 Europe/Berlin +12s]"


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("0 3 * *", "expected 5 fields (minute hour day month weekday), got 4: '0 3 * *'"),
        ("61 3 * * *", "minute field '61': '61' is out of range 0-59"),
        ("0 3 * * 8", "day of week field '8': '8' is out of range 0-7"),
        (
            "0 3 * * 5-0",
            "day of week field '5-0': range 5-0 runs backwards (use 7 for Sunday: 5-7)",
        ),
        ("*/0 3 * * *", "minute field '*/0' has a step of 0"),
        ("0 3 30 2 *", "day of month '30' never occurs in month '2'"),
        ("0 3 x * *", "day of month field 'x': 'x' is out of range 1-31"),
    ],
)
def test_problems_name_the_field(expr: str, problem: str) -> None:
    assert cron.problem(expr) == problem
    with pytest.raises(ValueError, match="field|never|expected"):
        cron.trigger(expr)


def test_valid_strings_have_no_problem() -> None:
    for expr in (
        "0 3 * * *",
        "*/15 * * * *",
        "0 3 30 2 1",
        "5/15 1-5 1,15 jan-jun mon-fri",
        "0 0 * * 7",
    ):
        assert cron.problem(expr) is None, expr
