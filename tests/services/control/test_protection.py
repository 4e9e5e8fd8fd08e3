from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from libs.events import control as f
from libs.events.control import Action
from services.control.domain.policy import MeterPolicy, step
from services.control.domain.protection import LoadLimit, MalignantRule
from tests.services.control.helpers import M, P, at, op, reading

T = at(2024, 3, 5, 21, 0)
RULE = MalignantRule(min_step_kw=Decimal("0.8"), min_power_factor=Decimal("0.95"), sustain_readings=3)
LIMIT = LoadLimit(limit_kw=Decimal("1.5"), sustain_s=60, restore_delay_s=300, max_restores_per_day=2)


def minutes(n: float):
    return T + timedelta(minutes=n)


def run(state, items):
    out = []
    for when, fact in items:
        state, commands = step(state, fact, when)
        out += [(when, c.action, c.requested_by) for c in commands]
    return state, out


def test_malignant_heater_signature_worked_example() -> None:
    """Laptop 0.12 kW at pf 0.62; a 1 kW heater joins: +1 kW at pf 0.98 for 3 readings → trip."""
    state = MeterPolicy(project_id=P, meter_id=M, malignant_rule=RULE)
    state, out = run(
        state,
        [
            (minutes(0), reading(minutes(0), "0.12", "0.62")),
            (minutes(1), reading(minutes(1), "1.13", "0.98")),  # step 1
            (minutes(2), reading(minutes(2), "1.12", "0.97")),  # step 2
            (minutes(3), reading(minutes(3), "1.14", "0.98")),  # step 3: detected
        ],
    )
    assert out == [(minutes(3), Action.TRIP, "policy:malignant_load")]
    # auto-restore after 180 s (the rule's default)
    state, out = run(state, [(minutes(5), None), (minutes(6), None)])
    assert out == [(minutes(6), Action.CLOSE, "policy:malignant_load")]
    # the heater is still plugged in: a step from zero, detected again
    state, out = run(state, [(minutes(7 + i), reading(minutes(7 + i), "1.13", "0.98")) for i in range(3)])
    assert out == [(minutes(9), Action.TRIP, "policy:malignant_load")]


def test_inductive_or_interrupted_steps_are_not_malignant() -> None:
    state = MeterPolicy(project_id=P, meter_id=M, malignant_rule=RULE)
    state, out = run(
        state,
        [
            (minutes(0), reading(minutes(0), "0.10", "0.60")),
            (minutes(1), reading(minutes(1), "1.20", "0.80")),  # a compressor: big step, low pf
            (minutes(2), reading(minutes(2), "1.20", "0.80")),
            (minutes(3), reading(minutes(3), "1.20", "0.80")),
            (minutes(4), reading(minutes(4), "2.10", "0.97")),  # resistive step over 1.2 ...
            (minutes(5), reading(minutes(5), "2.10", "0.97")),
            (minutes(6), reading(minutes(6), "1.20", "0.80")),  # ... interrupted before 3 readings
            (minutes(7), reading(minutes(7), "2.10")),  # no power factor: cannot judge
        ],
    )
    assert out == []


def test_whitelisted_meter_is_never_tripped() -> None:
    state = MeterPolicy(
        project_id=P, meter_id=M, malignant_rule=RULE.model_copy(update={"whitelisted": True})
    )
    _, out = run(state, [(minutes(i), reading(minutes(i), "0.1" if i == 0 else "2", "1")) for i in range(5)])
    assert out == []


def test_load_control_needs_a_sustained_window() -> None:
    state = MeterPolicy(project_id=P, meter_id=M, load_limit=LIMIT)
    _, out = run(
        state,
        [
            (minutes(0), reading(minutes(0), "2.0")),
            (minutes(0.5), reading(minutes(0.5), "1.0")),  # dips below: window restarts
            (minutes(1), reading(minutes(1), "2.0")),
            (minutes(1.5), reading(minutes(1.5), "2.0")),  # 30 s over: not yet
            (minutes(2), reading(minutes(2), "2.0")),  # 60 s over: trip
        ],
    )
    assert out == [(minutes(2), Action.TRIP, "policy:load_control")]


def test_load_control_restore_limit_locks_until_operator_releases() -> None:
    """max 2 restores a day: trips 1 and 2 restore after 5 min, trip 3 stays off."""
    state = MeterPolicy(project_id=P, meter_id=M, load_limit=replace_sustain(LIMIT))
    actions = []
    for k in range(3):
        t0 = minutes(10 * k)
        state, out = run(state, [(t0, reading(t0, "3.0")), (t0 + timedelta(minutes=5), None)])
        actions += [a for _, a, _ in out]
    assert actions == [Action.TRIP, Action.CLOSE, Action.TRIP, Action.CLOSE, Action.TRIP]
    assert state.load.breaker.locked
    # next morning: still locked (the lockout does not expire at midnight)
    state, out = run(state, [(at(2024, 3, 6, 8, 0), None)])
    assert out == []
    state, out = run(state, [(minutes(40), op(f.LockoutReleased, minutes(40), operator="op-7"))])
    assert out == [(minutes(40), Action.CLOSE, "op-7")]


def test_restore_count_is_per_local_day() -> None:
    limit = replace_sustain(LIMIT).model_copy(update={"max_restores_per_day": 1})
    state = MeterPolicy(project_id=P, meter_id=M, load_limit=limit)
    late, early = at(2024, 3, 5, 23, 50), at(2024, 3, 6, 0, 10)  # 15:50 / 16:10 UTC: the local day decides
    state, _ = run(state, [(late, reading(late, "3")), (late + timedelta(minutes=5), None)])
    state, out = run(state, [(early, reading(early, "3")), (early + timedelta(minutes=5), None)])
    assert [a for _, a, _ in out] == [Action.TRIP, Action.CLOSE]
    assert not state.load.breaker.locked


def test_keep_power_suspends_detection() -> None:
    state = MeterPolicy(project_id=P, meter_id=M, load_limit=replace_sustain(LIMIT))
    state, _ = step(state, op(f.KeepPowerSet, T), T)
    state, out = run(state, [(minutes(i), reading(minutes(i), "9")) for i in range(5)])
    assert out == [] and state.load.breaker.trips == ()


def replace_sustain(limit: LoadLimit) -> LoadLimit:
    return limit.model_copy(update={"sustain_s": 0})
