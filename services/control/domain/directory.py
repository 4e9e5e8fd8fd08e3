"""Which meters a fact concerns: control folds per meter, but some facts name an account.

Arrears alarms are raised on the *account* (``AlarmRaised.subject_id`` = account id, see
``services/billing/domain/alarms.py``); :func:`route` fans them out to the account's meters,
learnt from ``AccountOpened``. An alarm whose subject is a known meter goes to that meter.
Facts with a ``meter_id`` go to that meter. Anything else concerns no meter.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from libs.events.base import Event
from libs.events.billing import AccountOpened, AlarmCleared, AlarmRaised


@dataclass(frozen=True)
class Directory:
    accounts: dict[str, tuple[str, ...]] = field(default_factory=dict)


def apply(directory: Directory, event: Event) -> Directory:
    if isinstance(event, AccountOpened):
        return replace(directory, accounts={**directory.accounts, event.account_id: event.meter_ids})
    return directory


def route(directory: Directory, event: Event) -> tuple[str, ...]:
    """The meter ids whose policy fold must see ``event``."""
    if isinstance(event, AlarmRaised | AlarmCleared):
        return directory.accounts.get(event.subject_id, (event.subject_id,))
    meter_id = getattr(event, "meter_id", None)
    return (meter_id,) if isinstance(meter_id, str) else ()
