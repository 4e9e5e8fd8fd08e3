"""The control worker's loop without a broker: routing, retries, timeouts, idempotency."""

from __future__ import annotations

import asyncio
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.events import AccountOpened, AlarmCleared, AlarmRaised
from libs.events.acquisition import MeterRegistered
from libs.events.base import Event
from libs.events.billing import AlarmKind, AlarmThresholdsSet, BillingMode, TariffPublished
from libs.events.codec import Codec
from libs.events.control import (
    Action,
    BatchRequested,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    CommandSent,
    CommandTimedOut,
    KeepPowerSet,
    Operation,
    SocketResetRequested,
)
from libs.stack.processor import Inbound, SnapshotRejected
from services.control import views
from services.control.domain.lifecycle import KEEP_ENDED, RetryPolicy, Status
from services.control.worker import COMPACT_EVERY, SNAPSHOT_VERSION, ControlState, retry_id
from tests.services.control.helpers import P, at, env

T = at(2026, 11, 21, 9, 0)
CODEC = Codec()
POLICY = RetryPolicy(max_attempts=3, backoff_s=10, factor=2, attempt_timeout_s=30, command_timeout_s=900)


def opened(account: str, *meters: str) -> AccountOpened:
    return AccountOpened(**env(T, account), account_id=account, mode=BillingMode.PREPAID, meter_ids=meters,
                         tariff_id="t1", holder="h", opened_by="op")  # fmt: skip


def raised(account: str, when: datetime, meters: str = "") -> AlarmRaised:
    details = {"meter_ids": meters} if meters else {}
    return AlarmRaised(**env(when, account), alarm_id=f"arrears-{account}", kind=AlarmKind.ARREARS,
                       severity=3, message="arrears", details=details)  # fmt: skip


def cleared(account: str, when: datetime) -> AlarmCleared:
    return AlarmCleared(**env(when, account), alarm_id=f"arrears-{account}", kind=AlarmKind.ARREARS,
                        reason="recharge")  # fmt: skip


def sender(cmd: CommandRequested, cls: type[Any], when: datetime, **kw: object) -> Event:
    return cls(**env(when, cmd.meter_id), command_id=cmd.command_id, meter_id=cmd.meter_id, **kw)


def requests(events: list[Event]) -> list[CommandRequested]:
    return [e for e in events if isinstance(e, CommandRequested)]


def test_arrears_trips_every_meter_of_the_account_and_the_clear_closes_them() -> None:
    state = ControlState(POLICY)
    state.fold(opened("a1", "m1", "m2"))
    trips = requests(state.fold(raised("a1", T)))
    assert [(c.meter_id, c.action, c.requested_by) for c in trips] == [
        ("m1", Action.TRIP, "policy:prepaid"),
        ("m2", Action.TRIP, "policy:prepaid"),
    ]
    m1 = state.meters[(P, "m1")]
    assert views.relay(m1, T)["state"] == "unknown" and views.relay(m1, T)["pending"]["action"] == "trip"
    state.fold(sender(trips[0], CommandSent, T + timedelta(seconds=1), attempt=1))
    state.fold(sender(trips[0], CommandAcknowledged, T + timedelta(seconds=2), confirmed_state="open"))
    view = views.relay(m1, T)
    assert (view["state"], view["pending"], view["desired"]["source"]) == ("off", None, "prepaid")
    assert views.command(state.command(trips[0].command_id))["status"] == "acknowledged"  # type: ignore[arg-type]
    closes = requests(state.fold(cleared("a1", T + timedelta(minutes=5))))
    assert [(c.meter_id, c.action) for c in closes] == [("m1", Action.CLOSE), ("m2", Action.CLOSE)]
    assert [v["meter_id"] for v in views.meters(state.meters, T, "pending")] == ["m1", "m2"]


