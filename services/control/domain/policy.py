"""The desired supply state of one meter, and the commands that change it (MISSION.md C1–C6).

The state is one meter's fold (the Kafka key of control is the meter id). Facts about an
account (arrears alarms) are routed to the account's meters by :mod:`.directory`.

Priority, highest first — the first input with an opinion decides:

1. **forced** on / off (operator, C2) — pins the supply until cleared.
2. **socket reset** (operator, C4) — off for ``off_seconds``, then the rest decides again.
3. **keep-power** 保电 (operator, C1) — on: blocks every automatic trip below.
4. **prepaid** — off while an ``arrears`` alarm is active; restored when it clears.
5. **load control** 负控 — off while the load breaker holds (see :mod:`.protection`).
6. **malignant load** 恶性负载 — off while the malignant-load breaker holds.
7. **time control** 时控 — off inside a schedule's off period (see :mod:`.schedules`).
8. otherwise on.

Rules:

- A command is emitted only when the verdict changes (differs from the verdict when the last
  fact was applied) *and* differs from the last supply command requested for the meter by
  anyone: a manual trip / close stands until the verdict changes (pin it with *forced*).
  Redelivered facts change nothing, and repeated readings emit nothing. A meter remembers the
  ids of its last ``RECENT_IDS`` facts other than readings (operators' and billing's facts: a
  redelivery comes within minutes, long before that many more), and for readings only the
  newest (received_at, sequence) it observed — a reading not newer is a redelivery or stale.
  So its state stays the same size however long it runs.
- Load and malignant-load detection observe a reading only when rule 8 decides (the supply is
  meant to be on by default): no trips are counted under keep-power, forced or during an off.
- Time-driven changes (restore delays, schedule boundaries, socket reset) need a call with
  ``fact=None`` at :func:`next_wake`.
- ``requested_by`` is the operator for rules 1–3 and for a restore caused by an operator fact,
  else ``policy:<name>``; electricity meters get trip / close, water and gas meters valve
  close / open (C6). Keep-power also sets the meter's own 保电 flag (keep_power_on / off).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from libs.events import control as f
from libs.events.acquisition import Medium, MeterRegistered, ReadingRecorded
from libs.events.base import Event, event_id_for
from libs.events.billing import AlarmCleared, AlarmKind, AlarmRaised
from libs.events.control import Action, CommandRequested, Supply
from services.control.domain.protection import LoadLimit, LoadWatch, MalignantRule, MalignantWatch
from services.control.domain.schedules import TimeControl, is_off, next_change

SUPPLY_ACTIONS = {
    True: {Supply.ON: Action.CLOSE, Supply.OFF: Action.TRIP},  # electricity: relay
    False: {Supply.ON: Action.VALVE_OPEN, Supply.OFF: Action.VALVE_CLOSE},  # water, gas: valve
}
ACTION_SUPPLY = {a: s for by_medium in SUPPLY_ACTIONS.values() for s, a in by_medium.items()}
RECENT_IDS = 64


@dataclass(frozen=True)
class Verdict:
    supply: Supply
    source: str  # forced | socket_reset | keep_power | prepaid | load_control | malignant_load | time_control | default
    requested_by: str
    reason: str


@dataclass(frozen=True)
class MeterPolicy:
    project_id: str
    meter_id: str
    medium: Medium = Medium.ELECTRICITY
    forced: f.ForcedStateSet | None = None
    reset: f.SocketResetRequested | None = None
    keep_power: f.KeepPowerSet | None = None
    arrears: bool = False
    load_limit: LoadLimit | None = None
    load: LoadWatch = field(default_factory=LoadWatch)
    malignant_rule: MalignantRule | None = None
    malignant: MalignantWatch = field(default_factory=MalignantWatch)
    schedule: TimeControl | None = None
    commanded: Supply = Supply.ON  # the last supply command requested, by anyone; meters start on
    wanted: Supply = Supply.ON  # the verdict when the last fact was applied
    off_by: str = "policy:default"  # who asked for the last off command, and why
    off_reason: str = ""
    seen: tuple[str, ...] = ()  # ids of the last RECENT_IDS facts other than readings
    reading_mark: tuple[datetime, int] | None = None  # the newest reading observed

    def has_seen(self, fact: Event) -> bool:
        """Whether ``fact`` was applied already (a redelivery) or is a reading not newer than
        the newest one observed."""
        if isinstance(fact, ReadingRecorded):
            return self.reading_mark is not None and _mark(fact) <= self.reading_mark
        return fact.event_id in self.seen

    def saw(self, fact: Event) -> MeterPolicy:
        if isinstance(fact, ReadingRecorded):
            return replace(self, reading_mark=_mark(fact))
        return replace(self, seen=(*self.seen, fact.event_id)[-RECENT_IDS:])


def _mark(reading: ReadingRecorded) -> tuple[datetime, int]:
    return reading.received_at, reading.sequence or 0


def desired(state: MeterPolicy, now: datetime) -> Verdict:
    """The supply the inputs ask for at ``now``, by the priority order above."""
    if state.forced is not None:
        supply = state.forced.state
        return Verdict(supply, "forced", state.forced.operator_id, f"forced {supply}: {state.forced.reason}")
    if state.reset is not None and now < state.reset.time + timedelta(seconds=state.reset.off_seconds):
        return Verdict(Supply.OFF, "socket_reset", state.reset.operator_id, "AC-socket reset")
    if state.keep_power is not None:
        return Verdict(Supply.ON, "keep_power", state.keep_power.operator_id, "keep-power (保电)")
    if state.arrears:
        return Verdict(Supply.OFF, "prepaid", "policy:prepaid", "arrears")
    if state.load.breaker.holding(now):
        locked = " (locked: max restores per day reached)" if state.load.breaker.locked else ""
        return Verdict(Supply.OFF, "load_control", "policy:load_control", "power over limit" + locked)
    if state.malignant.breaker.holding(now):
        locked = " (locked: max restores per day reached)" if state.malignant.breaker.locked else ""
        return Verdict(Supply.OFF, "malignant_load", "policy:malignant_load", "malignant load" + locked)
    if state.schedule is not None and is_off(state.schedule, now):
        return Verdict(Supply.OFF, "time_control", "policy:time_control", "time control off period")
    by = state.off_by if state.off_by.startswith("policy:") else "policy:default"
    return Verdict(Supply.ON, "default", by, f"restore: {state.off_reason or 'no trip condition'} ended")


def _observe(state: MeterPolicy, reading: ReadingRecorded) -> MeterPolicy:
    at = reading.received_at
    if desired(state, at).source != "default":
        return state
    power: Decimal | None = reading.instant.get("power_kw")
    pf: Decimal | None = reading.instant.get("power_factor")
    if state.load_limit is not None:
        state = replace(state, load=state.load.observe(state.load_limit, power, at))
    if state.malignant_rule is not None:
        state = replace(state, malignant=state.malignant.observe(state.malignant_rule, power, pf, at))
    return state


def _absorb(state: MeterPolicy, fact: Event) -> MeterPolicy:
    """The inputs after one fact (not the command it may cause)."""
    match fact:
        case MeterRegistered():
            return replace(state, medium=fact.medium)
        case AlarmRaised(kind=AlarmKind.ARREARS):
            return replace(state, arrears=True)
        case AlarmCleared(kind=AlarmKind.ARREARS):
            return replace(state, arrears=False)
        case ReadingRecorded() if fact.frozen is None:
            return _observe(state, fact)
        case f.ForcedStateSet():
            return replace(state, forced=fact)
        case f.ForcedStateCleared():
            return replace(state, forced=None)
        case f.SocketResetRequested():
            return replace(state, reset=fact)
        case f.KeepPowerSet():
            return replace(state, keep_power=fact)
        case f.KeepPowerCleared():
            return replace(state, keep_power=None)
        case f.LockoutReleased():
            return replace(
                state,
                load=replace(state.load, breaker=state.load.breaker.release()),
                malignant=replace(state.malignant, breaker=state.malignant.breaker.release()),
            )
        case f.LoadLimitSet():
            return replace(state, load_limit=fact.limit, load=LoadWatch())
        case f.MalignantRuleSet():
            return replace(state, malignant_rule=fact.rule, malignant=MalignantWatch())
        case f.TimeControlSet():
            return replace(state, schedule=fact.schedule)
        case CommandRequested() if fact.action in ACTION_SUPPLY:
            supply = ACTION_SUPPLY[fact.action]
            if supply is Supply.OFF:
                load = replace(state.load, over_since=None)
                return replace(
                    state, commanded=supply, off_by=fact.requested_by, off_reason=fact.reason, load=load
                )
            # power comes back: any load seen now is a fresh step
            return replace(state, commanded=supply, malignant=state.malignant.restored())
    return state


def apply(state: MeterPolicy, event: Event) -> MeterPolicy:
    """Fold one fact (an input or a command requested for this meter); redeliveries are no-ops."""
    if state.has_seen(event):
        return state
    state = _absorb(state, event)
    return replace(state.saw(event), wanted=desired(state, event.time).supply)


def _command(
    state: MeterPolicy, action: Action, by: str, reason: str, cause: Event | None, now: datetime
) -> CommandRequested:
    cause_id = cause.event_id if cause is not None else f"tick:{now.isoformat()}"
    command_id = event_id_for(state.project_id, "control", state.meter_id, action.value, cause_id)
    return CommandRequested(
        event_id=command_id,
        project_id=state.project_id,
        subject_id=state.meter_id,
        time=now,
        causation_id=cause.event_id if cause is not None else None,
        correlation_id=(cause.correlation_id or cause.event_id) if cause is not None else None,
        command_id=command_id,
        meter_id=state.meter_id,
        action=action,
        requested_by=by,
        reason=reason,
        priority=50 if by.startswith("policy:") else 80,
    )


def decide(state: MeterPolicy, fact: Event | None, now: datetime) -> list[CommandRequested]:
    """The commands ``fact`` (None: the clock reached ``now``) causes; fold them with :func:`apply`."""
    if fact is not None and (state.has_seen(fact) or isinstance(fact, CommandRequested)):
        return []  # a command is recorded by apply, never answered: a manual trip stands
    before = state
    after = _absorb(state, fact) if fact is not None else state
    out: list[CommandRequested] = []
    electricity = after.medium is Medium.ELECTRICITY
    if electricity and (before.keep_power is None) != (after.keep_power is None):
        action = Action.KEEP_POWER_OFF if after.keep_power is None else Action.KEEP_POWER_ON
        by = (
            fact.operator_id if isinstance(fact, f.KeepPowerCleared | f.KeepPowerSet) else "policy:keep_power"
        )
        out.append(_command(after, action, by, "meter-side keep-power flag", fact, now))
    verdict = desired(after, now)
    if verdict.supply is not after.commanded and verdict.supply is not after.wanted:
        by = verdict.requested_by
        if verdict.source == "default" and isinstance(fact, f.OperatorFact):
            by = fact.operator_id
        action = SUPPLY_ACTIONS[electricity][verdict.supply]
        out.append(_command(after, action, by, verdict.reason, fact, now))
    return out


def step(state: MeterPolicy, fact: Event | None, now: datetime) -> tuple[MeterPolicy, list[CommandRequested]]:
    """decide, then apply the fact and the commands: what a consumer loop does per message."""
    commands = decide(state, fact, now)
    if fact is not None:
        state = apply(state, fact)
    for command in commands:
        state = apply(state, command)
    return state, commands


def next_wake(state: MeterPolicy, now: datetime) -> datetime | None:
    """When a time-driven change may happen next (call :func:`decide` with ``fact=None`` then)."""
    moments = [state.load.breaker.restore_at, state.malignant.breaker.restore_at]
    if state.reset is not None:
        moments.append(state.reset.time + timedelta(seconds=state.reset.off_seconds))
    if state.schedule is not None:
        moments.append(next_change(state.schedule, now))
    future = [m for m in moments if m is not None and m > now]
    return min(future, default=None)
