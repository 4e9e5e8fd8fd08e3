"""The decider goes on past a fact whose fold raises: it is listed rejected, everything else folds."""

from __future__ import annotations

from libs.events import CommandRequested, NotificationRequested
from libs.events.control import Action
from libs.stack.processor import Inbound
from tests.services.notify.test_worker import NOW, arrears, opened, recharge, state


def poison(command_id: str = "cmd-x") -> CommandRequested:
    # "²".isdigit() is true but int("²") raises: an attempt number the fold cannot read
    return CommandRequested(
        project_id="p", subject_id="m-acc-1", command_id=command_id, meter_id="m-acc-1", action=Action.CLOSE,
        requested_by="policy:arrears", reason="retry", params={"retry_of": "cmd-1", "attempt": "²"}, time=NOW,
    )  # fmt: skip


def test_a_fact_that_raises_is_rejected_and_the_rest_of_its_record_folds() -> None:
    s = state()
    bad = poison()
    out = s.handle([Inbound(0, "mf.commands", 0, 7, b"k", [opened(), bad, recharge()])])
    assert [(r.record.offset, r.event, r.error_type) for r in s.rejected] == [(7, bad, "ValueError")]
    assert out  # the recharge after the poison is told
    assert ("p", "cmd-x") not in s.directory.attempts


def test_a_waiting_fact_that_raises_when_released_is_rejected_and_the_others_go_on() -> None:
    s = state()
    bad = poison()
    s.directory.waiting[("p", "acc-1")] = [bad, arrears()]  # as if it had waited for its account
    out = s.handle([Inbound(0, "mf.billing", 0, 3, b"k", [opened()])])
    (rejected,) = s.rejected
    assert rejected.waited and rejected.event is bad and rejected.record.offset == 3
    assert any(isinstance(e, NotificationRequested) for e in s.codec.decode(out[0].value))  # the arrears