def test_meters_listed_on_the_alarm_are_tripped_before_the_account_is_known() -> None:
    state = ControlState(POLICY)
    trips = requests(state.fold(raised("a2", T, meters="m5,m6")))
    assert {c.meter_id for c in trips} == {"m5", "m6"}
    assert requests(state.fold(cleared("a2", T + timedelta(minutes=1))))[0].action is Action.CLOSE


def test_keep_power_blocks_the_arrears_trip() -> None:
    state = ControlState(POLICY)
    state.fold(opened("a1", "m1", "m2"))
    keep = KeepPowerSet(**env(T, "m1"), meter_id="m1", operator_id="op-7", reason="hospital")
    flag = requests(state.fold(keep))
    assert [(c.action, c.requested_by) for c in flag] == [(Action.KEEP_POWER_ON, "op-7")]
    trips = requests(state.fold(raised("a1", T + timedelta(minutes=1))))
    assert [c.meter_id for c in trips] == ["m2"]
    assert views.relay(state.meters[(P, "m1")], T)["desired"]["source"] == "keep_power"


def test_failed_command_is_retried_with_backoff_then_times_out_into_an_alarm() -> None:
    state = ControlState(POLICY)
    (trip,) = requests(state.fold(raised("a1", T, meters="m1")))
    t = T + timedelta(seconds=1)
    state.fold(sender(trip, CommandSent, t, attempt=1))
    state.fold(sender(trip, CommandFailed, t, attempt=1, reason="no_reply: timeout", will_retry=False))
    assert state.due(t + timedelta(seconds=9)) == []  # backoff 10 s not over
    (retry,) = state.due(t + timedelta(seconds=10))
    assert isinstance(retry, CommandRequested) and retry.action is Action.TRIP
    assert retry.command_id == retry_id(P, trip.command_id, 2) != trip.command_id
    assert retry.params["retry_of"] == trip.command_id and retry.expires_at is not None
    assert state.due(t + timedelta(seconds=11)) == []  # asked once; waits for the sender
    assert state.fold(retry) == []  # our own retry coming back changes nothing
    # The sender reports on the retry's id (attempt 1 in its eyes): it counts as attempt 2.
    t2 = t + timedelta(seconds=12)
    state.fold(sender(retry, CommandSent, t2, attempt=1))
    assert state.command(trip.command_id).attempt == 2  # type: ignore[union-attr]
    (timeout,) = state.due(t2 + timedelta(seconds=30))
    assert isinstance(timeout, CommandTimedOut) and timeout.attempt == 2
    assert state.due(t2 + timedelta(seconds=30 + 19)) == []  # backoff 10 × 2 = 20 s
    (third,) = requests(state.due(t2 + timedelta(seconds=30 + 20)))
    t3 = t2 + timedelta(seconds=51)
    state.fold(sender(third, CommandSent, t3, attempt=1))
    out = state.due(t3 + timedelta(seconds=30))
    kinds = [(type(e).__name__, getattr(e, "attempt", None)) for e in out]
    assert kinds == [("CommandTimedOut", 3), ("AlarmRaised", None), ("CommandAbandoned", None)]
    alarm = out[1]
    assert isinstance(alarm, AlarmRaised) and alarm.kind is AlarmKind.COMMAND_TIMEOUT
    assert alarm.subject_id == "m1" and alarm.details["command_id"] == trip.command_id
    assert state.command(trip.command_id).status is Status.TIMED_OUT  # type: ignore[union-attr]
    assert state.due(t3 + timedelta(hours=1)) == []
    assert state.fold(alarm) == []  # a command-timeout alarm drives no relay


def test_a_refused_command_is_not_retried() -> None:
    state = ControlState(POLICY)
    (trip,) = requests(state.fold(raised("a1", T, meters="m1")))
    state.fold(sender(trip, CommandFailed, T, attempt=1, reason="unsupported: no relay", will_retry=False))
    assert state.command(trip.command_id).status is Status.FAILED  # type: ignore[union-attr]
    assert state.due(T + timedelta(hours=1)) == []


