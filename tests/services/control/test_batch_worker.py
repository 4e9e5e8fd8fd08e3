"""Batches in the control worker (C5): issue prices re-sends the C8 parameter download, time and
load control record the policy only, clear goes out as its own action."""

from __future__ import annotations

from datetime import timedelta

from libs.events.base import Event
from libs.events.control import (
    Action,
    BatchRequested,
    CommandAcknowledged,
    CommandRequested,
    CommandSent,
    Operation,
    TimeControl,
    TimeControlSet,
)
from services.control.domain import batch as batches
from services.control.domain.batch import Outcome
from services.control.worker import ControlState
from tests.services.control.helpers import env
from tests.services.control.test_worker import POLICY, TOU, T, opened, registered, requests, tariff


def batch(op: Operation, *meters: str, batch_id: str = "b1", **kw: object) -> BatchRequested:
    return BatchRequested(**env(T + timedelta(minutes=5), batch_id), batch_id=batch_id, operation=op,
                          meter_ids=meters, operator_id="op-7", **kw)  # type: ignore[arg-type]  # fmt: skip


def without_ids(c: CommandRequested) -> tuple[Action, dict[str, str]]:
    return c.action, c.params


def test_issue_prices_resends_the_parameter_download_each_meter_already_has() -> None:
    state = ControlState(POLICY)
    state.fold(registered("m1", "DDSY1352"))  # keeps prices
    state.fold(registered("m2", "DTZY1296"))  # billed by the platform: keeps none
    state.fold(tariff(1, TOU))
    (c8,) = requests(state.fold(opened("a1", "m1", "m2")))
    out = state.fold(batch(Operation.ISSUE_PRICES, "m1", "m2"))
    issued = {c.meter_id: c for c in requests(out)}
    assert without_ids(issued["m1"]) == without_ids(c8)  # the very download C8 sent, again
    assert issued["m1"].command_id == batches.command_id(state.batches["b1"], "m1")
    assert (issued["m1"].requested_by, issued["m1"].correlation_id) == ("op-7", "b1")
    assert issued["m2"].params == {"operation": "parameters"}  # nothing to issue: refused downstream
    assert requests(state.fold(tariff(1, TOU))) == []  # the book knows what the meters were sent
    stated = batch(Operation.ISSUE_PRICES, "m1", batch_id="b2", per_meter={"m1": {"price.peak": "60"}})
    (again,) = requests(state.fold(stated))
    assert again.params == {**c8.params, "price.peak": "60"}


def test_time_control_batch_records_the_policy_and_sends_no_command_to_meters() -> None:
    state = ControlState(POLICY)
    schedule = TimeControl(off="30 23 * * *", on="30 6 * * *")
    request = batch(Operation.TIME_CONTROL, "m1", "m2", schedule=schedule)
    out = state.fold(request)
    policy = [e for e in out if isinstance(e, TimeControlSet)]
    assert [p.meter_id for p in policy] == ["m1", "m2"]
    assert [c for c in requests(out) if c.correlation_id == "b1"] == []  # no meter command
    assert state.meters[(request.project_id, "m1")].policy.schedule == schedule
    result = batches.start(request)
    for e in out:
        result = batches.apply(result, e)
    assert batches.results(result) == {"m1": Outcome.SUCCEEDED, "m2": Outcome.SUCCEEDED}


def test_a_clear_batch_ends_succeeded_per_meter_from_the_sender_facts() -> None:
    state = ControlState(POLICY)
    request = batch(Operation.CLEAR, "m1", "m2", params={"operator_code": "00000042"})
    commands = requests(state.fold(request))
    assert [(c.action, c.params) for c in commands] == [(Action.CLEAR, {"operator_code": "00000042"})] * 2
    result = batches.start(request)
    facts: list[Event] = [*commands]
    for c in commands:
        facts += [
            CommandSent(**env(T, c.meter_id), command_id=c.command_id, meter_id=c.meter_id, attempt=1),
            CommandAcknowledged(**env(T, c.meter_id), command_id=c.command_id, meter_id=c.meter_id),
        ]
    for fact in facts:
        state.fold(fact)
        result = batches.apply(result, fact)
    assert set(batches.results(result).values()) == {Outcome.SUCCEEDED}
    assert {state.command(c.command_id).status.value for c in commands} == {"acknowledged"}  # type: ignore[union-attr]
