"""Control's snapshot of a site: a copy taken when asked for, written in pieces, read back the same."""

from __future__ import annotations

from libs.events import AlarmRaised
from libs.events.base import Event
from libs.events.billing import AlarmKind
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