def test_an_unsent_command_times_out_at_its_deadline() -> None:
    state = ControlState(POLICY)
    (trip,) = requests(state.fold(raised("a1", T, meters="m1")))
    assert state.due(T + timedelta(seconds=899)) == []
    out = state.due(T + timedelta(seconds=900))
    assert [type(e).__name__ for e in out] == ["CommandTimedOut", "AlarmRaised", "CommandAbandoned"]
    assert out[0].event_id != trip.event_id and getattr(out[0], "command_id", "") == trip.command_id


def _ids(events: list[Event]) -> list[str]:
    return [e.event_id for e in events]


def test_redelivery_and_replay_after_restore_issue_nothing_new() -> None:
    facts: list[Event] = [opened("a1", "m1", "m2"), raised("a1", T)]
    state = ControlState(POLICY)
    first: list[Event] = []
    for fact in facts:
        first += state.fold(fact)
    assert len(first) == 2
    for fact in facts:  # redelivered
        assert state.fold(fact) == []
    snap = state.snapshot(0)()
    # A replay from the log without a snapshot re-derives the same ids for the same causes.
    fresh = ControlState(POLICY)
    again: list[Event] = []
    for fact in facts:
        again += fresh.fold(fact)
    assert _ids(again) == _ids(first)
    # Replayed in another interleaving (our commands come back before the alarm): nothing new.
    other = ControlState(POLICY)
    assert [e for fact in [facts[0], *first, facts[1]] for e in other.fold(fact)] == []
    restored = ControlState(POLICY)
    restored.restore(0, snap)
    assert [e for fact in [*facts, *first] for e in restored.fold(fact)] == []
    assert restored.command(first[0].event_id) is not None


def test_policy_wakes_are_decided_at_the_wake_moment_so_ids_repeat() -> None:
    reset = SocketResetRequested(**env(T, "m1"), meter_id="m1", operator_id="op", off_seconds=60)
    runs = []
    for late in (61, 300):  # the tick came late by different amounts
        state = ControlState(POLICY)
        (trip,) = requests(state.fold(reset))
        (close,) = requests(state.due(T + timedelta(seconds=late)))
        assert (trip.action, close.action) == (Action.TRIP, Action.CLOSE)
        runs.append((close.command_id, close.time))
    assert runs[0] == runs[1] == (runs[0][0], T + timedelta(seconds=60))


def test_a_batch_is_expanded_once_into_commands_and_policy_facts() -> None:
    state = ControlState(POLICY)
    batch = BatchRequested(**env(T, "b1"), batch_id="b1", operation=Operation.CLEAR, meter_ids=("m1", "m2"),
                           operator_id="op-2")  # fmt: skip
    out = state.fold(batch)
    assert [(c.meter_id, c.action, c.requested_by) for c in requests(out)] == [
        ("m1", Action.CLEAR, "op-2"),
        ("m2", Action.CLEAR, "op-2"),
    ]
    assert state.fold(batch) == []
    assert all(state.command(c.command_id) is not None for c in requests(out))


def _record(topic: str, offset: int, *events: Event) -> Inbound:
    return Inbound(0, topic, 0, offset, None, list(events))


async def test_a_replay_in_another_order_holds_decisions_and_sends_only_what_is_missing() -> None:
    keep = KeepPowerSet(**env(T, "m3"), meter_id="m3", operator_id="op", reason="clinic")
    alarm = raised("a2", T + timedelta(minutes=1), meters="m3")
    live = ControlState(POLICY)
    sent = live.fold(keep) + live.fold(alarm)
    assert [c.action for c in requests(sent)] == [Action.KEEP_POWER_ON]  # no trip under keep-power

    async def ends() -> dict[str, int]:
        return {"mf.alarms:0": 1, "mf.control:0": 1, "mf.commands:0": 1}

    replay = ControlState(POLICY, end_offsets=ends)
    replay.restore(0, None)
    await asyncio.sleep(0.01)  # the end offsets are read
    assert replay.handle([_record("mf.alarms", 0, alarm)]) == []  # alone it would trip m3: held
    assert replay.tick(T.timestamp() + 10_000) == []  # no clock during a replay
    assert replay.handle([_record("mf.control", 0, keep)]) == []
    assert replay.replaying
    assert replay.handle([_record("mf.commands", 0, *sent)]) == []  # applied: nothing is missing
    assert not replay.replaying and replay.held == {}


