"""Control goes on past a fact whose fold raises: it is listed rejected, everything else folds."""

from __future__ import annotations

from libs.events.control import Action, CommandRequested
from libs.stack.processor import Inbound
from services.control.worker import ControlState
from tests.services.control.helpers import P, env
from tests.services.control.test_worker import POLICY, T, opened, raised, requests


def poison() -> CommandRequested:
    """An attempt whose number is not a number: ``int()`` raises in the fold."""
    return CommandRequested(**env(T, "m1"), command_id="c-x", meter_id="m1", action=Action.TRIP,
                            requested_by="policy:arrears", reason="retry", params={"retry_of": "c-1", "attempt": "x"})  # fmt: skip


def test_a_fact_that_raises_is_rejected_and_the_rest_of_its_record_folds() -> None:
    state = ControlState(POLICY)
    bad = poison()
    out = state.handle([
        Inbound(0, "mf.commands", 0, 4, b"k", [bad]),
        Inbound(0, "mf.alarms", 0, 9, b"k", [opened("a1", "m1"), bad, raised("a1", T)]),
    ])  # fmt: skip
    assert [(r.record.topic, r.record.offset, r.error_type) for r in state.rejected] == [
        ("mf.commands", 4, "ValueError"),
        ("mf.alarms", 9, "ValueError"),
    ]
    trips = requests([e for o in out for e in state.codec.decode(o.value)])
    assert [(c.project_id, c.meter_id, c.action) for c in trips] == [(P, "m1", Action.TRIP)]
    assert "c-x" not in state.attempts
