"""Purchase-count reconciliation (MISSION.md B3: catch recharges that bypass the platform).

Prepaid meters keep their own purchase counter (``ReadingRecorded.purchase_count``). The first
count read after the account opened fixes the offset ``count − recharges so far``; after that
the meter should show ``offset + recharges``. A meter *ahead* of that was recharged by some
other means (a cloned card, a tampered kiosk): ``AlarmRaised`` purchase_count_mismatch, once per
count seen. A meter *behind* is normal — the platform's recharge is still being written to it.
The alarm is not cleared automatically: a later recharge could make the counts equal again
while the unknown purchase stays unexplained, so an operator closes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.events.acquisition import ReadingRecorded
from libs.events.base import Event, event_id_for
from libs.events.billing import AlarmKind, AlarmRaised
from services.billing.domain.ledger import AccountState


@dataclass(frozen=True)
class PurchaseWatch:
    offset: int | None = None
    alarmed_count: int | None = None


def reconcile(
    watch: PurchaseWatch, account: AccountState, fact: ReadingRecorded
) -> tuple[PurchaseWatch, list[Event]]:
    count = fact.purchase_count
    if count is None:
        return watch, []
    if watch.offset is None:
        return PurchaseWatch(offset=count - account.recharges), []
    expected = watch.offset + account.recharges
    if count <= expected or count == watch.alarmed_count:
        return watch, []
    alarm_id = event_id_for(account.project_id, "alarm", fact.meter_id, "purchase_count", str(count))
    raised = AlarmRaised(
        event_id=event_id_for(account.project_id, "alarm_raised", alarm_id),
        project_id=account.project_id,
        subject_id=fact.meter_id,
        time=fact.time,
        causation_id=fact.event_id,
        correlation_id=fact.correlation_id or fact.event_id,
        alarm_id=alarm_id,
        kind=AlarmKind.PURCHASE_COUNT_MISMATCH,
        severity=3,
        message=f"meter {fact.meter_id} shows {count} purchases, the platform recorded {expected}",
        details={"account_id": account.account_id, "meter_count": str(count), "expected": str(expected)},
    )
    return PurchaseWatch(watch.offset, count), [raised]
