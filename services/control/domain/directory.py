"""Which meters a fact concerns: control folds per meter, but some facts name an account.

Arrears alarms are raised on the *account* (``AlarmRaised.subject_id`` = account id, see
``services/billing/domain/alarms.py``), which lists its meters in ``details["meter_ids"]``
(comma-joined). :func:`route` fans an alarm out to those meters; an alarm without the list goes
to the account's meters learnt from ``AccountOpened``, and an alarm whose subject is not a known
account is taken to be about that meter. ``AlarmCleared`` lists no meters: it goes where the
alarm with the same ``alarm_id`` went. Facts with a ``meter_id`` go to that meter. Anything else
concerns no meter.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from libs.events.base import Event
from libs.events.billing import AccountOpened, AlarmCleared, AlarmRaised


@dataclass(frozen=True)
class Directory:
    accounts: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (project, account)
    alarms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # active alarm id → meters


def apply(directory: Directory, event: Event) -> Directory:
    """Learn accounts' meters, and where active alarms went (route the event first)."""
    if isinstance(event, AccountOpened):
        key = (event.project_id, event.account_id)
        return replace(directory, accounts={**directory.accounts, key: event.meter_ids})
    if isinstance(event, AlarmRaised):
        return replace(directory, alarms={**directory.alarms, event.alarm_id: route(directory, event)})
    if isinstance(event, AlarmCleared) and event.alarm_id in directory.alarms:
        alarms = dict(directory.alarms)
        del alarms[event.alarm_id]
        return replace(directory, alarms=alarms)
    return directory


def route(directory: Directory, event: Event) -> tuple[str, ...]:
    """The meter ids whose policy fold must see ``event``."""
    if isinstance(event, AlarmRaised):
        listed = tuple(m for m in event.details.get("meter_ids", "").split(",") if m)
        return listed or directory.accounts.get((event.project_id, event.subject_id), (event.subject_id,))
    if isinstance(event, AlarmCleared):
        known = directory.alarms.get(event.alarm_id)
        return known or directory.accounts.get((event.project_id, event.subject_id), (event.subject_id,))
    meter_id = getattr(event, "meter_id", None)
    return (meter_id,) if isinstance(meter_id, str) else ()
