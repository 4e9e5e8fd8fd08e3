from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from libs.events import MeterReplaced, Rate
from services.billing.domain.consumption import (
    Anomaly,
    Delta,
    Ignored,
    MeterState,
    apportion,
    observe,
    registered,
    replaced,
)
from tests.services.billing.helpers import P, at, d, meter, reading

T0 = at(2024, 3, 1, 0)


def fold(state, *readings):
    outcomes = []
    for r in readings:
        state, out = observe(state, r)
        outcomes.append(out)
    return state, outcomes


def fresh(**kw):
    return registered(None, meter(**kw))


def test_first_reading_is_the_baseline_then_deltas_per_rate():
    _, outs = fold(
        fresh(),
        reading(T0, 100, peak=60, valley=40),
        reading(T0 + timedelta(hours=1), 103, peak=61, valley=42),
    )
    assert outs[0] == Ignored("baseline")
    assert isinstance(outs[1], Delta)
    assert outs[1].total == 3 and outs[1].by_rate == {Rate.PEAK: 1, Rate.VALLEY: 2}


def test_duplicates_and_out_of_order_never_charge():
    r1, r2, r3 = (reading(T0 + timedelta(hours=h), 100 + h) for h in range(3))
    again = reading(T0 + timedelta(hours=2), 102, eid="other-id")  # same meter_time, new id
    _, outs = fold(fresh(), r1, r3, r2, r3, again)
    assert [type(o).__name__ for o in outs] == ["Ignored", "Delta", "Ignored", "Ignored", "Ignored"]
    assert [o.reason for o in outs if isinstance(o, Ignored)] == [
        "baseline",
        "out_of_order",
        "duplicate",
        "duplicate",
    ]


def test_lower_sequence_is_out_of_order_even_with_a_later_clock():
    _, outs = fold(fresh(), reading(T0, 100, seq=5), reading(T0 + timedelta(hours=1), 101, seq=4))
    assert outs[1] == Ignored("out_of_order")


def test_rollover_from_register_capacity():
    _, outs = fold(
        fresh(digits=8, decimals=2), reading(T0, "999999.99"), reading(T0 + timedelta(hours=1), "0.12")
    )
    assert isinstance(outs[1], Delta) and outs[1].total == Decimal("0.13")


def test_multiplier_applies_to_deltas():
    _, outs = fold(fresh(multiplier=40), reading(T0, "10.00"), reading(T0 + timedelta(hours=1), "10.50"))
    assert isinstance(outs[1], Delta) and outs[1].total == 20


def test_negative_and_implausible_deltas_are_anomalies_and_a_spike_is_forgiven():
    s, outs = fold(
        fresh(),
        reading(T0, 1000),
        reading(T0 + timedelta(hours=1), 900),  # backwards, far from capacity: not a rollover
        reading(T0 + timedelta(hours=2), 5000),  # 4000 kWh in an hour from the baseline
        reading(T0 + timedelta(hours=3), 1003),  # plausible from the baseline again
    )
    assert [o.reason for o in outs[1:3] if isinstance(o, Anomaly)] == ["negative", "implausible"]
    assert isinstance(outs[3], Delta) and outs[3].start == T0 and outs[3].total == 3
    assert s.suspect is None


def test_a_real_jump_is_confirmed_by_the_next_reading_and_rebaselines():
    _, outs = fold(
        fresh(), reading(T0, 1000), reading(T0 + timedelta(hours=1), 5), reading(T0 + timedelta(hours=2), 7)
    )
    assert isinstance(outs[1], Anomaly)
    assert isinstance(outs[2], Delta) and outs[2].total == 2 and outs[2].start == T0 + timedelta(hours=1)


def test_replacement_charges_the_old_meter_and_starts_from_the_new():
    s, _ = fold(fresh(), reading(T0, 500))
    swap = MeterReplaced(
        project_id=P,
        subject_id="m1",
        meter_id="m1",
        old_address="1",
        new_address="2",
        final_registers={"active_import_kwh": {Rate.TOTAL: d(510)}},
        initial_registers={"active_import_kwh": {Rate.TOTAL: d(0)}},
        replaced_at=T0 + timedelta(hours=2),
    )
    s, out = replaced(s, swap)
    assert isinstance(out, Delta) and out.total == 10
    assert replaced(s, swap)[1] == Ignored("duplicate")
    s, outs = fold(s, reading(T0 + timedelta(hours=1), 505), reading(T0 + timedelta(hours=3), 4))
    assert outs[0] == Ignored("before_replacement")
    assert isinstance(outs[1], Delta) and outs[1].total == 4


def test_frozen_and_register_less_readings_are_ignored():
    frozen = reading(T0, 1).model_copy(update={"frozen": "daily:2024-03-01"})
    empty = reading(T0).model_copy(update={"registers": {}})
    assert observe(MeterState("m1"), frozen)[1] == Ignored("frozen")
    assert observe(MeterState("m1"), empty)[1] == Ignored("no_register")


@given(
    units=st.decimals(min_value=0, max_value=10**6, places=4),
    cuts=st.lists(st.integers(min_value=-10, max_value=10_000), max_size=8),
    span=st.integers(min_value=1, max_value=10_000),
)
def test_apportioning_sums_exactly_and_is_never_negative(units, cuts, span):
    start = T0
    end = start + timedelta(minutes=span)
    segments = apportion(
        start, end, {Rate.TOTAL: units, Rate.PEAK: units / 3}, [start + timedelta(minutes=c) for c in cuts]
    )
    assert sum(s.units[Rate.TOTAL] for s in segments) == units
    assert sum(s.units[Rate.PEAK] for s in segments) == units / 3
    assert all(s.units[Rate.TOTAL] >= 0 for s in segments)
    assert segments[0].start == start and segments[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))


@given(
    start=st.decimals(min_value=0, max_value="999999.99", places=2),
    step=st.decimals(min_value=0, max_value=100, places=2),
)
def test_rollover_property(start, step):
    capacity = Decimal(1_000_000)
    end = (start + step) % capacity
    _, outs = fold(fresh(), reading(T0, start), reading(T0 + timedelta(hours=1), end))
    assert isinstance(outs[1], Delta) and outs[1].total == step