async def test_a_command_lost_in_a_crash_is_sent_after_the_replay_with_its_live_id() -> None:
    alarm = raised("a1", T, meters="m1")
    (trip,) = requests(ControlState(POLICY).fold(alarm))

    async def ends() -> dict[str, int]:
        return {"mf.alarms:0": 1, "mf.commands:0": 0}

    replay = ControlState(POLICY, end_offsets=ends)
    replay.restore(0, None)
    await asyncio.sleep(0.01)
    (out,) = replay.handle([_record("mf.alarms", 0, alarm)])
    resent = CODEC.decode(out.value)[0]
    assert isinstance(resent, CommandRequested) and resent.command_id == trip.command_id
    assert resent.time > trip.time  # stamped when sent, so acquisition does not drop it as stale


def registered(meter_id: str, model: str) -> MeterRegistered:
    return MeterRegistered(**env(T, meter_id), meter_id=meter_id, address=meter_id, protocol="dlt645-2007",
                           model=model, medium="electricity", concentrator_id="c1", bus_id="b1")  # fmt: skip


TOU = {"kind": "tou", "prices": {"peak": "56.83", "valley": "28.83"},
       "schedules": [{"bands": [{"start": "08:00", "rate": "peak"}, {"start": "22:00", "rate": "valley"}]}]}  # fmt: skip


def tariff(version: int, definition: dict[str, Any]) -> TariffPublished:
    return TariffPublished(**env(T, "t1", event_id=f"t1-v{version}"), tariff_id="t1", version=version,
                           name="t1", effective_from=T, definition=definition)  # fmt: skip


def test_parameter_downloads_go_to_meters_that_keep_prices_whatever_the_order() -> None:
    state = ControlState(POLICY)
    state.fold(registered("m1", "DDSY1352"))  # local prepaid: keeps prices
    state.fold(registered("m2", "DTZY1296"))  # remote cost control: billed by the platform
    state.fold(tariff(1, TOU))
    first = requests(state.fold(opened("a1", "m1", "m2", "m3")))
    assert [(c.meter_id, c.action) for c in first] == [("m1", Action.SET_PARAMETER)]
    assert {k: v for k, v in first[0].params.items() if k != "effective_from"} == {
        "operation": "parameters", "price.peak": "56.83", "price.valley": "28.83",
    }  # fmt: skip
    late = requests(state.fold(registered("m3", "DDSY1352")))  # its model came after the account
    assert [c.meter_id for c in late] == ["m3"]
    assert requests(state.fold(tariff(1, TOU))) == []  # redelivered: nothing new
    limits = AlarmThresholdsSet(
        **env(T, P), account_id=None, level1_fen=3000, level2_fen=800, operator_id="op"
    )
    project = requests(state.fold(limits))
    assert [(c.meter_id, c.params["alarm1_fen"], c.requested_by) for c in project] == [
        ("m1", "3000", "op"),
        ("m3", "3000", "op"),
    ]
    assert views.command(state.command(project[0].command_id))["status"] == "pending"  # type: ignore[arg-type]
    assert requests(ControlState(POLICY, parameter_models=()).fold(tariff(2, TOU))) == []


def test_the_command_index_forgets_commands_the_meters_dropped() -> None:
    """Trip / restore cycles for a long time: the index of command ids stays as small as the
    meters' bounded histories (lifecycle.KEEP_ENDED per channel), and the latest are queryable."""
    state = ControlState(POLICY)
    state.fold(opened("a1", "m1"))
    when, ids = T, []
    for _ in range(KEEP_ENDED + 10):
        for fact in (raised("a1", when), cleared("a1", when + timedelta(minutes=1))):
            (cmd,) = requests(state.fold(fact))
            state.fold(sender(cmd, CommandSent, fact.time + timedelta(seconds=1), attempt=1))
            state.fold(sender(cmd, CommandAcknowledged, fact.time + timedelta(seconds=2)))
            ids.append(cmd.command_id)
        when += timedelta(hours=1)
    state.due(when + COMPACT_EVERY)
    assert sorted(state.index) == sorted(ids[-KEEP_ENDED:])
    assert state.command(ids[-1]) is not None and state.command(ids[0]) is None


