"""The command lifecycle of one meter (MISSION.md C7), as a pure fold with an audit trail.

A command is *pending* (requested, waiting for its next attempt) → *sent* (attempt n on the bus)
→ *acknowledged* by the meter, or ends *failed*, *timed_out* or *superseded*. Rules:

- **Retries**: a failed or timed-out attempt n (``n < max_attempts``) makes the command pending
  again, due ``backoff_s × factor^(n-1)`` (capped at ``max_backoff_s``) after the failure.
  ``CommandFailed(will_retry=False)`` ends it at once (the sender knows the meter refused).
- **Timeouts**: :func:`decide` emits ``CommandTimedOut(attempt=n)`` when attempt n has no reply
  within ``attempt_timeout_s``, and ``CommandTimedOut(attempt=None)`` at the command's deadline
  (``expires_at`` or ``requested + command_timeout_s``, the earlier). A command that ends timed
  out — its deadline passed, or its last attempt timed out — escalates to
  ``AlarmRaised(kind=command_timeout)`` on the meter.
- **Superseding**: a new command on the same meter and channel (relay, valve, keep_power, …)
  supersedes an older one that has not ended; the channel's pending command is the newest.
- **Acknowledged is final**: nothing but an acknowledgement changes an acknowledged command;
  a late acknowledgement of a superseded / failed / timed-out command is recorded (the meter did
  act) and updates the channel's confirmed state if it is the latest confirmation.
- **Abandonment is a fact**: a command that ends failed, timed out or superseded is listed in
  ``unreported`` until its ``CommandAbandoned`` (from :func:`abandonments`, with an id derived
  from the command id) is applied — as the worker emits it, or as it comes back from the log in a
  replay — or until it is acknowledged after all. So each such end is published once, and the
  retry rule (:class:`RetryPolicy`, ``RETRIABLE_REASONS``) stays control's alone.
- **Idempotent**: a redelivered event (same event id) changes nothing; ids of emitted facts are
  derived from the command id and attempt, so re-deciding emits the same ids.
- **Bounded**: a channel keeps its newest ``KEEP_ENDED`` ended commands (with their audit); an
  older one is dropped and the channel remembers the request time of the newest it dropped — a
  request not newer than that (a redelivery of a dropped command) changes nothing, and facts about
  a dropped command are ignored like those of any unknown command. A meter remembers the ids of
  its last ``RECENT_IDS`` facts. So a meter's state stays the same size however long it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from libs.events.base import Event, event_id_for
from libs.events.billing import AlarmKind, AlarmRaised
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


class Status(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SUPERSEDED = "superseded"


ENDED = frozenset({Status.ACKNOWLEDGED, Status.FAILED, Status.TIMED_OUT, Status.SUPERSEDED})
ABANDONED = {Status.FAILED: Outcome.FAILED, Status.TIMED_OUT: Outcome.TIMED_OUT,
             Status.SUPERSEDED: Outcome.SUPERSEDED}  # fmt: skip
KEEP_ENDED = 32  # per meter and channel
RECENT_IDS = 256  # per meter
CHANNELS = {
    Action.TRIP: "relay", Action.CLOSE: "relay", Action.VALVE_OPEN: "valve", Action.VALVE_CLOSE: "valve",
    Action.KEEP_POWER_ON: "keep_power", Action.KEEP_POWER_OFF: "keep_power",
    Action.ALARM_ON: "alarm", Action.ALARM_OFF: "alarm",
}  # fmt: skip


def channel_of(command: CommandRequested) -> str:
    """What a command sets on the meter; parameter downloads are one channel per operation."""
    if command.action is Action.SET_PARAMETER:
        return f"parameters:{command.params.get('operation', 'set')}"
    return CHANNELS.get(command.action, command.action.value)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 10
    factor: float = 2
    max_backoff_s: float = 300
    attempt_timeout_s: float = 30
    command_timeout_s: float = 900

    def backoff(self, attempt: int) -> timedelta:
        return timedelta(seconds=min(self.max_backoff_s, self.backoff_s * self.factor ** (attempt - 1)))


@dataclass(frozen=True)
class AuditRecord:
    command_id: str
    event_id: str
    at: datetime
    before: Status | None
    after: Status
    actor: str  # requested_by, "sender", "meter" or "lifecycle"
    reason: str


@dataclass(frozen=True)
class CommandView:
    request: CommandRequested
    channel: str
    status: Status
    deadline: datetime
    attempt: int = 0
    sent_at: datetime | None = None
    next_attempt_at: datetime | None = None
    audit: tuple[AuditRecord, ...] = ()


@dataclass(frozen=True)
class ChannelView:
    """The queryable state of one relay / valve / flag of a meter."""

    confirmed: Action | None = None  # the last action the meter acknowledged
    confirmed_at: datetime | None = None
    pending: str | None = None  # command id
    pending_since: datetime | None = None
    dropped_up_to: datetime | None = None  # request time of the newest command dropped (KEEP_ENDED)


@dataclass(frozen=True)
class MeterCommands:
    project_id: str
    meter_id: str
    policy: RetryPolicy = RetryPolicy()
    commands: dict[str, CommandView] = field(default_factory=dict)
    channels: dict[str, ChannelView] = field(default_factory=dict)
    seen: tuple[str, ...] = ()  # ids of the last RECENT_IDS facts
    unreported: tuple[str, ...] = ()  # commands ended unacknowledged, without a CommandAbandoned yet


def _move(
    view: CommandView, event: Event, after: Status, actor: str, reason: str, **changes: object
) -> CommandView:
    record = AuditRecord(
        view.request.command_id, event.event_id, event.time, view.status, after, actor, reason
    )
    return replace(view, status=after, audit=(*view.audit, record), **changes)  # type: ignore[arg-type]


def _on_request(state: MeterCommands, req: CommandRequested) -> MeterCommands:
    channel = channel_of(req)
    dropped_up_to = state.channels.get(channel, ChannelView()).dropped_up_to
    if req.command_id in state.commands or (dropped_up_to is not None and req.time <= dropped_up_to):
        return state
    deadline = req.time + timedelta(seconds=state.policy.command_timeout_s)
    if req.expires_at is not None:
        deadline = min(deadline, req.expires_at)
    commands, unreported = dict(state.commands), state.unreported
    old = state.channels.get(channel, ChannelView())
    if old.pending is not None and commands[old.pending].status not in ENDED:
        reason = f"superseded by {req.command_id}"
        commands[old.pending] = _move(commands[old.pending], req, Status.SUPERSEDED, req.requested_by, reason)
        unreported = (*unreported, old.pending)
    record = AuditRecord(
        req.command_id, req.event_id, req.time, None, Status.PENDING, req.requested_by, req.reason
    )
    commands[req.command_id] = CommandView(
        req, channel, Status.PENDING, deadline, 0, None, req.time, (record,)
    )
    channels = {**state.channels, channel: replace(old, pending=req.command_id, pending_since=req.time)}
    return replace(state, commands=commands, channels=channels, unreported=unreported)


def _end_pending(state: MeterCommands, view: CommandView) -> dict[str, ChannelView]:
    ch = state.channels.get(view.channel, ChannelView())
    if ch.pending != view.request.command_id:
        return state.channels
    return {**state.channels, view.channel: replace(ch, pending=None, pending_since=None)}


def _transition(state: MeterCommands, view: CommandView, event: Event) -> MeterCommands:
    """The command view (and channel) after a sender / meter / timeout fact."""
    policy, channels, unreported = state.policy, state.channels, state.unreported
    cid = view.request.command_id
    if isinstance(event, CommandAbandoned):
        return replace(state, unreported=tuple(c for c in unreported if c != cid))
    if isinstance(event, CommandAcknowledged):
        if view.status is Status.ACKNOWLEDGED:
            return state
        unreported = tuple(c for c in unreported if c != cid)  # the meter did act after all
        view = _move(view, event, Status.ACKNOWLEDGED, "meter", event.confirmed_state or "acknowledged")
        channels = _end_pending(state, view)
        ch = channels.get(view.channel, ChannelView())
        if ch.confirmed_at is None or event.time >= ch.confirmed_at:
            channels = {
                **channels,
                view.channel: replace(ch, confirmed=view.request.action, confirmed_at=event.time),
            }
    elif view.status in ENDED:
        return state  # late sender facts never reopen an ended command
    elif isinstance(event, CommandSent):
        view = _move(view, event, Status.SENT, "sender", f"attempt {event.attempt}",
                     attempt=event.attempt, sent_at=event.time, next_attempt_at=None)  # fmt: skip
    elif isinstance(event, CommandFailed | CommandTimedOut):
        whole = isinstance(event, CommandTimedOut) and event.attempt is None
        if (
            isinstance(event, CommandTimedOut)
            and not whole
            and (view.status, view.attempt) != (Status.SENT, event.attempt)
        ):
            return state  # a stale attempt timeout
        attempt = view.attempt if isinstance(event, CommandTimedOut) else event.attempt
        retry = not whole and attempt < policy.max_attempts and getattr(event, "will_retry", True)
        reason = getattr(event, "reason", "no reply in time")
        actor = "lifecycle" if isinstance(event, CommandTimedOut) else "sender"
        if retry:
            nxt = event.time + policy.backoff(attempt)
            view = _move(
                view,
                event,
                Status.PENDING,
                actor,
                f"{reason}; retry at {nxt.isoformat()}",
                next_attempt_at=nxt,
            )
        else:
            final = Status.TIMED_OUT if isinstance(event, CommandTimedOut) else Status.FAILED
            view = _move(view, event, final, actor, reason, next_attempt_at=None)
            channels = _end_pending(state, view)
            unreported = (*unreported, cid)
    else:
        return state
    commands = {**state.commands, cid: view}
    return replace(state, commands=commands, channels=channels, unreported=unreported)


def apply(state: MeterCommands, event: Event) -> MeterCommands:
    """Fold one lifecycle fact of this meter; unknown commands and redeliveries change nothing."""
    if event.event_id in state.seen:
        return state
    if isinstance(event, CommandRequested):
        state = _on_request(state, event)
        view = state.commands.get(event.command_id)
    elif (view := state.commands.get(getattr(event, "command_id", ""))) is not None:
        state = _transition(state, view, event)
    if view is not None:
        state = _drop_old(state, view.channel)
    return replace(state, seen=(*state.seen, event.event_id)[-RECENT_IDS:])


def _drop_old(state: MeterCommands, channel: str) -> MeterCommands:
    """Keep the channel's newest ``KEEP_ENDED`` ended commands; drop the older ones."""
    ended = [v for v in state.commands.values() if v.channel == channel and v.status in ENDED]
    if len(ended) <= KEEP_ENDED:
        return state
    ended.sort(key=lambda v: (v.request.time, v.request.command_id))
    dropped = ended[: len(ended) - KEEP_ENDED]
    gone = {v.request.command_id for v in dropped}
    ch = state.channels.get(channel, ChannelView())
    newest = max(v.request.time for v in dropped)
    if ch.dropped_up_to is not None:
        newest = max(newest, ch.dropped_up_to)
    return replace(
        state,
        commands={cid: v for cid, v in state.commands.items() if cid not in gone},
        channels={**state.channels, channel: replace(ch, dropped_up_to=newest)},
        unreported=tuple(cid for cid in state.unreported if cid not in gone),
    )


