from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from libs.events.control import (
    Action,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    CommandSent,
    CommandTimedOut,
    LoadLimitSet,
    TimeControlSet,
)
from services.control.domain.batch import (
    BatchRequested,
    Operation,
    Outcome,
    apply,
    command_id,
    expand,
    results,
    start,
    summary,
)
from services.control.domain.protection import LoadLimit
from services.control.domain.schedules import TimeControl
from tests.services.control.helpers import P, at, env

T = at(2024, 9, 1, 9, 0)
METERS = tuple(f"m{i}" for i in range(6))


def batch(op: Operation = Operation.CLEAR, **kw) -> BatchRequested:
    return BatchRequested(
        **env(T, "b1"), batch_id="b1", operation=op, operator_id="op-1", **{"meter_ids": METERS, **kw}
    )


def test_expand_fans_out_one_command_per_meter_with_stable_ids() -> None:
    b = batch(Operation.ISSUE_PRICES, per_meter={"m0": {"price.total": "52.83"}}, meter_ids=(*METERS, "m0"))
    out = expand(b)
    assert [c.meter_id for c in out if isinstance(c, CommandRequested)] == list(METERS)
    first = out[0]
    assert isinstance(first, CommandRequested) and first.action is Action.SET_PARAMETER
    assert first.params == {"price.total": "52.83", "operation": "parameters"}  # a parameter download
    assert first.correlation_id == "b1" and first.requested_by == "op-1"
    assert [e.event_id for e in expand(b)] == [e.event_id for e in out]


def test_issue_prices_sends_each_meter_its_download_with_stated_prices_on_top() -> None:
    b = batch(Operation.ISSUE_PRICES, per_meter={"m0": {"price.total": "52.83"}})
    c8 = {
        "operation": "parameters",
        "price.total": "50",
        "alarm1_fen": "2000",
        "effective_from": "2024-01-01",
    }
    out = {c.meter_id: c for c in expand(b, {"m0": c8, "m1": c8}) if isinstance(c, CommandRequested)}
    assert out["m0"].params == {**c8, "price.total": "52.83"}
    assert out["m1"].params == c8
    assert out["m2"].params == {"operation": "parameters"}  # nothing to issue: acquisition refuses it


def test_clear_and_initialise_are_dedicated_actions_with_the_batch_params() -> None:
    for op, action in ((Operation.CLEAR, Action.CLEAR), (Operation.INITIALISE, Action.INITIALISE)):
        out = expand(
            batch(op, params={"operator_code": "00000042"}, per_meter={"m1": {"operator_code": "1"}})
        )
        assert {type(e) for e in out} == {CommandRequested}
        assert all(c.action is action for c in out)  # type: ignore[attr-defined]
        assert [c.params["operator_code"] for c in out][:3] == ["00000042", "1", "00000042"]  # type: ignore[attr-defined]


def test_time_and_load_control_set_platform_policy_only_and_succeed_once_recorded() -> None:
    tc = TimeControl(off="30 23 * * 0-4", on="30 6 * * *")
    b = batch(Operation.TIME_CONTROL, schedule=tc)
    out = expand(b)
    assert [type(e) for e in out] == [TimeControlSet] * len(METERS)  # no meter command
    assert [e.schedule for e in out] == [tc] * len(METERS)  # type: ignore[attr-defined]
    state = start(b)
    assert set(results(state).values()) == {Outcome.PENDING}
    other = TimeControlSet(**env(T, "m1"), meter_id="m1", operator_id="op-2", schedule=None)
    state = apply(state, other)  # another operator's setting is not this batch's result
    assert results(state)["m1"] is Outcome.PENDING
    for e in out[:4] + out[:4]:  # redelivered: same counts
        state = apply(state, e)
    assert summary(state)[Outcome.SUCCEEDED] == 4 and summary(state)[Outcome.PENDING] == 2
    lb = batch(Operation.LOAD_CONTROL, limit=LoadLimit(limit_kw=Decimal("1.2")))
    out = expand(lb)
    assert [type(e) for e in out] == [LoadLimitSet] * len(METERS)
    state = start(lb)
    for e in out:
        state = apply(state, e)
    assert summary(state)[Outcome.SUCCEEDED] == len(METERS)


def test_summary_counts_outcomes_from_lifecycle_facts() -> None:
    b = batch()
    state = start(b)
    for e in expand(b):
        state = apply(state, e)
    cid = {m: command_id(b, m) for m in METERS}

    def f(m: str, n: int):
        return {"command_id": cid[m], "meter_id": m, **env(T + timedelta(seconds=n), m)}

    facts = [
        CommandSent(**f("m0", 1), attempt=1),
        CommandAcknowledged(**f("m0", 2)),
        CommandSent(**f("m1", 1), attempt=1),
        CommandAcknowledged(**f("m1", 2)),
        CommandSent(**f("m2", 1), attempt=1),
        CommandFailed(**f("m2", 2), attempt=1, reason="password rejected", will_retry=False),
        CommandTimedOut(**f("m3", 2000), deadline=T),
        CommandRequested(
            **env(T, "m4"),
            command_id="manual",
            meter_id="m4",
            action=Action.CLEAR,
            requested_by="op-2",
            reason="again",
        ),
        CommandAcknowledged(**env(T, "m9"), command_id=cid["m0"], meter_id="m9"),  # not in the batch
    ]
    for e in facts + facts:  # redelivered: same counts
        state = apply(state, e)
    assert results(state)["m5"] is Outcome.PENDING
    assert summary(state) == {
        Outcome.PENDING: 1,
        Outcome.SUCCEEDED: 2,
        Outcome.FAILED: 1,
        Outcome.TIMED_OUT: 1,
        Outcome.SUPERSEDED: 1,
    }
    assert sum(summary(state).values()) == len(METERS)
    assert state.batch.project_id == P