def test_a_snapshot_of_another_version_is_rejected_for_a_rebuild_from_the_log() -> None:
    state = ControlState(POLICY)
    state.fold(opened("a1", "m1"))
    old = pickle.loads(state.snapshot(0)())
    old.version = SNAPSHOT_VERSION - 1
    with pytest.raises(SnapshotRejected):
        ControlState(POLICY).restore(0, pickle.dumps(old))


def test_a_snapshot_is_the_state_when_taken_though_pickled_later() -> None:
    state = ControlState(POLICY)
    for fact in (opened("a1", "m1"), raised("a1", T)):
        state.fold(fact)
    later = state.snapshot(0)
    state.fold(cleared("a1", T + timedelta(minutes=1)))
    restored = ControlState(POLICY)
    restored.restore(0, later())
    assert restored.meters[(P, "m1")].policy.arrears and not state.meters[(P, "m1")].policy.arrears


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now


def test_old_alarms_hold_their_commands_until_the_meter_settles() -> None:
    """Billing catching up (or replaying its log) re-derives past arrears episodes: a raised and
    cleared pair from an hour ago must not trip and restore the meter; an old alarm still active
    trips once the meter's facts have been quiet for ``settle_s``; a fresh alarm trips at once."""
    clock = _Clock(T + timedelta(hours=1))
    state = ControlState(POLICY, stale_after_s=120, settle_s=5, clock=clock)
    state.fold(opened("a1", "m1", "m2"))
    assert requests(state.fold(raised("a1", T, meters="m1"))) == []  # an hour old: held
    assert requests(state.fold(cleared("a1", T + timedelta(minutes=2)))) == []
    clock.now += 6
    assert state.tick(clock.now) == []  # the episode ended in the past: nothing to do
    assert state.fold(raised("a1", T + timedelta(minutes=3), meters="m2")) == []
    assert state.tick(clock.now + 1) == []  # still settling
    (trip,) = [e for e in CODEC.decode(state.tick(clock.now + 6)[0].value) if isinstance(e, CommandRequested)]
    assert (trip.meter_id, trip.action) == ("m2", Action.TRIP)
    fresh = raised("a1", datetime.fromtimestamp(clock.now + 6, UTC), meters="m1")
    assert [(c.meter_id, c.action) for c in requests(state.fold(fresh))] == [("m1", Action.TRIP)]


def test_prices_published_ahead_go_to_the_meters_on_the_tick_after_they_take_effect() -> None:
    state = ControlState(POLICY)
    state.fold(registered("m1", "DDSY1352"))
    state.fold(tariff(1, TOU))
    assert len(requests(state.fold(opened("a1", "m1")))) == 1
    effective = T + timedelta(days=30)
    dearer = {**TOU, "prices": {"peak": "60", "valley": "30"}}
    ahead = TariffPublished(**env(T + timedelta(hours=1), "t1", event_id="t1-v2"), tariff_id="t1", version=2,
                            name="t1", effective_from=effective, definition=dearer)  # fmt: skip
    assert requests(state.fold(ahead)) == []

    def downloads(now: datetime) -> list[CommandRequested]:  # the first download timed out meanwhile
        return requests([e for out in state.tick(now.timestamp()) for e in CODEC.decode(out.value)])

    assert downloads(effective - timedelta(minutes=1)) == []
    (command,) = downloads(effective)
    assert command.meter_id == "m1" and command.params["price.peak"] == "60"
    assert downloads(effective + timedelta(minutes=1)) == []
