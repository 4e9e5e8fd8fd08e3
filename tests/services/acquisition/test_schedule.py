from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.acquisition.registry import Bus, Concentrator, Meter, Project, Registry, SerialEndpoint
from services.acquisition.schedule import (
    DEFAULT_PLAN,
    Cron,
    Daily,
    Due,
    Interval,
    JobKind,
    Monthly,
    Schedule,
    Workdays,
    next_due,
    plan,
)

SH = ZoneInfo("Asia/Shanghai")


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


def test_interval_is_clock_aligned():
    every30 = Schedule(trigger=Interval(minutes=30))
    assert next_due(every30, sh(2024, 3, 1, 10, 7)) == sh(2024, 3, 1, 10, 30)
    assert next_due(every30, sh(2024, 3, 1, 10, 30)) == sh(2024, 3, 1, 11, 0)
    assert next_due(every30, sh(2024, 3, 1, 23, 59)) == sh(2024, 3, 2, 0, 0)
    assert next_due(Schedule(trigger=Interval(minutes=1440)), sh(2024, 3, 1, 0, 0)) == sh(2024, 3, 2)
    # 02:10 UTC is 10:10 in Shanghai: alignment is to the local clock
    assert next_due(every30, datetime(2024, 3, 1, 2, 10, tzinfo=UTC)) == sh(2024, 3, 1, 10, 30)


def test_interval_zone_is_configurable():
    hourly_utc = Schedule(trigger=Daily(at=(time(0, 0),)), tz="UTC")
    assert next_due(hourly_utc, sh(2024, 3, 1, 10, 0)) == datetime(2024, 3, 2, tzinfo=UTC)


def test_settlement_day_and_daily_freeze():
    settle = Schedule(kind=JobKind.FROZEN_MONTHLY, trigger=Monthly(day=1, at=time(0, 5)))
    assert next_due(settle, sh(2024, 1, 31, 12)) == sh(2024, 2, 1, 0, 5)
    assert next_due(settle, sh(2024, 12, 1, 0, 5)) == sh(2025, 1, 1, 0, 5)
    freeze = Schedule(kind=JobKind.FROZEN_DAILY, trigger=Daily(at=(time(0, 5), time(12, 0))))
    assert next_due(freeze, sh(2024, 3, 1, 0, 5)) == sh(2024, 3, 1, 12, 0)


def test_workdays_skip_weekends_and_holidays_but_keep_make_up_days():
    cal = Workdays(
        holidays=frozenset({date(2024, 10, 1), date(2024, 10, 2)}),
        extra_workdays=frozenset({date(2024, 10, 12)}),
    )
    s = Schedule(trigger=Interval(minutes=60), workdays=cal)
    assert next_due(s, sh(2024, 9, 27, 23, 30)) == sh(2024, 9, 30, 0, 0)  # Fri night → Mon
    assert next_due(s, sh(2024, 9, 30, 23, 30)) == sh(2024, 10, 3, 0, 0)  # national-day holidays skipped
    assert next_due(s, sh(2024, 10, 11, 23, 30)) == sh(2024, 10, 12, 0, 0)  # 调休 Saturday


def test_invalid_schedules():
    with pytest.raises(ValidationError, match="does not divide a day"):
        Interval(minutes=7)
    with pytest.raises(ValidationError, match="invalid cron"):
        Cron(expression="every tuesday")
    with pytest.raises(ValueError, match="timezone-aware"):
        next_due(Schedule(trigger=Interval(minutes=5)), datetime(2024, 1, 1))


_after = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.sampled_from([SH, UTC])
)


@settings(max_examples=150, deadline=None)
@given(_after, st.sampled_from(["*/5 * * * *", "5 0 1 * *", "0 8-18 * * 1-5", "30 3 * * *", "0 0 29 2 *"]))
def test_cron_matches_croniter(after, expression):
    due = next_due(Schedule(trigger=Cron(expression=expression)), after)
    assert due > after
    assert due == croniter(expression, after.astimezone(SH)).get_next(datetime)


@settings(max_examples=150, deadline=None)
@given(_after, st.sampled_from([1, 5, 15, 30, 60, 120, 1440]), st.booleans())
def test_interval_next_due_is_the_next_aligned_slot(after, minutes, workdays_only):
    s = Schedule(trigger=Interval(minutes=minutes), workdays=Workdays() if workdays_only else None)
    due = next_due(s, after)
    local = due.astimezone(SH)
    assert due > after
    assert (local.hour * 60 + local.minute) % minutes == 0 and local.second == 0 and local.microsecond == 0
    assert not workdays_only or local.weekday() < 5
    if not workdays_only:
        assert due - after <= timedelta(minutes=minutes)


def registry() -> Registry:
    meters = tuple(
        Meter(
            id=f"m{i}",
            address=f"{i:012d}",
            protocol="dlt645-2007",
            model="x",
            schedule="fast" if i == 3 else "default",
        )
        for i in (1, 2, 3)
    )
    bus = Bus(id="b1", transport=SerialEndpoint(device="1"), protocol="dlt645-2007", meters=meters)
    return Registry(
        projects=(
            Project(
                id="p", concentrators=(Concentrator(id="c", uplink=SerialEndpoint(device="0"), buses=(bus,)),)
            ),
        )
    )


PLANS = {"default": DEFAULT_PLAN, "fast": (Schedule(trigger=Interval(minutes=1)), DEFAULT_PLAN[3])}


def test_planner_returns_due_jobs_and_wake_time():
    result = plan(registry(), PLANS, since=sh(2024, 3, 1, 10, 0, 30), now=sh(2024, 3, 1, 10, 1))
    assert result.due == [Due(JobKind.READ, "b1", "m3", sh(2024, 3, 1, 10, 1))]
    assert result.wake_at == sh(2024, 3, 1, 10, 2)
    midnight = plan(registry(), PLANS, since=sh(2024, 2, 29, 23, 59, 59), now=sh(2024, 3, 1, 0, 5))
    kinds = sorted((d.kind, d.meter_id) for d in midnight.due)
    assert (JobKind.FROZEN_MONTHLY, "m1") in kinds and (JobKind.FROZEN_DAILY, "m2") in kinds
    assert [d for d in midnight.due if d.meter_id == "m3"] == [
        Due(JobKind.READ, "b1", "m3", sh(2024, 3, 1, 0, 5))
    ]


def test_planner_broadcasts_time_sync_once_per_bus_and_collapses_missed_slots():
    result = plan(registry(), PLANS, since=sh(2024, 3, 1, 2, 0), now=sh(2024, 3, 1, 9, 59))
    assert [d for d in result.due if d.kind == JobKind.TIME_SYNC] == [
        Due(JobKind.TIME_SYNC, "b1", None, sh(2024, 3, 1, 3, 0))
    ]
    reads = [d for d in result.due if d.kind == JobKind.READ]
    assert sorted((d.meter_id, d.at) for d in reads) == [
        ("m1", sh(2024, 3, 1, 9, 30)), ("m2", sh(2024, 3, 1, 9, 30)), ("m3", sh(2024, 3, 1, 9, 59)),
    ]  # fmt: skip
    with pytest.raises(KeyError, match="fast"):
        plan(registry(), {"default": DEFAULT_PLAN}, since=sh(2024, 3, 1), now=sh(2024, 3, 1, 1))
