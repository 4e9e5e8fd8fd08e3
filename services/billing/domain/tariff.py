"""Tariff models parsed from ``TariffPublished.definition`` (MISSION.md B2).

Prices are ``Decimal`` fen per unit (kWh or m³): 0.5283 元/kWh is ``"52.83"``. Money results
are integer fen, rounded once per charge line (see :mod:`services.billing.domain.pricing`).

Kinds (the ``kind`` key of a definition):

- ``single``       ``{"price_fen": "52.83"}``
- ``compound``     ``{"components": [{"name": "energy", "price_fen": …}, {"name": "service", …}]}``
- ``tou``          ``{"prices": {"peak": …, "valley": …}, "schedules": [{"months": [..],
  "days": "all|weekday|weekend", "bands": [{"start": "08:00", "rate": "peak"}, …],
  "prices": {…optional seasonal override}}], "extras": [components added to every rate]}``.
  A band runs from its start to the next band's start and the last wraps past midnight;
  the first schedule matching a local date (month, weekday/weekend) applies.
- ``proportional`` ``{"shares": [{"category": "residential", "ratio": "0.8", "tariff": {…}}]}``;
  ratios sum to exactly 1, each share a single / compound / tou tariff.
- ``tiered``       ``{"period": "month|year", "tiers": [{"up_to": "230", …}, {"up_to": null, …}],
  "base": {…optional single / compound / tou}}``. Without a base every tier has ``price_fen``;
  with a base every tier has ``surcharge_fen`` (阶梯加价), added on top of the base price of the
  first component (the energy price by convention) — the Chinese residential tiered+TOU tariff.

Every kind has ``timezone`` (default Asia/Shanghai): the local clock of bands and periods.
"""

from __future__ import annotations

import bisect
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from libs.events.acquisition import Rate
from libs.events.billing import TariffPublished

TOU_RATES = (Rate.SHARP, Rate.PEAK, Rate.FLAT, Rate.VALLEY)
Price = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=6)]


