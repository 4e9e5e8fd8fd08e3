"""C7: a command that ends without an acknowledgement is published once as ``CommandAbandoned``
— by the lifecycle fold (:func:`lifecycle.abandonments`) and by the worker around it, live, on
redelivery and in a replay."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events.base import Event, event_id_for
from libs.events.billing import AlarmKind, AlarmRaised
from libs.events.codec import Codec
from libs.events.control import (
    Action,
    CommandAbandoned,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    CommandSent,
    CommandTimedOut,
    Outcome,
)
from libs.events.topics import COMMANDS
from libs.stack.processor import Inbound
from services.control.domain import lifecycle
from services.control.domain.lifecycle import MeterCommands, RetryPolicy, Status
from services.control.worker import ControlState
from tests.services.control.helpers import M, P, at, env

T = at(2026, 11, 21, 9, 0)
CODEC = Codec()
POLICY = RetryPolicy(max_attempts=3, backoff_s=10, factor=2, attempt_timeout_s=30, command_timeout_s=900)


def s(n: float) -> datetime:
    return T + timedelta(seconds=n)


def request(cid: str, when: datetime = T, action: Action = Action.TRIP, **kw: Any) -> CommandRequested:
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


def raised(account: str, when: datetime, meters: str) -> AlarmRaised:
    return AlarmRaised(**env(when, account), alarm_id=f"arrears-{account}", kind=AlarmKind.ARREARS,
                       severity=3, message="arrears", details={"meter_ids": meters})  # fmt: skip


def fold(events: list[Event], state: MeterCommands | None = None) -> MeterCommands:
    state = state or MeterCommands(project_id=P, meter_id=M, policy=POLICY)
    for e in events:
        state = lifecycle.apply(state, e)
    return state


def drain(state: MeterCommands) -> tuple[MeterCommands, list[CommandAbandoned]]:
    out = lifecycle.abandonments(state)
    return fold(list(out), state), out


# ---- the fold ---------------------------------------------------------------------------------


def test_exhausted_attempts_give_one_abandonment_caused_by_the_last_failure() -> None:
    last = failed("c1", 3, s(33))
    state = fold([request("c1", T), sent("c1", 1, s(0)), failed("c1", 1, s(1)), sent("c1", 2, s(11)),
                  failed("c1", 2, s(12))])  # fmt: skip
    assert lifecycle.abandonments(state) == []  # retried: not the end
    state, (ended,) = drain(fold([sent("c1", 3, s(32)), last], state))
    assert (ended.command_id, ended.outcome, ended.attempts, ended.reason) == ("c1", Outcome.FAILED, 3, "nak")
    assert (ended.causation_id, ended.time, ended.subject_id) == (last.event_id, last.time, M)
    assert (ended.action, ended.requested_by) == (Action.TRIP, "op-1")
    assert ended.event_id == event_id_for(P, "command_abandoned", "c1")
    assert lifecycle.abandonments(state) == [] and state.unreported == ()
    assert fold([last, ended], state) == state  # redelivered: nothing new


def test_a_refusal_ends_at_once_and_an_acknowledgement_is_no_abandonment() -> None:
    _, (ended,) = drain(fold([request("c1"), sent("c1", 1, s(0)), failed("c1", 1, s(1), retry=False)]))
    assert (ended.outcome, ended.attempts) == (Outcome.FAILED, 1)
    state = fold([request("c2"), sent("c2", 1, s(0)), acked("c2", s(1))])
    assert lifecycle.abandonments(state) == [] and state.unreported == ()


def test_timeouts_of_the_last_attempt_and_of_the_whole_command() -> None:
    state = fold([request("c1", expires_at=s(100)), request("k1", action=Action.KEEP_POWER_ON)])
    state = fold([sent("k1", 1, s(0)), failed("k1", 1, s(1)), sent("k1", 2, s(11)), failed("k1", 2, s(12)),
                  sent("k1", 3, s(32))], state)  # fmt: skip
    timeouts = lifecycle.decide(state, s(100))
    state, ended = drain(fold(timeouts, state))
    assert {(e.command_id, e.outcome, e.attempts) for e in ended} == {
        ("c1", Outcome.TIMED_OUT, 0),  # never sent: its deadline passed
        ("k1", Outcome.TIMED_OUT, 3),
    }
    causes = {e.event_id for e in timeouts if isinstance(e, CommandTimedOut)}
    assert {e.causation_id for e in ended} == causes


def test_a_superseded_command_is_abandoned_and_a_late_acknowledgement_before_the_report_wins() -> None:
    newer = request("close", s(2), Action.CLOSE)
    state, (ended,) = drain(fold([request("trip"), sent("trip", 1, s(1)), newer]))
    assert (ended.command_id, ended.outcome) == ("trip", Outcome.SUPERSEDED)
    assert ended.reason == "superseded by close"
    assert ended.causation_id == newer.event_id
    # ended, then acknowledged before its abandonment was published: the meter did act
    state = fold([request("c9", s(10), Action.VALVE_OPEN), failed("c9", 1, s(11), retry=False)], state)
    assert state.unreported == ("c9",)
    state = fold([acked("c9", s(12))], state)
    assert state.unreported == () and lifecycle.abandonments(state) == []


def _kind(draw: st.DrawFn, i: int) -> Event:
    cid = draw(st.sampled_from(["c1", "c2", "c3"]))
    when = s(7 * i)
    kind = draw(st.sampled_from(["req", "sent", "ack", "fail", "tmo", "deadline"]))
    attempt = draw(st.integers(1, 3))
    if kind == "req":
        return request(cid, when, draw(st.sampled_from([Action.TRIP, Action.CLOSE, Action.ALARM_ON])))
    if kind == "sent":
        return sent(cid, attempt, when)
    if kind == "ack":
        return acked(cid, when)
    if kind == "fail":
        return failed(cid, attempt, when, draw(st.booleans()))
    timed = attempt if kind == "tmo" else None
    return CommandTimedOut(**env(when), command_id=cid, meter_id=M, attempt=timed, deadline=when)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    events = [_kind(draw, i) for i in range(draw(st.integers(0, 30)))]
    for event in draw(st.lists(st.sampled_from(events), max_size=8)) if events else []:
        events.insert(draw(st.integers(events.index(event) + 1, len(events))), event)  # redelivered
    return events


@settings(max_examples=200, deadline=None)
@given(histories())
def test_each_unacknowledged_end_is_published_once(history: list[Event]) -> None:
    state, published = fold([]), []
    for event in history:
        state, out = drain(lifecycle.apply(state, event))
        published += out
    ids = [e.command_id for e in published]
    assert len(ids) == len(set(ids))
    for cid, view in state.commands.items():
        if view.status in lifecycle.ABANDONED:
            assert cid in ids
        elif cid in ids:  # ended unacknowledged, then acknowledged late
            assert view.status is Status.ACKNOWLEDGED


# ---- the worker -------------------------------------------------------------------------------


def sender(cmd: CommandRequested, cls: type[Any], when: datetime, **kw: object) -> Event:
    return cls(**env(when, cmd.meter_id), command_id=cmd.command_id, meter_id=cmd.meter_id, **kw)


def only(events: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def no_reply(state: ControlState, cmd: CommandRequested, when: datetime) -> list[Event]:
    state.fold(sender(cmd, CommandSent, when, attempt=1))
    failure = sender(cmd, CommandFailed, when, attempt=1, reason="no_reply: 3 tries", will_retry=False)
    return state.fold(failure)


def test_the_worker_publishes_one_abandonment_when_the_last_retry_fails() -> None:
    state = ControlState(POLICY)
    (trip,) = only(state.fold(raised("a1", T, meters="m1")), CommandRequested)
    assert no_reply(state, trip, s(1)) == []  # acquisition's "final" failure: control retries
    (second,) = only(state.due(s(11)), CommandRequested)
    assert no_reply(state, second, s(12)) == []
    (third,) = only(state.due(s(32)), CommandRequested)
    last = sender(third, CommandFailed, s(33), attempt=1, reason="no_reply: 3 tries", will_retry=False)
    state.fold(sender(third, CommandSent, s(33), attempt=1))
    (ended,) = state.fold(last)
    assert isinstance(ended, CommandAbandoned) and ended.command_id == trip.command_id
    assert (ended.outcome, ended.attempts, ended.causation_id) == (Outcome.FAILED, 3, last.event_id)
    assert ended.correlation_id == (trip.correlation_id or trip.event_id)
    assert state.fold(last) == [] and state.fold(ended) == []  # redelivered; our own fact back
    again = sender(third, CommandFailed, s(34), attempt=1, reason="no_reply: again", will_retry=False)
    assert state.fold(again) == []  # a second failure report of an ended command
    assert only(state.due(s(10_000)), CommandAbandoned) == []


def test_the_worker_publishes_refusals_and_supersessions_but_not_acknowledgements() -> None:
    state = ControlState(POLICY)
    (trip,) = only(state.fold(raised("a1", T, meters="m1")), CommandRequested)
    state.fold(sender(trip, CommandSent, s(1), attempt=1))
    assert state.fold(sender(trip, CommandAcknowledged, s(2), confirmed_state="open")) == []
    valve = CommandRequested(**env(s(3), "m1"), command_id="v1", meter_id="m1", action=Action.VALVE_OPEN,
                             requested_by="op-3", reason="test")  # fmt: skip
    assert state.fold(valve) == []
    refused = sender(valve, CommandFailed, s(4), attempt=1, reason="rejected: no", will_retry=False)
    (ended,) = state.fold(refused)
    assert isinstance(ended, CommandAbandoned)
    assert (ended.outcome, ended.requested_by) == (Outcome.FAILED, "op-3")
    first = CommandRequested(**env(s(5), "m1"), command_id="k1", meter_id="m1", action=Action.ALARM_ON,
                             requested_by="op-3", reason="test")  # fmt: skip
    state.fold(first)
    out = state.fold(first.model_copy(update={"event_id": "k2-e", "command_id": "k2", "time": s(6)}))
    assert [(e.command_id, e.outcome) for e in only(out, CommandAbandoned)] == [("k1", Outcome.SUPERSEDED)]


def test_a_timeout_is_published_by_the_tick_after_the_timeout_itself() -> None:
    state = ControlState(POLICY)
    assert len(only(state.fold(raised("a1", T, meters="m1")), CommandRequested)) == 1
    out = [e for o in state.tick(s(900).timestamp()) for e in CODEC.decode(o.value)]
    assert [type(e).__name__ for e in out] == ["CommandTimedOut", "AlarmRaised", "CommandAbandoned"]
    ended = out[-1]
    assert isinstance(ended, CommandAbandoned) and ended.outcome is Outcome.TIMED_OUT
    assert (ended.TOPIC, ended.key, ended.causation_id) == (COMMANDS.name, b"m1", out[0].event_id)
    assert state.tick(s(1000).timestamp()) == []


def _record(topic: str, offset: int, *events: Event) -> Inbound:
    return Inbound(0, topic, 0, offset, None, list(events))


def _live_refusal() -> tuple[list[Event], list[Event]]:
    """What a live run wrote: the alarm, and on mf.commands the trip, its refusal, the abandonment."""
    alarm = raised("a1", T, meters="m1")
    live = ControlState(POLICY)
    (trip,) = only(live.fold(alarm), CommandRequested)
    refused = sender(trip, CommandFailed, s(1), attempt=1, reason="rejected: relay fault", will_retry=False)
    return [alarm], [trip, refused, *live.fold(refused)]


async def _replay(alarms: list[Event], commands: list[Event]) -> list[Event]:
    async def ends() -> dict[str, int]:
        return {"mf.alarms:0": len(alarms), "mf.commands:0": len(commands)}

    state = ControlState(POLICY, end_offsets=ends)
    state.restore(0, None)
    await asyncio.sleep(0.01)  # the end offsets are read
    out = state.handle([_record("mf.alarms", i, e) for i, e in enumerate(alarms)])
    assert out == [] and state.replaying
    out += state.handle([_record("mf.commands", i, e) for i, e in enumerate(commands)])
    assert not state.replaying
    return [e for o in out for e in CODEC.decode(o.value)]


async def test_a_replay_re_emits_no_abandonment_the_log_holds() -> None:
    alarms, commands = _live_refusal()
    assert isinstance(commands[-1], CommandAbandoned)
    assert await _replay(alarms, commands) == []


async def test_an_abandonment_lost_in_a_crash_is_sent_after_the_replay_with_its_live_id() -> None:
    alarms, commands = _live_refusal()
    (resent,) = await _replay(alarms, commands[:-1])  # the crash came before it was produced
    assert resent == commands[-1]