def decide(state: MeterCommands, now: datetime) -> list[Event]:
    """Timeouts due at ``now``, with a ``command_timeout`` alarm for each command they end."""
    out: list[Event] = []
    for view in state.commands.values():
        if view.status in ENDED:
            continue
        cid = view.request.command_id
        env = {"project_id": state.project_id, "subject_id": state.meter_id, "command_id": cid,
               "meter_id": state.meter_id, "causation_id": view.request.event_id,
               "correlation_id": view.request.correlation_id or view.request.event_id}  # fmt: skip
        if now >= view.deadline:
            eid = event_id_for(state.project_id, "command_timed_out", cid, "all")
            out += [CommandTimedOut(event_id=eid, time=now, deadline=view.deadline, **env)]
        elif view.status is Status.SENT and view.sent_at is not None:
            limit = view.sent_at + timedelta(seconds=state.policy.attempt_timeout_s)
            if now < limit:
                continue
            eid = event_id_for(state.project_id, "command_timed_out", cid, str(view.attempt))
            out += [CommandTimedOut(event_id=eid, time=now, attempt=view.attempt, deadline=limit, **env)]
            if view.attempt < state.policy.max_attempts:
                continue
        else:
            continue
        alarm_id = event_id_for(state.project_id, "alarm", state.meter_id, "command_timeout", cid)
        out.append(
            AlarmRaised(
                event_id=event_id_for(state.project_id, "alarm_raised", alarm_id),
                alarm_id=alarm_id,
                kind=AlarmKind.COMMAND_TIMEOUT,
                severity=2,
                time=now,
                message=f"meter {state.meter_id}: {view.request.action} not confirmed in time",
                details={
                    "command_id": cid,
                    "action": view.request.action.value,
                    "requested_by": view.request.requested_by,
                    "attempts": str(view.attempt),
                },
                project_id=state.project_id,
                subject_id=state.meter_id,
                causation_id=view.request.event_id,
                correlation_id=env["correlation_id"],
            )
        )
    return out