class TariffError(ValueError):
    """A tariff definition that does not validate; the message names the offending field."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Component(_Model):
    name: str = Field(min_length=1, max_length=32)
    price_fen: Price


class _Body(_Model):
    timezone: str = "Asia/Shanghai"

    @model_validator(mode="after")
    def _zone(self) -> _Body:
        try:
            ZoneInfo(self.timezone)
        except Exception as exc:  # ZoneInfoNotFoundError or a malformed key
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def components(self, local: datetime, rate: Rate) -> tuple[tuple[str, Decimal], ...]:
        """(component, fen per unit) charged for one unit of ``rate`` consumed at ``local``."""
        raise NotImplementedError

    def uses_rates(self) -> bool:
        """True when the price depends on the rate (time-of-use)."""
        return False

    def tou_tables(self) -> tuple[Tou, ...]:
        return ()


class Single(_Body):
    kind: Literal["single"]
    price_fen: Price

    def components(self, local: datetime, rate: Rate) -> tuple[tuple[str, Decimal], ...]:
        return (("energy", self.price_fen),)


class Compound(_Body):
    kind: Literal["compound"]
    components_: tuple[Component, ...] = Field(alias="components", min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Compound:
        names = [c.name for c in self.components_]
        if len(set(names)) != len(names):
            raise ValueError(f"component names repeat: {names}")
        return self

    def components(self, local: datetime, rate: Rate) -> tuple[tuple[str, Decimal], ...]:
        return tuple((c.name, c.price_fen) for c in self.components_)


class Band(_Model):
    start: time
    rate: Rate

    @model_validator(mode="after")
    def _tou_rate(self) -> Band:
        if self.rate not in TOU_RATES:
            raise ValueError(f"band rate must be sharp/peak/flat/valley, not {self.rate}")
        return self


class Schedule(_Model):
    months: tuple[int, ...] = tuple(range(1, 13))
    days: Literal["all", "weekday", "weekend"] = "all"
    bands: tuple[Band, ...] = Field(min_length=1)
    prices: dict[Rate, Price] | None = None  # seasonal override of the tariff's prices

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if not self.months or any(not 1 <= m <= 12 for m in self.months):
            raise ValueError(f"months must be within 1..12, got {self.months}")
        starts = [b.start for b in self.bands]
        if starts != sorted(set(starts)):
            raise ValueError(f"band starts must strictly increase, got {[s.isoformat() for s in starts]}")
        return self

    def matches(self, day: date) -> bool:
        weekend = day.weekday() >= 5
        kind_ok = self.days == "all" or (self.days == "weekend") == weekend
        return kind_ok and day.month in self.months

    def rate_at(self, clock: time) -> Rate:
        i = bisect.bisect_right([b.start for b in self.bands], clock) - 1
        return self.bands[i].rate  # i == -1 wraps to the last band (before the first start)


class Tou(_Body):
    kind: Literal["tou"]
    prices: dict[Rate, Price]
    schedules: tuple[Schedule, ...] = Field(min_length=1)
    extras: tuple[Component, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Tou:
        for s in self.schedules:
            for b in s.bands:
                if b.rate not in {**self.prices, **(s.prices or {})}:
                    raise ValueError(f"band {b.start.isoformat()} uses rate {b.rate} which has no price")
        probe = date(2024, 1, 1)  # a Monday; check every month for a weekday and a weekend day
        for month in range(1, 13):
            for day in (probe.replace(month=month), probe.replace(month=month, day=6)):
                if not any(s.matches(day) for s in self.schedules):
                    raise ValueError(f"no schedule covers month {month} ({day.strftime('%A')}s)")
        return self

    def schedule(self, day: date) -> Schedule:
        return next(s for s in self.schedules if s.matches(day))

    def rate_at(self, local: datetime) -> Rate:
        return self.schedule(local.date()).rate_at(local.time())

    def edges(self, day: date) -> list[datetime]:
        """Local band start instants on ``day`` (aware, in this tariff's zone)."""
        return [datetime.combine(day, b.start, self.zone) for b in self.schedule(day).bands]

    def components(self, local: datetime, rate: Rate) -> tuple[tuple[str, Decimal], ...]:
        schedule = self.schedule(local.date())
        prices = {**self.prices, **(schedule.prices or {})}
        if rate not in prices:
            raise TariffError(f"tou tariff has no price for rate {rate}")
        return (("energy", prices[rate]), *((c.name, c.price_fen) for c in self.extras))

    def uses_rates(self) -> bool:
        return True

    def tou_tables(self) -> tuple[Tou, ...]:
        return (self,)


Plain = Annotated[Single | Compound | Tou, Field(discriminator="kind")]


class Share(_Model):
    category: str = Field(min_length=1, max_length=32)
    ratio: Annotated[Decimal, Field(gt=0, le=1)]
    tariff: Plain


class Proportional(_Body):
    kind: Literal["proportional"]
    shares: tuple[Share, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _sum(self) -> Proportional:
        total = sum((s.ratio for s in self.shares), Decimal(0))
        if total != 1:
            raise ValueError(f"share ratios must sum to 1, got {total}")
        return self

    def uses_rates(self) -> bool:
        return any(s.tariff.uses_rates() for s in self.shares)

    def tou_tables(self) -> tuple[Tou, ...]:
        return tuple(t for s in self.shares for t in s.tariff.tou_tables())


class Tier(_Model):
    up_to: Annotated[Decimal, Field(gt=0)] | None  # cumulative units in the period; None = no cap
    price_fen: Price | None = None
    surcharge_fen: Price | None = None


class Tiered(_Body):
    kind: Literal["tiered"]
    period: Literal["month", "year"]
    tiers: tuple[Tier, ...] = Field(min_length=1)
    base: Plain | None = None

    @model_validator(mode="after")
    def _check(self) -> Tiered:
        caps = [t.up_to for t in self.tiers]
        if caps[-1] is not None or any(c is None for c in caps[:-1]):
            raise ValueError("only the last tier has up_to null")
        bounded = [c for c in caps if c is not None]
        if bounded != sorted(set(bounded)):
            raise ValueError(f"tier thresholds must strictly increase, got {bounded}")
        for i, t in enumerate(self.tiers, 1):
            if self.base is None and (t.price_fen is None or t.surcharge_fen is not None):
                raise ValueError(f"tier {i}: without a base every tier needs price_fen only")
            if self.base is not None and (t.surcharge_fen is None or t.price_fen is not None):
                raise ValueError(f"tier {i}: with a base every tier needs surcharge_fen only")
        return self

    def period_key(self, local: datetime) -> str:
        return f"{local:%Y}" if self.period == "year" else f"{local:%Y-%m}"

    def uses_rates(self) -> bool:
        return self.base is not None and self.base.uses_rates()

    def tou_tables(self) -> tuple[Tou, ...]:
        return self.base.tou_tables() if self.base is not None else ()


TariffBody = Annotated[Single | Compound | Tou | Proportional | Tiered, Field(discriminator="kind")]
_BODY: TypeAdapter[TariffBody] = TypeAdapter(TariffBody)


def parse_tariff(definition: dict[str, Any]) -> TariffBody:
    """Validate a definition; :class:`TariffError` lists every problem with its location."""
    try:
        return _BODY.validate_python(definition)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise TariffError(f"invalid tariff definition: {problems}") from None


class TariffVersion(_Model):
    tariff_id: str
    version: int
    name: str
    effective_from: datetime
    body: TariffBody

    @classmethod
    def from_event(cls, fact: TariffPublished) -> TariffVersion:
        return cls(
            tariff_id=fact.tariff_id,
            version=fact.version,
            name=fact.name,
            effective_from=fact.effective_from,
            body=parse_tariff(fact.definition),
        )


class TariffBook(_Model):
    """All versions of one tariff; :meth:`at` picks the one in force at an instant."""

    tariff_id: str
    versions: tuple[TariffVersion, ...] = ()

    def publish(self, version: TariffVersion) -> TariffBook:
        """Add or correct (same version number replaces) a version; order by effective time."""
        if version.tariff_id != self.tariff_id:
            raise TariffError(f"version of {version.tariff_id} published into book {self.tariff_id}")
        kept = [v for v in self.versions if v.version != version.version]
        ordered = sorted([*kept, version], key=lambda v: (v.effective_from, v.version))
        return self.model_copy(update={"versions": tuple(ordered)})

    def at(self, instant: datetime) -> TariffVersion | None:
        """The version in force at ``instant`` (latest effective_from <= instant), or None."""
        i = bisect.bisect_right([v.effective_from for v in self.versions], instant)
        return self.versions[i - 1] if i else None

    def changes_between(self, start: datetime, end: datetime) -> list[datetime]:
        return [v.effective_from for v in self.versions if start < v.effective_from < end]


def local_midnights(start: datetime, end: datetime, zone: ZoneInfo) -> list[datetime]:
    """Local midnights strictly inside (start, end)."""
    day = start.astimezone(zone).date() + timedelta(days=1)
    out = []
    while (m := datetime.combine(day, time(0), zone)) < end:
        out.append(m)
        day += timedelta(days=1)
    return out
