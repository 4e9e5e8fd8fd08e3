"""Per-rate consumption from successive cumulative readings of one meter (MISSION.md B1, pains list).

Rules (each has a test in tests/services/billing/test_consumption.py):

- **Time of a reading** is ``meter_time``, or ``received_at`` when the meter clock was not read.
- **Never twice, never backwards**: a reading is ignored when its event id was seen recently,
  when its time is not after the last accepted reading (same ``meter_time`` = duplicate, older =
  out of order), or when both carry a producer sequence and its sequence is not higher. The
  high-water (time, sequence) is what makes this correct; the recent-id window only names the
  reason. Frozen reads (``frozen`` set) are never charged.
- **Rollover**: a register that goes down is taken to have wrapped past its capacity
  ``10**(digits - decimals)`` (999999.99 → 0.12 is 0.13) when the wrapped delta is below a tenth
  of the capacity; otherwise the delta is negative → anomaly.
- **Plausibility**: a delta above ``max_units_per_hour × hours elapsed`` (after the CT/PT
  multiplier) plus one register step is an anomaly, not a charge.
- **After an anomaly** the baseline stays and the reading becomes the *suspect*: a later
  reading plausible from the baseline charges from the baseline (the suspect was a spike); one
  plausible only from the suspect re-baselines there (the meter really jumped, e.g. a swap nobody
  recorded) and charges suspect → reading. The gap baseline → suspect is never charged: the
  alarm asks an operator for a manual adjustment.
- **Replacement** (``MeterReplaced``): baseline → final registers of the old meter is charged
  at ``replaced_at``; the new meter's initial registers become the baseline; readings older than
  ``replaced_at`` are ignored, and so is a replacement at or before the last one applied (a
  repeat: its event id may have left the recent-id window, and applying it again would restart
  the registers at its initial reads and charge again what was counted since).
- **Apportioning** (:func:`apportion`): linear in time, per rate, between the two readings;
  cumulative shares are floored to 1e-6 units and the last segment takes the remainder, so the
  segments always sum exactly to the delta.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import msgspec

from libs.events.acquisition import Medium, MeterRegistered, MeterReplaced, Rate, ReadingRecorded
from services.billing.domain.evolve import evolve

Registers = dict[str, dict[Rate, Decimal]]
UNIT_STEP = Decimal("0.000001")
_US = timedelta(microseconds=1)
_US_PER_HOUR = Decimal(3_600_000_000)
_STEP = {d: Decimal(10) ** -d for d in range(0, 7)}  # one register step per decimals (0..6)
RECENT_IDS = 32
BILLED: dict[Medium, tuple[str, ...]] = {
    Medium.ELECTRICITY: ("active_import_kwh", "active_combined_kwh"),
    Medium.WATER: ("volume_m3",),
    Medium.HOT_WATER: ("volume_m3",),
    Medium.GAS: ("volume_m3",),
    Medium.HEAT: ("heat_kwh",),
}
MAX_PER_HOUR: dict[Medium, Decimal] = {
    Medium.ELECTRICITY: Decimal(200),  # kWh per hour ≈ a 200 kW load; a dormitory is far below
    Medium.WATER: Decimal(60),
    Medium.HOT_WATER: Decimal(30),
    Medium.GAS: Decimal(60),
    Medium.HEAT: Decimal(2000),
}


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    """A meter's registers at one time (untracked by the cyclic GC: see :mod:`.evolve`)."""

    time: datetime
    sequence: int
    registers: Registers


class MeterState(msgspec.Struct, frozen=True, gc=False):
    """What billing knows of one meter (untracked by the cyclic GC: see :mod:`.evolve`)."""

    meter_id: str
    medium: Medium = Medium.ELECTRICITY
    digits: int = 8
    decimals: int = 2
    multiplier: Decimal = Decimal(1)
    max_per_hour: Decimal | None = None  # None: the medium's default
    last: Snapshot | None = None
    suspect: Snapshot | None = None
    replaced_at: datetime | None = None
    recent_ids: tuple[str, ...] = ()

    @property
    def capacity(self) -> Decimal:
        return Decimal(10) ** (self.digits - self.decimals)

    def remember(self, event_id: str) -> MeterState:
        return evolve(self, recent_ids=(*self.recent_ids, event_id)[-RECENT_IDS:])


@dataclass(frozen=True)
class Delta:
    meter_id: str
    cause_id: str
    start: datetime
    end: datetime
    total: Decimal
    by_rate: dict[Rate, Decimal] = field(default_factory=dict)  # sharp/peak/flat/valley if read


@dataclass(frozen=True)
class Anomaly:
    meter_id: str
    cause_id: str
    reason: str  # negative | implausible | replacement_out_of_order
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ignored:
    reason: str  # duplicate | out_of_order | frozen | no_register | baseline | before_replacement


Outcome = Delta | Anomaly | Ignored


def registered(state: MeterState | None, fact: MeterRegistered) -> MeterState:
    base = state or MeterState(meter_id=fact.meter_id)
    return evolve(
        base,
        medium=fact.medium,
        digits=fact.register_digits,
        decimals=fact.register_decimals,
        multiplier=fact.multiplier,
    )


def _billed(state: MeterState, registers: Registers) -> dict[Rate, Decimal] | None:
    for name in BILLED[state.medium]:
        if name in registers:
            return registers[name]
    return None


