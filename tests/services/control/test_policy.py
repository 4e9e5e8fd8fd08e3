from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events import MeterRegistered
from libs.events import control as f
from libs.events.base import Event
from libs.events.control import Action, CommandRequested, Supply
from services.control.domain.policy import RECENT_IDS, MeterPolicy, decide, desired, next_wake, step
from services.control.domain.protection import Breaker, LoadLimit, LoadWatch, MalignantRule, MalignantWatch
from services.control.domain.schedules import TimeControl
from tests.services.control.helpers import M, P, arrears, arrears_cleared, at, env, op, reading

NOW = at(2024, 6, 12, 12, 0)
HOLD = Breaker(restore_at=NOW + timedelta(hours=1))
ALWAYS_OFF = TimeControl(off="* * * * *", on="0 0 1 1 *")

# each input switched on in a state, and the supply it asks for; highest priority first
INPUTS: dict[str, tuple[dict[str, object], Supply]] = {
    "forced_on": ({"forced": op(f.ForcedStateSet, NOW, state=Supply.ON)}, Supply.ON),
    "forced_off": ({"forced": op(f.ForcedStateSet, NOW, state=Supply.OFF)}, Supply.OFF),
    "socket_reset": ({"reset": op(f.SocketResetRequested, NOW, off_seconds=60)}, Supply.OFF),
    "keep_power": ({"keep_power": op(f.KeepPowerSet, NOW)}, Supply.ON),
    "prepaid": ({"arrears": True}, Supply.OFF),
    "load_control": ({"load": LoadWatch(breaker=HOLD)}, Supply.OFF),
    "malignant_load": ({"malignant": MalignantWatch(breaker=HOLD)}, Supply.OFF),
    "time_control": ({"schedule": ALWAYS_OFF}, Supply.OFF),
}
ORDER = list(INPUTS)


def source(name: str) -> str:
    return "forced" if name.startswith("forced") else name


def fresh() -> MeterPolicy:
    return MeterPolicy(project_id=P, meter_id=M)


@pytest.mark.parametrize(("name"), ORDER)
def test_each_input_alone_decides(name: str) -> None:
    fields, supply = INPUTS[name]
    verdict = desired(replace(fresh(), **fields), NOW)  # type: ignore[arg-type]
    assert (verdict.supply, verdict.source) == (supply, source(name))


@pytest.mark.parametrize(
    ("high", "low"),
    [(h, lo) for h, lo in itertools.combinations(ORDER, 2) if {h, lo} != {"forced_on", "forced_off"}],
)
def test_priority_matrix_higher_input_wins(high: str, low: str) -> None:
    state = replace(fresh(), **INPUTS[low][0], **INPUTS[high][0])  # type: ignore[arg-type]
    verdict = desired(state, NOW)
    assert (verdict.supply, verdict.source) == (INPUTS[high][1], source(high))
    opposite = Supply.OFF if INPUTS[high][1] is Supply.ON else Supply.ON
    commands = decide(replace(state, commanded=opposite, wanted=opposite), None, NOW)
    assert [c.action for c in commands] == [Action.CLOSE if INPUTS[high][1] is Supply.ON else Action.TRIP]
    expected_by = "op-1" if source(high) in {"forced", "socket_reset", "keep_power"} else f"policy:{high}"
    assert commands[0].requested_by == expected_by


def test_nothing_active_means_on() -> None:
    assert desired(fresh(), NOW).supply is Supply.ON


def test_arrears_trips_and_recharge_restores_once() -> None:
    s, c1 = step(fresh(), arrears(NOW), NOW)
    s, c2 = step(s, arrears(NOW), NOW)  # a second alarm (new id) changes nothing
    s, c3 = step(s, arrears_cleared(NOW + timedelta(minutes=5)), NOW + timedelta(minutes=5))
    assert [c.action for c in c1 + c2 + c3] == [Action.TRIP, Action.CLOSE]
    assert c1[0].requested_by == "policy:prepaid" and c1[0].reason == "arrears"
    assert c3[0].requested_by == "policy:prepaid" and "arrears" in c3[0].reason


def test_keep_power_blocks_arrears_trip_and_sets_meter_flag() -> None:
    s, c1 = step(fresh(), op(f.KeepPowerSet, NOW), NOW)
    s, c2 = step(s, arrears(NOW), NOW)
    s, c3 = step(s, op(f.KeepPowerCleared, NOW, operator="op-2"), NOW)
    assert [c.action for c in c1] == [Action.KEEP_POWER_ON]
    assert c2 == []
    assert [(c.action, c.requested_by) for c in c3] == [
        (Action.KEEP_POWER_OFF, "op-2"),
        (Action.TRIP, "policy:prepaid"),
    ]


def test_forced_off_then_cleared_restores_by_the_clearing_operator() -> None:
    s, c1 = step(fresh(), op(f.ForcedStateSet, NOW, state=Supply.OFF, reason="maintenance"), NOW)
    s, c2 = step(s, op(f.ForcedStateCleared, NOW, operator="op-9"), NOW)
    assert [(c.action, c.requested_by) for c in c1 + c2] == [(Action.TRIP, "op-1"), (Action.CLOSE, "op-9")]


def test_socket_reset_trips_then_closes_after_the_delay() -> None:
    s, c1 = step(fresh(), op(f.SocketResetRequested, NOW, off_seconds=10), NOW)
    assert next_wake(s, NOW) == NOW + timedelta(seconds=10)
    s, c2 = step(s, None, NOW + timedelta(seconds=9))
    s, c3 = step(s, None, NOW + timedelta(seconds=10))
    assert [c.action for c in c1] == [Action.TRIP] and c2 == []
    assert [c.action for c in c3] == [Action.CLOSE]


