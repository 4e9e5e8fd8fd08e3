"""时控 timed on/off calendars (MISSION.md C3), as pure functions of a schedule and an instant.

A :class:`TimeControl` is a pair of cron expressions read in a named time zone (Asia/Shanghai
unless told): ``off`` fires the moments the supply goes off, ``on`` the moments it comes back.
Rules:

- At ``now`` the supply is *off* iff the latest ``off`` firing at or before ``now`` is later than
  the latest ``on`` firing at or before ``now`` (a firing at exactly ``now`` counts: at 23:30:00
  the dormitory is already off).
- ``holidays`` exempt a night: an ``off`` firing whose local date is a holiday does not happen,
  so the supply stays on through that night. ``on`` firings are never exempt (restoring is
  always safe).
- Look-back is bounded (:data:`LOOKBACK`): a schedule whose last firing is older counts as not
  having fired.

Example — dormitory off 23:30–06:30 on the nights before weekdays is
``TimeControl(off="30 23 * * 0-4", on="30 6 * * *")`` (cron weekday 0 = Sunday).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from libs.events.control import DEFAULT_TZ, TimeControl

__all__ = ["DEFAULT_TZ", "TimeControl", "is_off", "next_change"]
LOOKBACK = timedelta(days=40)


def _last_firing(expression: str, now: datetime, tz: ZoneInfo, skip: frozenset[date]) -> datetime | None:
    local = now.astimezone(tz)
    # croniter's get_prev is strictly before its start; start one second later to include `now`
    it = croniter(expression, local + timedelta(seconds=1))
    floor = local - LOOKBACK
    while True:
        fired: datetime = it.get_prev(datetime)
        if fired < floor:
            return None
        if fired <= local and fired.date() not in skip:
            return fired


def is_off(schedule: TimeControl, now: datetime) -> bool:
    """Whether the schedule wants the supply off at ``now`` (timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tz = ZoneInfo(schedule.tz)
    last_off = _last_firing(schedule.off, now, tz, schedule.holidays)
    if last_off is None:
        return False
    last_on = _last_firing(schedule.on, now, tz, frozenset())
    return last_on is None or last_off > last_on


def next_change(schedule: TimeControl, now: datetime) -> datetime:
    """The next firing (of either expression) strictly after ``now``: when to evaluate again.

    Holidays are not skipped here: waking on an exempt firing costs one evaluation."""
    tz = ZoneInfo(schedule.tz)
    local = now.astimezone(tz)
    nxt_off: datetime = croniter(schedule.off, local).get_next(datetime)
    nxt_on: datetime = croniter(schedule.on, local).get_next(datetime)
    return min(nxt_off, nxt_on)
