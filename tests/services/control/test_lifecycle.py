from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events.base import Event
from libs.events.billing import AlarmKind, AlarmRaised
from libs.events.control import (
    Action,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    CommandSent,
    CommandTimedOut,
)
from services.control.domain.lifecycle import (
    KEEP_ENDED,
    RECENT_IDS,
    MeterCommands,
    RetryPolicy,
    Status,
    apply,
    channel,
    decide,
    due,
    next_wake,
)
from tests.services.control.helpers import M, P, at, env

T = at(2024, 5, 1, 10, 0)
POLICY = RetryPolicy(max_attempts=3, backoff_s=10, factor=2, attempt_timeout_s=30, command_timeout_s=600)


def s(n: float) -> datetime:
    return T + timedelta(seconds=n)


def request(cid: str, when: datetime = T, action: Action = Action.TRIP, **kw) -> CommandRequested:
    return CommandRequested(
        **env(when), command_id=cid, meter_id=M, action=action, requested_by="op-1", reason="test", **kw
    )


def sent(cid: str, attempt: int, when: datetime) -> CommandSent:
    return CommandSent(**env(when), command_id=cid, meter_id=M, attempt=attempt)


def acked(cid: str, when: datetime) -> CommandAcknowledged:
    return CommandAcknowledged(**env(when), command_id=cid, meter_id=M, confirmed_state="open")


def failed(cid: str, attempt: int, when: datetime, retry: bool = True) -> CommandFailed:
    return CommandFailed(
        **env(when), command_id=cid, meter_id=M, attempt=attempt, reason="nak", will_retry=retry
    )


def fold(events: list[Event], state: MeterCommands | None = None) -> MeterCommands:
    state = state or MeterCommands(project_id=P, meter_id=M, policy=POLICY)
    for e in events:
        state = apply(state, e)
    return state


def test_happy_path_and_queryable_relay_state() -> None:
    state = fold([request("c1")])
    assert [v.request.command_id for v in due(state, T)] == ["c1"]
    assert channel(state).pending == "c1" and channel(state).pending_since == T
    state = fold([sent("c1", 1, s(1)), acked("c1", s(2))], state)
    view = state.commands["c1"]
    assert view.status is Status.ACKNOWLEDGED
    assert channel(state) == channel(state).__class__(Action.TRIP, s(2), None, None)
    assert [(r.before, r.after, r.actor) for r in view.audit] == [
        (None, Status.PENDING, "op-1"),
        (Status.PENDING, Status.SENT, "sender"),
        (Status.SENT, Status.ACKNOWLEDGED, "meter"),
    ]
    assert decide(state, s(10_000)) == [] and next_wake(state) is None


def test_failures_retry_with_exponential_backoff_then_fail() -> None:
    state = fold([request("c1"), sent("c1", 1, s(0)), failed("c1", 1, s(1))])
    assert state.commands["c1"].next_attempt_at == s(11)  # 10 s
    assert due(state, s(10)) == [] and len(due(state, s(11))) == 1
    state = fold([sent("c1", 2, s(11)), failed("c1", 2, s(12))], state)
    assert state.commands["c1"].next_attempt_at == s(32)  # 20 s
    state = fold([sent("c1", 3, s(32)), failed("c1", 3, s(33))], state)
    assert state.commands["c1"].status is Status.FAILED and channel(state).pending is None


def test_refusal_without_retry_ends_at_once() -> None:
    state = fold([request("c1"), sent("c1", 1, s(0)), failed("c1", 1, s(1), retry=False)])
    assert state.commands["c1"].status is Status.FAILED


def test_attempt_timeouts_exhaust_attempts_and_raise_an_alarm() -> None:
    state = fold([request("c1"), sent("c1", 1, s(0))])
    assert decide(state, s(29)) == []
    out = decide(state, s(30))
    assert [type(e) for e in out] == [CommandTimedOut] and out == decide(state, s(30))  # same ids
    state = fold(out, state)
    assert state.commands["c1"].status is Status.PENDING and state.commands["c1"].next_attempt_at == s(40)
    state = fold([sent("c1", 2, s(40)), *decide(fold([sent("c1", 2, s(40))], state), s(70))], state)
    state = fold([sent("c1", 3, s(90))], state)
    out = decide(state, s(120))
    assert [type(e) for e in out] == [CommandTimedOut, AlarmRaised]
    alarm = out[1]
    assert isinstance(alarm, AlarmRaised) and alarm.kind is AlarmKind.COMMAND_TIMEOUT
    assert alarm.details["command_id"] == "c1" and alarm.subject_id == M
    state = fold(out, state)
    assert state.commands["c1"].status is Status.TIMED_OUT and decide(state, s(1000)) == []


