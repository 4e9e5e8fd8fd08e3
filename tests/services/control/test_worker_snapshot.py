"""Control's snapshot of a site: a copy taken when asked for, written in pieces, read back the same."""

from __future__ import annotations

import asyncio

from libs.events import AlarmRaised
from libs.events.base import Event
from libs.events.billing import AlarmKind
from libs.events.control import CommandRequested
from services.billing.testing import at, scenario
from services.control.worker import ControlState


def _arrears(account: str) -> AlarmRaised:
    return AlarmRaised(
        project_id="p", subject_id=account, alarm_id=f"al-{account}", kind=AlarmKind.ARREARS,
        severity=3, message="arrears", time=at(2024, 3, 1, 12),
    )  # fmt: skip


def _meters(state: ControlState) -> dict[tuple[str, str], tuple[object, ...]]:
    return {k: (m.policy, m.commands, m.clock, m.wake) for k, m in state.meters.items()}


def test_a_snapshot_of_a_site_is_the_state_when_taken() -> None:
    reference, _ = scenario("p", accounts=300, hours=1, seed=4)
    stream: list[Event] = [_arrears(f"p-a{i}") for i in range(0, 300, 3)]  # trips a third of them
    state = ControlState()
    for fact in reference:
        state.fold(fact)
    expected = (_meters(state), dict(state.index), set(state.active), dict(state.models), state.directory)
    later = state.snapshot(0)
    assert len(later.containers) >= 3  # meters, the directory's accounts, models… in pieces
    for fact in stream:  # the fold goes on while the snapshot waits for the writer
        state.fold(fact)
    assert _meters(state) != expected[0]

    restored = ControlState()
    restored.restore(0, later())
    got = (_meters(restored), restored.index, restored.active, restored.models, restored.directory)
    assert got == expected
    for fact in stream:
        restored.fold(fact)
    assert _meters(restored) == _meters(state)


def test_commands_held_by_a_replay_survive_a_snapshot_taken_before_it_ends() -> None:
    """A rebalance mid-replay snapshots the state; the next owner restores it at the snapshot's
    offsets, past the alarm, so only the held command can still trip the meter."""

    async def ends() -> dict[str, int]:
        return {"mf.control-in:0": 10}

    async def scenario_() -> None:
        reference, _ = scenario("p", accounts=3, hours=1, seed=4)
        state = ControlState(end_offsets=ends)
        state.restore(0, None)  # a replay from nothing: records below offset 10 are historic
        await asyncio.sleep(0)  # the end offsets are read
        for fact in reference:
            state.fold(fact, hold=True)
        assert state.fold(_arrears("p-a1"), hold=True) == []  # held, not sent
        assert state.held
        blob = state.snapshot(0)()  # revoked here: written with the replay unfinished

        restored = ControlState(end_offsets=ends)
        restored.restore(0, blob)
        restored.catchup.positions = {"mf.control-in:0": 10}  # applied to the end
        await asyncio.sleep(0)
        sent = [e for e in restored.tick(at(2024, 3, 1, 12, 1).timestamp()) if e.topic == "mf.commands"]
        trips = [e for o in sent for e in restored.codec.decode(o.value) if isinstance(e, CommandRequested)]
        assert [(t.meter_id, t.action.value) for t in trips] == [("p-m1", "trip")]

    asyncio.run(scenario_())
