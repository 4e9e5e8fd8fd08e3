"""Builders of facts for billing tests: a Shanghai-time clock and short constructors."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from libs.events import (
    AccountOpened,
    MeterRegistered,
    Rate,
    ReadingRecorded,
    RechargeAccepted,
    Route,
    TariffPublished,
)
from libs.events.billing import BillingMode

SH = ZoneInfo("Asia/Shanghai")
P = "proj-1"
ROUTE = Route(concentrator_id="c1", bus_id="b1")


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)  # type: ignore[misc]


def d(x: Any) -> Decimal:
    return Decimal(str(x))


def tariff(
    definition: dict[str, Any], version: int = 1, effective: datetime | None = None, tid: str = "t1"
) -> TariffPublished:
    return TariffPublished(
        event_id=f"{tid}-v{version}",
        project_id=P,
        subject_id=tid,
        tariff_id=tid,
        version=version,
        name=f"{tid} v{version}",
        effective_from=effective or at(2024, 1, 1),
        definition=definition,
        time=effective or at(2024, 1, 1),
    )


def meter(meter_id: str = "m1", digits: int = 8, decimals: int = 2, multiplier: int = 1) -> MeterRegistered:
    return MeterRegistered(
        event_id=f"reg-{meter_id}",
        project_id=P,
        subject_id=meter_id,
        meter_id=meter_id,
        address="000000000001",
        protocol="dlt645-2007",
        model="DDSY",
        medium="electricity",
        concentrator_id="c1",
        bus_id="b1",
        register_digits=digits,
        register_decimals=decimals,
        multiplier=Decimal(multiplier),
        time=at(2024, 1, 1),
    )


def account(
    mode: BillingMode = BillingMode.PREPAID,
    meters: tuple[str, ...] = ("m1",),
    when: datetime | None = None,
    overdraft: int = 0,
) -> AccountOpened:
    return AccountOpened(
        event_id="open-a1",
        project_id=P,
        subject_id="a1",
        account_id="a1",
        mode=mode,
        meter_ids=meters,
        tariff_id="t1",
        holder="张三",
        overdraft_fen=overdraft,
        opened_by="op",
        time=when or at(2024, 1, 1),
    )


def reading(
    when: datetime,
    total: Any = None,
    meter_id: str = "m1",
    eid: str | None = None,
    seq: int = 0,
    **rates: Any,
) -> ReadingRecorded:
    regs: dict[Rate, Decimal] = {Rate(k): d(v) for k, v in rates.items()}
    if total is not None:
        regs[Rate.TOTAL] = d(total)
    return ReadingRecorded(
        event_id=eid or f"r-{meter_id}-{when.isoformat()}",
        project_id=P,
        subject_id=meter_id,
        sequence=seq,
        meter_id=meter_id,
        registers={"active_import_kwh": regs},
        meter_time=when,
        received_at=when,
        route=ROUTE,
        time=when,
    )


def recharge(amount: int, key: str, when: datetime | None = None) -> RechargeAccepted:
    return RechargeAccepted(
        event_id=f"rc-{key}",
        project_id=P,
        subject_id="a1",
        account_id="a1",
        amount_fen=amount,
        idempotency_key=key,
        operator_id="op",
        channel="cash",
        time=when or at(2024, 1, 1),
    )


SINGLE = {"kind": "single", "price_fen": "50"}
TOU_PEAK_VALLEY = {
    "kind": "tou",
    "prices": {"peak": "56.83", "valley": "28.83"},
    "schedules": [{"bands": [{"start": "08:00", "rate": "peak"}, {"start": "22:00", "rate": "valley"}]}],
}
RESIDENTIAL = {  # tiered by month with a TOU base: 阶梯 surcharge on top of 峰谷 prices
    "kind": "tiered",
    "period": "month",
    "base": TOU_PEAK_VALLEY,
    "tiers": [
        {"up_to": "240", "surcharge_fen": "0"},
        {"up_to": "400", "surcharge_fen": "5"},
        {"up_to": None, "surcharge_fen": "30"},
    ],
}