@pytest.mark.parametrize("medium", ["water", "gas"])
def test_water_and_gas_meters_get_valve_commands(medium: str) -> None:
    reg = MeterRegistered(
        **env(NOW), meter_id=M, address="1", protocol="cjt188", model="LXS", medium=medium,
        concentrator_id="c1", bus_id="b1",
    )  # fmt: skip
    s, _ = step(fresh(), reg, NOW)
    s, c1 = step(s, arrears(NOW), NOW)
    s, c2 = step(s, arrears_cleared(NOW), NOW)
    assert [c.action for c in c1 + c2] == [Action.VALVE_CLOSE, Action.VALVE_OPEN]


def test_manual_trip_is_not_fought() -> None:
    manual = CommandRequested(
        **env(NOW), command_id="x", meter_id=M, action=Action.TRIP, requested_by="op-3", reason="manual"
    )
    s, _ = step(fresh(), manual, NOW)
    s, c = step(s, reading(NOW, 0.1, 0.5), NOW)
    assert c == [] and s.commanded is Supply.OFF


# ---- properties -------------------------------------------------------------------------------

T0 = at(2024, 6, 12, 8, 0)


Factory = Callable[[datetime], Event] | None


def _facts() -> st.SearchStrategy[Factory]:
    """Fact builders, stamped with the time at which the plan delivers them."""
    simple: list[Callable[[datetime], Event]] = [
        arrears,
        arrears_cleared,
        lambda t: op(f.KeepPowerSet, t),
        lambda t: op(f.KeepPowerCleared, t),
        lambda t: op(f.ForcedStateCleared, t),
        lambda t: op(f.LockoutReleased, t),
    ]
    forced = st.sampled_from(list(Supply)).map(lambda s: lambda t: op(f.ForcedStateSet, t, state=s))
    readings = st.tuples(st.decimals("0", "3", places=2), st.decimals("0.5", "1", places=2)).map(
        lambda pw: lambda t: reading(t, pw[0], pw[1])
    )
    return st.one_of(st.none(), st.sampled_from(simple), forced, readings, readings)


def _stamp(factories: list[Factory]) -> list[tuple[Event | None, int]]:
    return [(None if b is None else b(T0 + timedelta(minutes=3 * i)), 3 * i) for i, b in enumerate(factories)]


def _run(
    plan: list[tuple[Event | None, int]], start: MeterPolicy
) -> tuple[MeterPolicy, list[CommandRequested]]:
    state, out = start, []
    for fact, minute in plan:
        state, commands = step(state, fact, T0 + timedelta(minutes=minute))
        out += commands
    return state, out


def _configured() -> MeterPolicy:
    return replace(
        fresh(),
        load_limit=LoadLimit(limit_kw=Decimal(2), sustain_s=0, restore_delay_s=120, max_restores_per_day=2),
        malignant_rule=MalignantRule(sustain_readings=2, restore_delay_s=60, max_restores_per_day=1),
        schedule=TimeControl(off="30 9 * * *", on="45 9 * * *"),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(_facts(), max_size=40), st.data())
def test_redelivery_never_emits_extra_commands(facts: list[Factory], data: st.DataObject) -> None:
    plan = _stamp(facts)
    real = [(fact, minute) for fact, minute in plan if fact is not None]
    redelivered = list(plan)
    for fact, minute in data.draw(st.lists(st.sampled_from(real), max_size=20)) if real else []:
        later = data.draw(st.integers(minute, 3 * len(facts)))
        pos = next((i for i, (_, mi) in enumerate(redelivered) if mi > later), len(redelivered))
        redelivered.insert(pos, (fact, redelivered[pos - 1][1] if pos else later))
    once = _run(plan, _configured())
    again = _run(redelivered, _configured())
    assert [c.command_id for c in again[1]] == [c.command_id for c in once[1]]
    assert again[0] == once[0]


@settings(max_examples=150, deadline=None)
@given(st.lists(_facts(), max_size=40))
def test_supply_commands_alternate_and_repeated_readings_are_silent(facts: list[Factory]) -> None:
    state, out = _configured(), []
    for fact, minute in _stamp(facts):
        now = T0 + timedelta(minutes=minute)
        state, commands = step(state, fact, now)
        out += commands
        state, echo = step(state, None, now)  # the same instant again: nothing new
        assert echo == []
    supply = [c.action for c in out if c.action in (Action.TRIP, Action.CLOSE)]
    assert all(a != b for a, b in itertools.pairwise([Action.CLOSE, *supply]))


def test_a_meter_remembers_a_bounded_window_of_ids_and_its_newest_reading() -> None:
    """A year of readings and many operator facts keep the meter's state small; a reading not
    newer than the newest observed (a redelivery, or stale) changes nothing."""
    limit = LoadLimit(limit_kw=Decimal(5), sustain_s=60)
    state = replace(fresh(), load_limit=limit)
    for minute in range(2000):
        state, _ = step(state, reading(NOW + timedelta(minutes=minute), 1), NOW + timedelta(minutes=minute))
    for i in range(200):
        keep = op(f.KeepPowerCleared if i % 2 else f.KeepPowerSet, NOW + timedelta(days=2, seconds=i))
        state, _ = step(state, keep, keep.time)
    assert len(state.seen) == RECENT_IDS
    assert state.reading_mark is not None and state.reading_mark[0] == NOW + timedelta(minutes=1999)
    over = reading(NOW + timedelta(days=3), 9)
    once, _ = step(state, over, over.time)
    assert once.load != state.load  # the reading was observed: the load is over its limit
    again, commands = step(once, over, over.time + timedelta(seconds=1))
    assert (again, commands) == (once, [])
    stale, commands = step(once, reading(NOW + timedelta(days=2), 9), over.time)
    assert (stale, commands) == (once, [])
