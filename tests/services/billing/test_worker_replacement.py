"""A meter's clear or swap (``MeterReplaced`` on mf.registry) and its readings (mf.readings) give
the same books in whatever order a consumer fetches the two topics: the replacement is parked
until the first reading at or after it, and a reading that counts from a replacement not yet
folded (``registers_since``) waits for it."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events import (
    AccountOpened,
    MeterRegistered,
    Rate,
    ReadingRecorded,
    RechargeAccepted,
    TariffPublished,
)
from libs.events.acquisition import MeterReplaced, ReplacementReason
from libs.events.base import Event
from libs.events.billing import AlarmKind, AlarmRaised, BillingMode
from services.billing.domain import oracle
from services.billing.domain.facts import ChargeApplied
from services.billing.testing import ROUTE, TOU_PEAK_VALLEY, at
from services.billing.worker import BillingState

P = "p"
T0 = at(2024, 3, 1)
CAPACITY = Decimal(1_000_000)  # 8 digits, 2 decimals


def _reference(meters: int) -> tuple[list[Event], list[Event], list[Event]]:
    """(mf.tariffs, mf.registry, mf.billing) facts of ``meters`` prepaid accounts on a TOU tariff."""
    tariffs: list[Event] = [
        TariffPublished(event_id="t", project_id=P, subject_id="tou", tariff_id="tou", version=1, name="tou",
                        effective_from=at(2024, 1, 1), definition=TOU_PEAK_VALLEY, time=at(2024, 1, 1))
    ]  # fmt: skip
    registry: list[Event] = []
    billing: list[Event] = []
    for i in range(meters):
        registry.append(MeterRegistered(
            event_id=f"reg{i}", project_id=P, subject_id=f"m{i}", meter_id=f"m{i}", address=f"{i:012d}",
            protocol="dlt645-2007", model="DDSY", medium="electricity", concentrator_id="c1", bus_id="b1",
            time=at(2024, 1, 1),
        ))  # fmt: skip
        billing.append(AccountOpened(
            event_id=f"open{i}", project_id=P, subject_id=f"a{i}", account_id=f"a{i}", mode=BillingMode.PREPAID,
            meter_ids=(f"m{i}",), tariff_id="tou", holder="h", opened_by="op", time=at(2024, 1, 1),
        ))  # fmt: skip
        billing.append(RechargeAccepted(
            event_id=f"rc{i}", project_id=P, subject_id=f"a{i}", account_id=f"a{i}", amount_fen=50_000_000,
            idempotency_key=f"k{i}", operator_id="op", channel="cash", time=at(2024, 1, 1),
        ))  # fmt: skip
    return tariffs, registry, billing


def _reading(meter: str, hour: int, total: Decimal, since: datetime | None) -> ReadingRecorded:
    when = T0 + timedelta(hours=hour)
    return ReadingRecorded(
        event_id=f"r-{meter}-{hour}", project_id=P, subject_id=meter, sequence=hour + 1, meter_id=meter,
        registers={"active_import_kwh": {Rate.TOTAL: total}}, meter_time=when, received_at=when, route=ROUTE,
        time=when, registers_since=since,
    )  # fmt: skip


def _history(rng: random.Random, meter: str, hours: int) -> tuple[list[Event], list[Event]]:
    """(the meter's readings, its clears), as acquisition publishes them: each clear between two
    hourly reads, zeroing the registers; the reads after it name it in ``registers_since``."""
    total = Decimal(rng.choice([0, 5000, 999_000]))  # 999,000: a drop to 0 would look like a wrap
    readings: list[Event] = []
    clears: list[Event] = []
    since: datetime | None = None
    for h in range(hours):
        if h and rng.random() < 0.15:  # cleared at h - 0.5, after some more use
            final = total + Decimal(rng.randint(0, 150)) / 100
            replaced_at = T0 + timedelta(hours=h - 0.5)
            clears.append(MeterReplaced(
                event_id=f"clear-{meter}-{h}", project_id=P, subject_id=meter, meter_id=meter,
                old_address="1", new_address="1", replaced_at=replaced_at, time=replaced_at,
                final_registers={"active_import_kwh": {Rate.TOTAL: final % CAPACITY}},
                initial_registers={"active_import_kwh": {Rate.TOTAL: Decimal(0)}},
                reason=ReplacementReason.CLEARED,
            ))  # fmt: skip
            total, since = Decimal(0), replaced_at
        total += Decimal(rng.randint(0, 300)) / 100
        readings.append(_reading(meter, h, total % CAPACITY, since))
    return readings, clears


def _site(seed: int, meters: int = 3, hours: int = 30) -> dict[str, list[Event]]:
    rng = random.Random(seed)
    tariffs, registry, billing = _reference(meters)
    readings: list[Event] = []
    for i in range(meters):
        r, c = _history(rng, f"m{i}", hours)
        readings += r
        registry += c
    readings.sort(key=lambda e: e.time)
    registry.sort(key=lambda e: e.time)
    return {"tariffs": tariffs, "registry": registry, "billing": billing, "readings": readings}


def _fold(facts: list[Event]) -> tuple[BillingState, list[Event]]:
    state, out = BillingState(), []
    for fact in facts:
        out += state.fold(fact)
    return state, out


def _charges(out: list[Event]) -> dict[str, int]:
    return {e.event_id: e.amount_fen for e in out if isinstance(e, ChargeApplied)}


def _in_time_order(topics: dict[str, list[Event]]) -> list[Event]:
    return [*topics["tariffs"], *topics["billing"], *sorted([*topics["registry"], *topics["readings"]],
                                                            key=lambda e: _time(e))]  # fmt: skip


def _time(e: Event) -> datetime:
    if isinstance(e, MeterReplaced):
        return e.replaced_at
    return e.time if not isinstance(e, ReadingRecorded) else (e.meter_time or e.received_at)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_any_interleaving_of_the_topics_gives_the_books_of_time_order(seed: int) -> None:
    topics = _site(seed % 11)
    assert any(isinstance(e, MeterReplaced) for e in topics["registry"])  # every site clears a meter
    expected_state, expected_out = _fold(_in_time_order(topics))
    expected = {k: a.balance_fen for k, a in expected_state.books.accounts.items()}
    assert expected == oracle.balances(_in_time_order(topics))  # the independent oracle agrees
    assert not [
        e for e in expected_out if isinstance(e, AlarmRaised) and e.kind is AlarmKind.CONSUMPTION_ANOMALY
    ]
    # As a consumer of the four topics may fetch them: each topic in its own order, merged at random.
    rng = random.Random(seed)
    queues = [list(q) for q in topics.values()]
    merged: list[Event] = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        merged.append(q.pop(0))
    state, out = _fold(merged)
    assert {k: a.balance_fen for k, a in state.books.accounts.items()} == expected
    assert _charges(out) == _charges(expected_out)  # the same charges, to the fen, with the same ids
    assert not [e for e in out if isinstance(e, AlarmRaised) and e.kind is AlarmKind.CONSUMPTION_ANOMALY]
    assert not any(state.waiting.values()) and not state.parked


def test_each_extreme_order_gives_the_same_charges() -> None:
    """The registry fetched whole before any reading, and after every reading."""
    topics = _site(3)
    _, expected = _fold(_in_time_order(topics))
    first = [*topics["tariffs"], *topics["billing"], *topics["registry"], *topics["readings"]]
    last = [*topics["readings"], *topics["tariffs"], *topics["billing"], *topics["registry"]]
    for order in (first, last):
        state, out = _fold(order)
        assert _charges(out) == _charges(expected)
        assert not state.parked and not any(state.waiting.values())


def test_a_parked_replacement_and_the_readings_waiting_for_one_survive_a_snapshot() -> None:
    topics = _site(3)
    clear = next(e for e in topics["registry"] if isinstance(e, MeterReplaced))
    assert isinstance(clear, MeterReplaced)
    before = [e for e in topics["readings"] if _time(e) < clear.replaced_at]
    after = [e for e in topics["readings"] if _time(e) > clear.replaced_at and e.subject_id == clear.meter_id]
    state = BillingState()
    for fact in [*topics["tariffs"], *topics["billing"], *topics["registry"][:3], *before, clear]:
        state.fold(fact)
    key = (P, clear.meter_id)
    assert state.parked[key] == [clear]  # no reading at or after it yet: the final charge waits
    restored = BillingState()
    restored.restore(0, state.snapshot(0)())
    assert restored.parked == state.parked
    out = restored.fold(after[0])
    assert not restored.parked
    charges = [e for e in out if isinstance(e, ChargeApplied)]
    assert [c.causation_id for c in charges] == [
        clear.event_id,
        after[0].event_id,
    ]  # up to the clear, then after it
    # The other way round: a reading that counts from a clear not folded yet waits for it.
    state = BillingState()
    for fact in [*topics["tariffs"], *topics["billing"], *topics["registry"][:3], *before, after[0]]:
        state.fold(fact)
    assert state.waiting[f"meter:{P}/{clear.meter_id}"] == [after[0]]
    restored = BillingState()
    restored.restore(0, state.snapshot(0)())
    out = restored.fold(clear)
    assert [e.causation_id for e in out if isinstance(e, ChargeApplied)] == [
        clear.event_id,
        after[0].event_id,
    ]
    assert not any(restored.waiting.values()) and not restored.parked


def test_a_repeated_replacement_is_not_applied_again_however_late() -> None:
    topics = _site(3)
    clear = next(e for e in topics["registry"] if isinstance(e, MeterReplaced))
    in_order = _in_time_order(topics)
    state, _ = _fold(in_order)
    balances = {k: a.balance_fen for k, a in state.books.accounts.items()}
    # redelivered long after its id left the meter's window of recent ids
    assert state.fold(clear) == [] and not state.parked
    later = _reading(clear.meter_id, 40, Decimal("999"), clear.replaced_at)
    assert isinstance(clear, MeterReplaced)
    charged = [e for e in state.fold(later) if isinstance(e, ChargeApplied)]
    last = next(e for e in reversed(topics["readings"]) if e.subject_id == clear.meter_id)
    assert isinstance(last, ReadingRecorded)
    units = Decimal(999) - last.registers["active_import_kwh"][Rate.TOTAL]
    assert (
        sum(line.units for c in charged for line in c.lines) == units
    )  # from the last reading, not from zero
    assert balances  # (the books before the repeat were complete)
