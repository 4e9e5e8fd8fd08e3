"""Reading schedules (A3), frozen-data reads (A5) and broadcast time sync (A9), as pure functions.

A :class:`Schedule` is one job kind plus a trigger (clock-aligned interval, cron expression, daily
times, or a monthly settlement day) and an optional workday calendar, in a named time zone
(Asia/Shanghai unless told). A *plan* is a named tuple of schedules; a meter names its plan in
``Meter.schedule``. :func:`plan` is the planner: given the registry, the last time it ran and now,
it returns what fell due in between and when to wake next. Slots missed while the service was down
collapse into one due job (a catch-up storm of 48 reads per meter helps nobody).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from services.acquisition.registry import Registry

DEFAULT_TZ = "Asia/Shanghai"


class JobKind(StrEnum):
    READ = "read"  # live values
    FROZEN_DAILY = "frozen_daily"  # meter-side daily frozen values (A5)
    FROZEN_MONTHLY = "frozen_monthly"  # meter-side monthly frozen / settlement-day values
    TIME_SYNC = "time_sync"  # broadcast, one per bus (A9)


BROADCAST = frozenset({JobKind.TIME_SYNC})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Interval(_Frozen):
    """Every ``minutes``, aligned to local midnight (30 → :00 and :30); must divide a day."""

    type: Literal["interval"] = "interval"
    minutes: int = Field(ge=1, le=1440)

    @field_validator("minutes")
    @classmethod
    def _divides_a_day(cls, value: int) -> int:
        if 1440 % value:
            raise ValueError(
                f"an interval of {value} min does not divide a day, so it cannot stay clock-aligned"
            )
        return value


class Cron(_Frozen):
    type: Literal["cron"] = "cron"
    expression: str

    @field_validator("expression")
    @classmethod
    def _valid(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}")
        return value


class Daily(_Frozen):
    """At these local times each day (daily freeze reads, time sync)."""

    type: Literal["daily"] = "daily"
    at: tuple[time, ...] = Field(min_length=1)


class Monthly(_Frozen):
    """Settlement day: day ``day`` of each month at ``at`` (day 1 at 00:05 by default)."""

    type: Literal["monthly"] = "monthly"
    day: int = Field(default=1, ge=1, le=28)
    at: time = time(0, 5)


Trigger = Annotated[Interval | Cron | Daily | Monthly, Field(discriminator="type")]


class Workdays(_Frozen):
    """Mon–Fri minus ``holidays``, plus ``extra_workdays`` (调休: weekends worked in exchange)."""

    holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()

    def __contains__(self, day: object) -> bool:
        assert isinstance(day, date)
        return day in self.extra_workdays or (day.weekday() < 5 and day not in self.holidays)


class Schedule(_Frozen):
    kind: JobKind = JobKind.READ
    trigger: Trigger
    workdays: Workdays | None = None
    tz: str = DEFAULT_TZ

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        ZoneInfo(value)
        return value


def _next_trigger(trigger: Interval | Cron | Daily | Monthly, after: datetime, tz: ZoneInfo) -> datetime:
    local = after.astimezone(tz)
    if isinstance(trigger, Cron):
        nxt: datetime = croniter(trigger.expression, local).get_next(datetime)
        return nxt
    wall = local.replace(tzinfo=None)
    if isinstance(trigger, Interval):
        midnight = datetime.combine(wall.date(), time())
        step = timedelta(minutes=trigger.minutes)
        candidates = [midnight + step * ((wall - midnight) // step + k) for k in (1, 2)]
    elif isinstance(trigger, Daily):
        candidates = [
            datetime.combine(wall.date() + timedelta(days=d), t) for d in (0, 1) for t in trigger.at
        ]
    else:
        first = wall.date().replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        candidates = [datetime.combine(m.replace(day=trigger.day), trigger.at) for m in (first, following)]
    # compare in UTC: aware datetimes sharing a tzinfo compare by wall clock, which repeats or
    # skips around DST changes in zones that have them
    instants = sorted(c.replace(tzinfo=tz).astimezone(UTC) for c in candidates)
    return next(c for c in instants if c > after.astimezone(UTC)).astimezone(tz)


def next_due(schedule: Schedule, after: datetime) -> datetime:
    """The first time strictly after ``after`` (aware) when ``schedule`` fires, in its zone."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    tz = ZoneInfo(schedule.tz)
    moment = after
    for _ in range(800):  # a year of skipped days at most, plus room for long holidays
        due = _next_trigger(schedule.trigger, moment, tz)
        day = due.astimezone(tz).date()
        if schedule.workdays is None or day in schedule.workdays:
            return due
        # skip the rest of a non-working day in one step instead of slot by slot
        moment = datetime.combine(day + timedelta(days=1), time(), tz) - timedelta(microseconds=1)
    raise ValueError("schedule never fires on a working day")


DEFAULT_PLAN: tuple[Schedule, ...] = (
    Schedule(kind=JobKind.READ, trigger=Interval(minutes=30)),
    Schedule(kind=JobKind.FROZEN_DAILY, trigger=Daily(at=(time(0, 5),))),
    Schedule(kind=JobKind.FROZEN_MONTHLY, trigger=Monthly(day=1, at=time(0, 5))),
    Schedule(kind=JobKind.TIME_SYNC, trigger=Daily(at=(time(3, 0),))),
)


@dataclass(frozen=True)
class Due:
    """One job to run: a meter's job, or a broadcast job on a bus (``meter_id`` None)."""

    kind: JobKind
    bus_id: str
    meter_id: str | None
    at: datetime  # the slot that fell due


@dataclass(frozen=True)
class PlanResult:
    due: list[Due]
    wake_at: datetime | None


def plan(
    registry: Registry, plans: Mapping[str, tuple[Schedule, ...]], since: AwareDatetime, now: AwareDatetime
) -> PlanResult:
    """Jobs with a slot in ``(since, now]`` and the next slot after ``now`` (None if nothing is scheduled)."""
    unknown = sorted({loc.meter.schedule for loc in registry.all_meters()} - set(plans))
    if unknown:
        raise KeyError(f"meters name unknown schedules: {', '.join(unknown)}")
    fired: dict[tuple[str, int], datetime] = {}
    wake: datetime | None = None
    for name, schedules in plans.items():
        for i, schedule in enumerate(schedules):
            slot = next_due(schedule, since)
            if slot <= now:
                fired[(name, i)] = _last_slot(schedule, slot, now)
            upcoming = next_due(schedule, now)
            wake = upcoming if wake is None else min(wake, upcoming)
    due: list[Due] = []
    broadcast_sent: set[tuple[str, JobKind]] = set()
    for loc in registry.all_meters():
        for i, schedule in enumerate(plans[loc.meter.schedule]):
            at = fired.get((loc.meter.schedule, i))
            if at is None:
                continue
            if schedule.kind in BROADCAST:
                if (loc.bus_id, schedule.kind) not in broadcast_sent:
                    broadcast_sent.add((loc.bus_id, schedule.kind))
                    due.append(Due(schedule.kind, loc.bus_id, None, at))
            else:
                due.append(Due(schedule.kind, loc.bus_id, loc.meter.id, at))
    return PlanResult(due, wake)


def _last_slot(schedule: Schedule, slot: datetime, now: datetime) -> datetime:
    """The latest slot ≤ now: walk forward from a little before now, not from ``slot`` (days of
    1-minute slots may separate them)."""
    for back in (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=400)):
        last = next_due(schedule, max(slot, now - back) - timedelta(microseconds=1))
        if last <= now:
            while (nxt := next_due(schedule, last)) <= now:
                last = nxt
            return last
    return slot
