"""Price a consumption delta under a tariff book: charge lines in integer fen.

Rules:

- **Segments**: the interval between two readings is cut at local midnights (so day, month
  and year periods never mix), at tariff version changes, at the account's opening time, and —
  for a time-of-use tariff on a meter that reports only a total — at band starts. Units are
  apportioned linearly in time (:func:`consumption.apportion`). Each segment is priced under the
  version in force at its start; segments before the account opened or before any version are
  not charged (reported as ``uncharged``).
- **Rates**: a TOU tariff prices the meter's own sharp/peak/flat/valley registers when read,
  otherwise the total by the band in force at the segment start. Other tariffs price the total.
- **Tiers**: cumulative units per account, tariff and period (``YYYY-MM`` or ``YYYY`` in the
  tariff's zone) are filled in rate order sharp, peak, flat, valley, total. A surcharge does not
  depend on the rate, so that order changes amounts only by rounding.
- **Rounding**: lines of one delta with the same (version, category, component, rate, tier,
  price) are merged, then each line's amount is ``units × price_fen`` rounded half-up to an
  integer fen. The charge is the sum of its line amounts; nothing is re-rounded later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from libs.events.acquisition import Rate
from libs.events.trusted import trusted
from services.billing.domain.consumption import Delta, Segment, apportion
from services.billing.domain.facts import ChargeLine
from services.billing.domain.tariff import (
    TOU_RATES,
    Compound,
    Proportional,
    Single,
    TariffBook,
    TariffVersion,
    Tiered,
    Tou,
    local_midnights,
)

FILL_ORDER = (*TOU_RATES, Rate.TOTAL)
Key = tuple[int, str, str, Rate, int, Decimal]
Line = tuple[str, str, Rate, int, Decimal, Decimal]  # category, component, rate, tier, units, price


@dataclass(frozen=True)
class Charge:
    lines: tuple[ChargeLine, ...]
    tier_used: dict[str, Decimal]  # "<tariff_id>:<period>" -> cumulative units after this charge
    uncharged: Decimal  # units before opening / before any tariff version

    @property
    def amount_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)


def to_fen(units: Decimal, price_fen: Decimal) -> int:
    return int((units * price_fen).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _edges(book: TariffBook, delta: Delta, not_before: datetime) -> list[datetime]:
    start, end = delta.start, delta.end
    edges = [*book.changes_between(start, end), not_before]
    at_start = book.at(start)
    in_force = [v for v in book.versions if start < v.effective_from < end] + ([at_start] if at_start else [])
    for v in in_force:
        edges += local_midnights(start, end, v.body.zone)
        if delta.by_rate or not v.body.uses_rates():
            continue
        for table in v.body.tou_tables():
            day = start.astimezone(table.zone).date()
            while day <= end.astimezone(table.zone).date():
                edges += table.edges(day)
                day += timedelta(days=1)
    return edges


def _rate_units(plain: Single | Compound | Tou, seg: Segment, local: datetime) -> dict[Rate, Decimal]:
    if not isinstance(plain, Tou):
        return {Rate.TOTAL: seg.units[Rate.TOTAL]}
    by_rate: dict[Rate, Decimal] = {r: u for r, u in seg.units.items() if r is not Rate.TOTAL}
    return by_rate or {plain.rate_at(local): seg.units[Rate.TOTAL]}


def _plain_lines(
    plain: Single | Compound | Tou, seg: Segment, scale: Decimal, category: str
) -> Iterable[Line]:
    local = seg.start.astimezone(plain.zone)
    for rate, units in _rate_units(plain, seg, local).items():
        for component, price in plain.components(local, rate):
            yield category, component, rate, 0, units * scale, price


def _tier_split(tiered: Tiered, used: Decimal, units: Decimal) -> list[tuple[int, Decimal]]:
    out, lo = [], Decimal(0)
    for number, tier in enumerate(tiered.tiers, 1):
        hi = tier.up_to
        portion = (units + used if hi is None else min(units + used, hi)) - max(used, lo)
        if portion > 0:
            out.append((number, portion))
        lo = hi if hi is not None else lo
    return out


def _tiered_lines(tiered: Tiered, seg: Segment, used: Decimal) -> tuple[list[Line], Decimal]:
    """Lines of one segment under a tiered tariff, and the units it adds to the period."""
    local = seg.start.astimezone(tiered.zone)
    rate_units = _rate_units(tiered.base, seg, local) if tiered.base else {Rate.TOTAL: seg.units[Rate.TOTAL]}
    lines: list[Line] = []
    consumed = Decimal(0)
    for rate in FILL_ORDER:
        units = rate_units.get(rate, Decimal(0))
        if units <= 0:
            continue
        for number, portion in _tier_split(tiered, used + consumed, units):
            tier = tiered.tiers[number - 1]
            if tiered.base is None:
                components: tuple[tuple[str, Decimal], ...] = (("energy", tier.price_fen or Decimal(0)),)
            else:
                first, *rest = tiered.base.components(local, rate)
                components = ((first[0], first[1] + (tier.surcharge_fen or Decimal(0))), *rest)
            lines += [("", component, rate, number, portion, price) for component, price in components]
        consumed += units
    return lines, consumed


Window = tuple[datetime, datetime]


def window(book: TariffBook, delta: Delta) -> Window:
    """The widest interval around ``delta.start`` that no segment edge cuts (midnights, band
    starts, version changes), for deltas with the same kind of registers (by rate or total).

    A delta inside it is one segment (see :func:`price_delta`): readings every few minutes or
    hours fall inside one band of one day, and pricing them skips the edge search.
    """
    span = timedelta(days=2)
    probe = Delta(delta.meter_id, "", delta.start - span, delta.start + span, Decimal(0), delta.by_rate)
    edges = _edges(book, probe, probe.start)
    start = max((e for e in edges if e <= delta.start), default=probe.start)
    end = min((e for e in edges if e > delta.start), default=probe.end)
    return max(start, probe.start), min(end, probe.end)


# version, category, component, line rate, the register rate its units come from, scale, price
Template = tuple[int, str, str, Rate, Rate, Decimal, Decimal]


def templates(book: TariffBook, delta: Delta) -> tuple[Template, ...] | None:
    """The lines of one segment starting at ``delta.start``, as (rate, scale, price) templates
    that hold for every delta of the same kind of registers inside the same :func:`window` (no
    band, day or version edge inside it), or None when the version there is tiered (its lines
    depend on the period's use) or there is none."""
    version = book.at(delta.start)
    if version is None or isinstance(version.body, Tiered):
        return None
    probe = Segment(
        delta.start, delta.end, {Rate.TOTAL: Decimal(1), **dict.fromkeys(delta.by_rate, Decimal(1))}
    )  # one unit of every register: each line's units are its scale
    return tuple(
        # a TOU band prices the total when the meter reads no rates of its own
        (
            version.version,
            category,
            component,
            rate,
            rate if rate in delta.by_rate else Rate.TOTAL,
            scale,
            price,
        )
        for category, component, rate, _, scale, price in _segment_lines(version, probe, {})
    )


def price_delta(
    book: TariffBook,
    delta: Delta,
    tier_used: dict[str, Decimal],
    not_before: datetime,
    uncut: Window | None = None,
    cached: tuple[Template, ...] | None = None,
) -> Charge:
    """Charge lines for ``delta`` (see module rules); ``tier_used`` is not modified.

    ``uncut``: a :func:`window` of this book; a delta inside it (and after ``not_before``) is
    priced as one segment without searching for edges — the same result, faster. ``cached``:
    the :func:`templates` of that window, which price such a delta without the tariff's rules.
    """
    units = {Rate.TOTAL: delta.total, **delta.by_rate}
    merged: dict[Key, Decimal] = {}
    uncharged = Decimal(0)
    inside = (
        uncut is not None and uncut[0] <= delta.start and delta.end <= uncut[1] and not_before <= delta.start
    )
    if inside and cached is not None:
        for number, category, component, rate, source, scale, price in cached:
            key = (number, category, component, rate, 0, price)
            merged[key] = merged.get(key, Decimal(0)) + units[source] * scale
        return Charge(_lines(book, merged), tier_used, uncharged)
    used = dict(tier_used)
    if inside:
        segments = [Segment(delta.start, delta.end, units)]
    else:
        segments = apportion(delta.start, delta.end, units, _edges(book, delta, not_before))
    for seg in segments:
        version = book.at(seg.start)
        if version is None or seg.start < not_before:
            uncharged += seg.units[Rate.TOTAL]
            continue
        for category, component, rate, tier, u, price in _segment_lines(version, seg, used):
            key = (version.version, category, component, rate, tier, price)
            merged[key] = merged.get(key, Decimal(0)) + u
    return Charge(_lines(book, merged), used, uncharged)


def _lines(book: TariffBook, merged: dict[Key, Decimal]) -> tuple[ChargeLine, ...]:
    return tuple(
        trusted(  # every value computed here already has its declared type
            ChargeLine,
            {
                "tariff_id": book.tariff_id,
                "version": v,
                "category": cat,
                "component": comp,
                "rate": rate,
                "tier": tier,
                "units": u,
                "price_fen": price,
                "amount_fen": to_fen(u, price),
            },
        )
        for (v, cat, comp, rate, tier, price), u in merged.items()
        if u != 0
    )


def _segment_lines(version: TariffVersion, seg: Segment, used: dict[str, Decimal]) -> list[Line]:
    body = version.body
    if isinstance(body, Tiered):
        key = f"{version.tariff_id}:{body.period_key(seg.start.astimezone(body.zone))}"
        lines, consumed = _tiered_lines(body, seg, used.get(key, Decimal(0)))
        used[key] = used.get(key, Decimal(0)) + consumed
        return lines
    if isinstance(body, Proportional):
        return [line for s in body.shares for line in _plain_lines(s.tariff, seg, s.ratio, s.category)]
    return list(_plain_lines(body, seg, Decimal(1), ""))
