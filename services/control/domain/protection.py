"""负控 load control and 恶性负载 malignant-load detection (MISSION.md C4), as pure folds.

Both detectors feed a :class:`Breaker` with the same trip → auto-restore → lockout rules:

- A trip holds the supply off for ``restore_delay_s``; after that the breaker stops holding
  and the policy restores the supply (no operator needed).
- Trips are counted per local day (``tz``, the day of the trip). The trip after
  ``max_restores_per_day`` restored ones *locks* the breaker: the supply stays off, across
  midnight, until an operator releases it (``LockoutReleased``), which also resets the count.

Load limit (:class:`LoadLimit`): the supply trips when ``power_kw`` stays above ``limit_kw`` for
``sustain_s``: a reading above the limit at t0, another still above at t ≥ t0 + sustain_s, and no
reading at or below the limit in between (``sustain_s = 0`` trips on the first reading above).

Malignant load (:class:`MalignantRule`), the signature of a resistive heater, kettle or
hot-plate in a dormitory: a *step* — power rises by at least ``min_step_kw`` over the baseline
(the last reading before the rise) — with ``power_factor >= min_power_factor`` (resistive loads
run at pf ≈ 1; laptops, chargers and fans well below), held for ``sustain_readings`` consecutive
readings, and the total power at least ``min_power_kw``. A reading without a power factor never
matches. After a trip the baseline is zero: the supply was off, so a heater still plugged in when
power comes back is a fresh step. ``whitelisted`` meters (a lab, a canteen) are never checked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from libs.events.control import LoadLimit, MalignantRule

ZERO = Decimal(0)
__all__ = ["Breaker", "LoadLimit", "LoadWatch", "MalignantRule", "MalignantWatch"]


@dataclass(frozen=True)
class Breaker:
    trips: tuple[datetime, ...] = ()  # trips of the latest local day that had one
    restore_at: datetime | None = None
    locked: bool = False

    def holding(self, now: datetime) -> bool:
        return self.locked or (self.restore_at is not None and now < self.restore_at)

    def trip(self, at: datetime, config: LoadLimit | MalignantRule) -> Breaker:
        tz = ZoneInfo(config.tz)
        day: date = at.astimezone(tz).date()
        today = tuple(t for t in self.trips if t.astimezone(tz).date() == day)
        if len(today) >= config.max_restores_per_day:
            return Breaker((*today, at), None, True)
        return Breaker((*today, at), at + timedelta(seconds=config.restore_delay_s), False)

    def release(self) -> Breaker:
        return Breaker()


@dataclass(frozen=True)
class LoadWatch:
    over_since: datetime | None = None
    breaker: Breaker = Breaker()

    def observe(self, limit: LoadLimit, power_kw: Decimal | None, at: datetime) -> LoadWatch:
        if power_kw is None:
            return self
        if power_kw <= limit.limit_kw:
            return replace(self, over_since=None)
        since = self.over_since or at
        if at - since >= timedelta(seconds=limit.sustain_s):
            return LoadWatch(None, self.breaker.trip(at, limit))
        return replace(self, over_since=since)


@dataclass(frozen=True)
class MalignantWatch:
    baseline_kw: Decimal | None = None
    step_base_kw: Decimal | None = None  # baseline of the step being watched
    count: int = 0
    breaker: Breaker = Breaker()

    def observe(
        self, rule: MalignantRule, power_kw: Decimal | None, pf: Decimal | None, at: datetime
    ) -> MalignantWatch:
        if power_kw is None or rule.whitelisted:
            return self

        def step_from(base: Decimal | None) -> bool:
            return (
                base is not None
                and pf is not None
                and power_kw - base >= rule.min_step_kw
                and pf >= rule.min_power_factor
                and power_kw >= rule.min_power_kw
            )

        if self.step_base_kw is not None and step_from(self.step_base_kw):
            watch = replace(self, count=self.count + 1)
        elif self.step_base_kw is None and step_from(self.baseline_kw):
            watch = replace(self, step_base_kw=self.baseline_kw, count=1)
        else:
            return replace(self, baseline_kw=power_kw, step_base_kw=None, count=0)
        if watch.count >= rule.sustain_readings:
            return MalignantWatch(ZERO, None, 0, self.breaker.trip(at, rule))
        return watch

    def restored(self) -> MalignantWatch:
        """The supply was off: the next load seen is a step from zero."""
        return replace(self, baseline_kw=ZERO, step_base_kw=None, count=0)