def test_whole_command_deadline_and_expires_at() -> None:
    state = fold([request("c1", expires_at=s(100))])
    assert next_wake(state) == T  # due now
    out = decide(state, s(100))
    assert [type(e) for e in out] == [CommandTimedOut, AlarmRaised]
    state = fold(out, state)
    assert state.commands["c1"].status is Status.TIMED_OUT and due(state, s(100)) == []


def test_newer_command_supersedes_pending_one_and_late_ack_is_truth() -> None:
    state = fold([request("trip"), sent("trip", 1, s(1)), request("close", s(2), Action.CLOSE)])
    assert state.commands["trip"].status is Status.SUPERSEDED
    assert channel(state).pending == "close"
    state = fold([acked("trip", s(3))], state)  # the meter did trip after all
    assert channel(state).confirmed is Action.TRIP and channel(state).pending == "close"
    state = fold([sent("close", 1, s(4)), acked("close", s(5))], state)
    assert channel(state).confirmed is Action.CLOSE and channel(state).pending is None


def test_other_channels_are_not_superseded() -> None:
    state = fold([request("trip"), request("keep", s(1), Action.KEEP_POWER_ON)])
    assert state.commands["trip"].status is Status.PENDING
    assert channel(state, "keep_power").pending == "keep"


# ---- properties -------------------------------------------------------------------------------

CIDS = ["c1", "c2"]


def _one(kind: str, cid: str, attempt: int, when: datetime, flag: bool) -> Event:
    if kind == "req":
        return request(cid, when, Action.TRIP if flag else Action.CLOSE)
    if kind == "sent":
        return sent(cid, attempt, when)
    if kind == "ack":
        return acked(cid, when)
    if kind == "fail":
        return failed(cid, attempt, when, flag)
    timed = attempt if kind == "tmo" else None
    return CommandTimedOut(**env(when), command_id=cid, meter_id=M, attempt=timed, deadline=when)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    kinds = st.sampled_from(["req", "sent", "ack", "fail", "tmo", "deadline"])
    steps = draw(
        st.lists(st.tuples(kinds, st.sampled_from(CIDS), st.integers(1, 3), st.booleans()), max_size=25)
    )
    return [_one(kind, cid, attempt, s(7 * i), flag) for i, (kind, cid, attempt, flag) in enumerate(steps)]


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_redelivery_is_idempotent(history: list[Event], data: st.DataObject) -> None:
    again = list(history)
    for event in data.draw(st.lists(st.sampled_from(history), max_size=10)) if history else []:
        again.insert(data.draw(st.integers(again.index(event) + 1, len(again))), event)
    assert fold(again) == fold(history)
    assert decide(fold(again), s(500)) == decide(fold(history), s(500))


@settings(max_examples=200, deadline=None)
@given(histories())
def test_acknowledged_never_returns_to_pending_without_a_new_request(history: list[Event]) -> None:
    state = fold([])
    for event in history:
        before = state
        state = apply(state, event)
        for cid, view in before.commands.items():
            if view.status is Status.ACKNOWLEDGED:
                assert state.commands[cid].status is Status.ACKNOWLEDGED
        relay = channel(before)
        if relay.pending is None and not isinstance(event, CommandRequested):
            assert channel(state).pending is None


def test_a_meter_keeps_a_bounded_history_and_dropped_commands_stay_dropped() -> None:
    """A long-running meter: hundreds of commands on one channel keep KEEP_ENDED of them (the
    newest, with their audit) and RECENT_IDS ids; a redelivered request of a dropped command
    neither re-opens it nor supersedes the pending one."""
    state = MeterCommands(project_id=P, meter_id=M, policy=POLICY)
    first = request("c0", s(0))
    for i in range(300):
        cid = f"c{i}"
        req = first if i == 0 else request(cid, s(10 * i), Action.TRIP if i % 2 else Action.CLOSE)
        state = fold([req, sent(cid, 1, s(10 * i + 1)), acked(cid, s(10 * i + 2))], state)
    assert len(state.commands) == KEEP_ENDED
    assert sorted(state.commands) == sorted(f"c{i}" for i in range(300 - KEEP_ENDED, 300))
    assert len(state.seen) == RECENT_IDS
    state = fold([request("c300", s(3000))], state)  # pending
    again = fold([first, sent("c0", 1, s(3001)), acked("c0", s(3002))], state)
    assert "c0" not in again.commands
    assert channel(again).pending == "c300" and again.commands["c300"].status is Status.PENDING
    assert channel(again).confirmed is Action.TRIP  # c299, the last acknowledged
