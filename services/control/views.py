"""Read models of the control state: the relay (or valve) of a meter, a command with its audit.

Plain functions of :class:`~services.control.worker.ControlState`, returning JSON-ready dicts;
the HTTP routes in :mod:`services.control.web` only call them.

The state of a supply switch is what the meter last *acknowledged* (``on`` = relay closed /
valve open, ``off`` = tripped / closed), ``unknown`` until a first acknowledgement; a command on
its way is shown as ``pending`` next to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from libs.events.acquisition import Medium
from services.control.domain import lifecycle, policy
from services.control.domain.lifecycle import CommandView
from services.control.worker import Meter

STATES = ("on", "off", "unknown", "pending")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def relay(meter: Meter, now: datetime) -> dict[str, Any]:
    """The supply switch of one meter: confirmed state, pending command, and the policy's verdict."""
    name = "relay" if meter.policy.medium is Medium.ELECTRICITY else "valve"
    ch = lifecycle.channel(meter.commands, name)
    pending = meter.commands.commands.get(ch.pending) if ch.pending is not None else None
    verdict = policy.desired(meter.policy, now)
    keep_power = lifecycle.channel(meter.commands, "keep_power")
    return {
        "project_id": meter.policy.project_id,
        "meter_id": meter.policy.meter_id,
        "switch": name,
        "state": policy.ACTION_SUPPLY[ch.confirmed].value if ch.confirmed is not None else "unknown",
        "confirmed_action": ch.confirmed.value if ch.confirmed is not None else None,
        "confirmed_at": _iso(ch.confirmed_at),
        "pending": None
        if pending is None
        else {
            "command_id": pending.request.command_id,
            "action": pending.request.action.value,
            "status": pending.status.value,
            "attempt": pending.attempt,
            "since": _iso(ch.pending_since),
        },
        "commanded": meter.policy.commanded.value,
        "desired": {
            "supply": verdict.supply.value,
            "source": verdict.source,
            "requested_by": verdict.requested_by,
            "reason": verdict.reason,
        },
        "keep_power": meter.policy.keep_power is not None,
        "keep_power_confirmed": keep_power.confirmed.value if keep_power.confirmed is not None else None,
        "forced": meter.policy.forced.state.value if meter.policy.forced is not None else None,
        "arrears": meter.policy.arrears,
    }


def meters(
    known: Mapping[tuple[str, str], Meter], now: datetime, wanted: str | None = None
) -> list[dict[str, Any]]:
    """Every meter's switch (of ``known``: a state's meters), optionally only those in state
    ``wanted`` (on|off|unknown|pending)."""
    out = []
    for key in sorted(known):
        view = relay(known[key], now)
        if wanted is None or view["state"] == wanted or (wanted == "pending" and view["pending"]):
            out.append(view)
    return out


def command(view: CommandView) -> dict[str, Any]:
    """A command, its current status and its audit trail (who asked, why, what happened)."""
    req = view.request
    return {
        "command_id": req.command_id,
        "project_id": req.project_id,
        "meter_id": req.meter_id,
        "action": req.action.value,
        "channel": view.channel,
        "requested_by": req.requested_by,
        "reason": req.reason,
        "params": req.params,
        "status": view.status.value,
        "attempt": view.attempt,
        "deadline": _iso(view.deadline),
        "next_attempt_at": _iso(view.next_attempt_at),
        "audit": [
            {
                "at": _iso(r.at),
                "event_id": r.event_id,
                "before": r.before.value if r.before is not None else None,
                "after": r.after.value,
                "actor": r.actor,
                "reason": r.reason,
            }
            for r in view.audit
        ],
    }
