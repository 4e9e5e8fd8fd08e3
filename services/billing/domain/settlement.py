"""Postpaid monthly settlement bills (MISSION.md B5) and platform-side freeze snapshots (A5).

Bills: a charge belongs to the month (in the bill's zone) in which its reading interval *ends*
(an interval ending exactly at 00:00 on the 1st belongs to the month it closes);
lines of the month are merged per (tariff, version, category, component, rate, tier, price),
summing units and the already-rounded line amounts — a bill total always equals the sum of the
charges the ledger deducted, to the fen. Daily freeze readings at midnight keep month ends
exact in practice.

Freezes: :func:`freeze_points` lists the configured local instants inside an interval of event
time; the service takes :func:`freeze` of the books *before* folding the first event at or after
each instant, so a snapshot holds the last registers read and the balances before that instant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from libs.events.acquisition import Rate
from services.billing.domain.books import Books
from services.billing.domain.consumption import Registers
from services.billing.domain.facts import ChargeApplied


class BillLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tariff_id: str
    version: int
    category: str
    component: str
    rate: Rate
    tier: int
    units: Decimal
    price_fen: Decimal
    amount_fen: int


class SettlementBill(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    project_id: str
    account_id: str
    period: str  # YYYY-MM
    lines: tuple[BillLine, ...]
    units: Decimal  # units of the "energy" components (every tariff kind has one)
    total_fen: int
    charges: int  # how many charges the bill covers


def monthly_bill(
    project_id: str, account_id: str, period: str, charges: Iterable[ChargeApplied], zone: ZoneInfo
) -> SettlementBill:
    merged: dict[tuple[str, int, str, str, Rate, int, Decimal], tuple[Decimal, int]] = {}
    count = 0
    for charge in charges:
        closes = charge.end - timedelta(
            microseconds=1
        )  # a reading at 00:00 on the 1st closes the month before
        if charge.account_id != account_id or f"{closes.astimezone(zone):%Y-%m}" != period:
            continue
        count += 1
        for ln in charge.lines:
            key = (ln.tariff_id, ln.version, ln.category, ln.component, ln.rate, ln.tier, ln.price_fen)
            units, amount = merged.get(key, (Decimal(0), 0))
            merged[key] = (units + ln.units, amount + ln.amount_fen)
    lines = tuple(
        BillLine(
            tariff_id=k[0],
            version=k[1],
            category=k[2],
            component=k[3],
            rate=k[4],
            tier=k[5],
            price_fen=k[6],
            units=u,
            amount_fen=a,
        )
        for k, (u, a) in sorted(merged.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][5], kv[0][2:5]))
    )
    energy = (
        sum((ln.units for ln in lines if ln.component == lines[0].component), Decimal(0))
        if lines
        else Decimal(0)
    )
    return SettlementBill(
        project_id=project_id,
        account_id=account_id,
        period=period,
        lines=lines,
        units=energy,
        total_fen=sum(ln.amount_fen for ln in lines),
        charges=count,
    )


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


class FreezeSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["daily", "monthly"]
    key: str
    at: datetime
    registers: dict[str, Registers]  # meter id -> last registers read before `at`
    read_at: dict[str, datetime]  # meter id -> when those registers were read
    balances: dict[str, int]  # account id -> balance fen


def freeze(books: Books, kind: Literal["daily", "monthly"], key: str, at: datetime) -> FreezeSnapshot:
    meters = {m: s.last for m, s in books.meters.items() if s.last is not None and s.last.time <= at}
    return FreezeSnapshot(
        kind=kind,
        key=key,
        at=at,
        registers={m: snap.registers for m, snap in meters.items()},
        read_at={m: snap.time for m, snap in meters.items()},
        balances={a: s.balance_fen for a, s in books.accounts.items()},
    )
