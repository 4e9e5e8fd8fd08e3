"""The status of a command as the API shows it (C7), folded from ``mf.commands``.

One entry per command that someone (an operator, a policy, a batch) requested. Control carries a
retry as a new ``CommandRequested`` with ``params["retry_of"]`` naming the command: that attempt
is no command of its own here; its sender facts count for the command it retries (``attempts`` =
its attempt number), as control counts them.

``status`` is what happened last: ``requested`` → ``sent`` → ``acknowledged``, or ``failed`` /
``timed_out`` for an attempt (``detail``: the reason). Whether that is the end is not for the API
to judge: control retries by its own rule and says when it gives up (``CommandAbandoned``: status
``failed``, ``timed_out`` or ``superseded``, with its reason). ``final`` is true, with
``ended_at``, once the command was acknowledged or abandoned; ``failed`` with ``final`` false is
an attempt that failed while control may still retry. A meter that acknowledges an abandoned
command late did act: ``acknowledged`` wins, and ``ended_at`` stays the abandonment's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from libs.events import control as ctl
from libs.events.base import Event

if TYPE_CHECKING:
    from services.api.views import Views

STATUSES = ("requested", "sent", "acknowledged", "failed", "timed_out", "superseded")
_RELAY = {ctl.Action.TRIP: "tripped", ctl.Action.CLOSE: "closed", ctl.Action.KEEP_POWER_ON: "closed"}


@dataclass
class Command:
    project_id: str
    command_id: str
    meter_id: str
    action: str
    requested_by: str
    reason: str
    params: dict[str, str]
    requested_at: datetime
    status: str = "requested"  # one of STATUSES
    attempts: int = 0
    detail: str = ""
    updated_at: datetime | None = None
    final: bool = False  # acknowledged, or abandoned by control: nothing further will be tried
    ended_at: datetime | None = None


def fold_command(v: Views, e: Event) -> None:
    """Fold one fact of ``mf.commands`` into ``v.commands`` (idempotent: redelivery sets the same)."""
    if isinstance(e, ctl.CommandRequested):
        _requested(v, e)
        return
    key = (e.project_id, getattr(e, "command_id", ""))
    retry_of, attempt = v.command_attempts.get(key, (key[1], None))
    command = v.commands.get((e.project_id, retry_of))
    if command is None:
        return
    if isinstance(e, ctl.CommandAcknowledged):
        command.status, command.detail = "acknowledged", e.confirmed_state or ""
        _end(command, e)
        relay = _RELAY.get(ctl.Action(command.action))
        meter = v.meters.get((e.project_id, command.meter_id))
        if relay is not None and meter is not None:
            meter.relay = relay
    elif isinstance(e, ctl.CommandAbandoned):
        if command.status != "acknowledged":
            command.status, command.detail = e.outcome.value, e.reason
        command.attempts = max(command.attempts, e.attempts)
        _end(command, e)
    elif command.final:
        return  # late sender facts never reopen an ended command
    elif isinstance(e, ctl.CommandSent):
        command.status, command.attempts = "sent", max(command.attempts, attempt or e.attempt)
    elif isinstance(e, ctl.CommandFailed):
        command.status = "sent" if e.will_retry else "failed"
        command.attempts, command.detail = max(command.attempts, attempt or e.attempt), e.reason
    elif isinstance(e, ctl.CommandTimedOut):
        command.status, command.detail = "timed_out", "no reply in time"
    else:
        return
    command.updated_at = e.time


def _requested(v: Views, e: ctl.CommandRequested) -> None:
    retry_of = e.params.get("retry_of")
    if retry_of is not None and (e.project_id, retry_of) in v.commands:
        n = e.params.get("attempt", "")
        v.command_attempts[(e.project_id, e.command_id)] = (retry_of, int(n) if n.isdigit() else 2)
        return
    key = (e.project_id, e.command_id)
    if key not in v.commands:
        v.commands[key] = Command(
            e.project_id, e.command_id, e.meter_id, e.action.value, e.requested_by, e.reason, dict(e.params),
            e.time,
        )  # fmt: skip


def _end(command: Command, e: Event) -> None:
    command.final, command.ended_at = True, command.ended_at or e.time
