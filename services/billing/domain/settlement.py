"""Postpaid monthly settlement bills (MISSION.md B5) and platform-side freezes (A5).

Bills: a charge belongs to the month (in the billing zone) in which its reading interval *ends*
(an interval ending exactly at 00:00 on the 1st belongs to the month it closes); lines of the
month are merged per (tariff, version, category, component, rate, tier, price), summing units and
the already-rounded line amounts — a bill total always equals the sum of the charges the ledger
deducted, to the fen. A month's bill is issued (``SettlementIssued``) as soon as *every* meter of
the account has been charged for a later month: readings are ordered per meter, so no charge of
that month can still come, and the bill is the same whatever the interleaving of meters (live or
replay). Daily freeze readings at midnight keep month ends exact in practice.

Freezes: :func:`freeze_points` lists the configured local instants inside an interval of event
time. When a meter's reading passes an instant, billing emits ``MeterFrozen`` for it: the
registers last read at or before the instant (the new reading when it falls exactly on it), and
the account's balance right after the charge of those registers — per meter, so again
independent of how meters interleave.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from libs.events.acquisition import Rate
from libs.events.base import Event, event_id_for
from libs.events.billing import ChargeApplied, ChargeLine, FreezeKind, MeterFrozen, SettlementIssued
from services.billing.domain.consumption import Snapshot
from services.billing.domain.ledger import AccountState

LineKey = tuple[str, int, str, str, Rate, int, Decimal]


def period_of(end: datetime, zone: ZoneInfo) -> str:
    """The month (``YYYY-MM``) a reading interval ending at ``end`` belongs to."""
    return f"{(end - timedelta(microseconds=1)).astimezone(zone):%Y-%m}"


@dataclass(frozen=True)
class BillDraft:
    """The lines of one account-month so far (immutable: :meth:`add` returns a new draft)."""

    merged: tuple[tuple[LineKey, Decimal, int], ...] = ()
    charges: int = 0

    def add(self, charge: ChargeApplied) -> BillDraft:
        merged = {k: (u, a) for k, u, a in self.merged}
        for ln in charge.lines:
            key = (ln.tariff_id, ln.version, ln.category, ln.component, ln.rate, ln.tier, ln.price_fen)
            units, amount = merged.get(key, (Decimal(0), 0))
            merged[key] = (units + ln.units, amount + ln.amount_fen)
        return BillDraft(tuple((k, u, a) for k, (u, a) in merged.items()), self.charges + 1)

    def lines(self) -> tuple[ChargeLine, ...]:
        ordered = sorted(self.merged, key=lambda m: (m[0][0], m[0][1], m[0][5], m[0][2:5]))
        return tuple(
            ChargeLine(tariff_id=k[0], version=k[1], category=k[2], component=k[3], rate=k[4], tier=k[5],
                       price_fen=k[6], units=u, amount_fen=a)
            for k, u, a in ordered
        )  # fmt: skip

    def issue(self, account_id: str, period: str, cause: Event) -> SettlementIssued:
        """The bill of ``period``, caused by the charge that closed it."""
        lines = self.lines()
        energy = lines[0].component if lines else ""
        return SettlementIssued(
            event_id=event_id_for(cause.project_id, "settlement", account_id, period),
            project_id=cause.project_id,
            subject_id=account_id,
            time=cause.time,
            causation_id=cause.event_id,
            correlation_id=cause.correlation_id or cause.event_id,
            account_id=account_id,
            period=period,
            lines=lines,
            units=sum((ln.units for ln in lines if ln.component == energy), Decimal(0)),
            total_fen=sum(ln.amount_fen for ln in lines),
            charges=self.charges,
        )


def monthly_bill(
    account_id: str, period: str, charges: Iterable[ChargeApplied], zone: ZoneInfo
) -> SettlementIssued | None:
    """The bill of ``period`` from a list of charges (None when none falls in it)."""
    draft, last = BillDraft(), None
    for charge in charges:
        if charge.account_id == account_id and period_of(charge.end, zone) == period:
            draft, last = draft.add(charge), charge
    return draft.issue(account_id, period, last) if last is not None else None


@dataclass(frozen=True)
class FreezeSchedule:
    daily_at: time = time(0)
    monthly_day: int = 1
    monthly_at: time = time(0)
    timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        if not 1 <= self.monthly_day <= 28:
            raise ValueError(f"monthly freeze day must be 1..28, got {self.monthly_day}")


def freeze_points(
    schedule: FreezeSchedule, after: datetime, until: datetime
) -> list[tuple[Literal["daily", "monthly"], str, datetime]]:
    """(kind, key, instant) for every freeze instant in (after, until], oldest first."""
    zone = ZoneInfo(schedule.timezone)
    out: list[tuple[Literal["daily", "monthly"], str, datetime]] = []
    day = after.astimezone(zone).date()
    while day <= until.astimezone(zone).date():
        daily = datetime.combine(day, schedule.daily_at, zone)
        if after < daily <= until:
            out.append(("daily", day.isoformat(), daily))
        monthly = datetime.combine(day, schedule.monthly_at, zone)
        if day.day == schedule.monthly_day and after < monthly <= until:
            out.append(("monthly", f"{day:%Y-%m}", monthly))
        day += timedelta(days=1)
    return sorted(out, key=lambda p: (p[2], p[0]))


def next_point(schedule: FreezeSchedule, after: datetime) -> datetime:
    """The first freeze instant strictly after ``after``."""
    # A daily instant falls in every 2-day window, so the first point of that window is the next one.
    return freeze_points(schedule, after, after + timedelta(days=2))[0][2]


def frozen(
    account: AccountState, reading: Snapshot, kind: str, label: str, at: datetime, cause: Event
) -> MeterFrozen:
    """The freeze of one meter at ``at`` from the registers last read at or before it."""
    return MeterFrozen(
        event_id=event_id_for(account.project_id, "freeze", cause.subject_id, kind, label),
        project_id=account.project_id,
        subject_id=account.account_id,
        time=at,
        causation_id=cause.event_id,
        correlation_id=cause.correlation_id or cause.event_id,
        account_id=account.account_id,
        meter_id=cause.subject_id,
        kind=FreezeKind(kind),
        label=label,
        at=at,
        read_at=reading.time,
        registers=reading.registers,
        balance_fen=account.balance_fen,
    )