def _register_delta(state: MeterState, old: Decimal, new: Decimal) -> Decimal | None:
    if new >= old:
        return new - old
    wrapped = new + state.capacity - old
    return wrapped if wrapped < state.capacity / 10 else None


def _delta(state: MeterState, old: Snapshot, new: Snapshot, cause_id: str) -> Delta | Anomaly:
    before, after = _billed(state, old.registers), _billed(state, new.registers)
    if before is None or after is None:
        return Anomaly(state.meter_id, cause_id, "negative", {"detail": "billed register missing"})
    raw: dict[Rate, Decimal] = {}
    for rate in sorted(before.keys() & after.keys()):
        d = _register_delta(state, before[rate], after[rate])
        if d is None:
            return Anomaly(
                state.meter_id,
                cause_id,
                "negative",
                {"rate": rate.value, "previous": str(before[rate]), "current": str(after[rate])},
            )
        raw[rate] = d * state.multiplier
    by_rate: dict[Rate, Decimal] = {r: u for r, u in raw.items() if r is not Rate.TOTAL}
    total = raw[Rate.TOTAL] if Rate.TOTAL in raw else sum(by_rate.values(), Decimal(0))
    hours = Decimal((new.time - old.time) // _US) / _US_PER_HOUR
    limit = (state.max_per_hour or MAX_PER_HOUR[state.medium]) * hours
    if total > limit + _STEP[state.decimals] * state.multiplier:
        return Anomaly(state.meter_id, cause_id, "implausible", {"units": str(total), "limit": str(limit)})
    return Delta(state.meter_id, cause_id, old.time, new.time, total, by_rate)


def observe(state: MeterState, fact: ReadingRecorded) -> tuple[MeterState, Outcome]:
    """Fold one reading into the meter; say what it means for billing."""
    if fact.frozen is not None:
        return state, Ignored("frozen")
    if fact.event_id in state.recent_ids:
        return state, Ignored("duplicate")
    at = fact.meter_time or fact.received_at
    if state.replaced_at is not None and at < state.replaced_at:
        return state, Ignored("before_replacement")
    last = state.last
    if last is not None:
        if at <= last.time:
            return state, Ignored("duplicate" if at == last.time else "out_of_order")
        if fact.sequence and last.sequence and fact.sequence <= last.sequence:
            return state, Ignored("out_of_order")
    if _billed(state, fact.registers) is None:
        return state, Ignored("no_register")
    snap = Snapshot(at, fact.sequence or (last.sequence if last else 0), fact.registers)
    recent = (*state.recent_ids, fact.event_id)[-RECENT_IDS:]  # as remember(), in one copy
    if last is None:
        return evolve(state, recent_ids=recent, last=snap), Ignored("baseline")
    outcome = _delta(state, last, snap, fact.event_id)
    if isinstance(outcome, Anomaly) and state.suspect is not None:
        confirmed = _delta(state, state.suspect, snap, fact.event_id)
        if isinstance(confirmed, Delta):
            return evolve(state, recent_ids=recent, last=snap, suspect=None), confirmed
    if isinstance(outcome, Anomaly):
        return evolve(state, recent_ids=recent, suspect=snap), outcome
    return evolve(state, recent_ids=recent, last=snap, suspect=None), outcome


def replaced(state: MeterState, fact: MeterReplaced) -> tuple[MeterState, Outcome]:
    """The old meter's final registers close its account; the new one's initial ones open."""
    if fact.event_id in state.recent_ids:
        return state, Ignored("duplicate")
    if state.replaced_at is not None and fact.replaced_at <= state.replaced_at:
        return state, Ignored("duplicate")  # a replacement at or before the last one applied: a repeat
    state = state.remember(fact.event_id)
    at = fact.replaced_at
    last = state.last
    seq = last.sequence if last else 0
    fresh = evolve(state, last=Snapshot(at, seq, fact.initial_registers), suspect=None, replaced_at=at)
    if last is None:
        return fresh, Ignored("baseline")
    if at <= last.time:
        return evolve(fresh, last=Snapshot(last.time, seq, fact.initial_registers)), Anomaly(
            state.meter_id, fact.event_id, "replacement_out_of_order", {"replaced_at": at.isoformat()}
        )
    return fresh, _delta(state, last, Snapshot(at, seq, fact.final_registers), fact.event_id)


@dataclass(frozen=True)
class Segment:
    start: datetime
    end: datetime
    units: dict[Rate, Decimal]


def apportion(
    start: datetime, end: datetime, units: dict[Rate, Decimal], edges: list[datetime]
) -> list[Segment]:
    """Split ``units`` over [start, end] at ``edges`` linearly in time; each rate sums exactly."""
    points = [start, *sorted({e for e in edges if start < e < end}), end]
    span = Decimal((end - start) // timedelta(microseconds=1))
    shares: dict[Rate, list[Decimal]] = {}
    for rate, total in units.items():
        cumulative = [Decimal(0)]
        for p in points[1:-1]:
            elapsed = Decimal((p - start) // timedelta(microseconds=1))
            cumulative.append((total * elapsed / span).quantize(UNIT_STEP, rounding=ROUND_FLOOR))
        cumulative.append(total)
        shares[rate] = [b - a for a, b in itertools.pairwise(cumulative)]
    return [
        Segment(points[i], points[i + 1], {r: s[i] for r, s in shares.items()})
        for i in range(len(points) - 1)
    ]