def abandonments(state: MeterCommands) -> list[CommandAbandoned]:
    """A ``CommandAbandoned`` for each command that ended failed, timed out or superseded and has
    none yet; apply them, like every fact of this fold. Each is stamped with the time of the fact
    that ended the command (its cause) and has an id derived from the command id, so deciding again
    — a replay, a restart — gives the same fact."""
    out = []
    for cid in state.unreported:
        view = state.commands[cid]
        end = view.audit[-1]  # an ended command changes no more, but for a late acknowledgement
        req = view.request
        out.append(
            CommandAbandoned(
                event_id=event_id_for(state.project_id, "command_abandoned", cid),
                project_id=state.project_id,
                subject_id=state.meter_id,
                time=end.at,
                causation_id=end.event_id,
                correlation_id=req.correlation_id or req.event_id,
                command_id=cid,
                meter_id=state.meter_id,
                action=req.action,
                outcome=ABANDONED[view.status],
                attempts=view.attempt,
                reason=end.reason,
                requested_by=req.requested_by,
            )
        )
    return out


def due(state: MeterCommands, now: datetime) -> list[CommandView]:
    """Commands whose next attempt (``view.attempt + 1``) should go out at ``now``."""
    return [
        v
        for v in state.commands.values()
        if v.status is Status.PENDING
        and v.next_attempt_at is not None
        and v.next_attempt_at <= now < v.deadline
    ]


def next_wake(state: MeterCommands) -> datetime | None:
    """The earliest moment :func:`due` or :func:`decide` may return something new."""
    moments: list[datetime] = []
    for v in state.commands.values():
        if v.status in ENDED:
            continue
        moments.append(v.deadline)
        if v.next_attempt_at is not None:
            moments.append(v.next_attempt_at)
        if v.status is Status.SENT and v.sent_at is not None:
            moments.append(v.sent_at + timedelta(seconds=state.policy.attempt_timeout_s))
    return min(moments, default=None)


def channel(state: MeterCommands, name: str = "relay") -> ChannelView:
    """The queryable state of a meter's relay (or valve, keep_power …): confirmed and pending."""
    return state.channels.get(name, ChannelView())
