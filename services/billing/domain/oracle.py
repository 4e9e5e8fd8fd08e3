"""An independent, deliberately simple recomputation of final balances from a list of facts.

Used by tests, kill/restart checks and benchmarks to check :class:`Books` to the fen. It keeps
one global set of seen ids, plain dicts and a straight loop; it shares only the tariff models and
:func:`pricing.price_delta` (checked on their own against hand-computed examples). Consumption
rules are re-implemented here from their statement in consumption.py, not imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from libs.events.acquisition import Medium, MeterRegistered, MeterReplaced, Rate, ReadingRecorded
from libs.events.base import Event
from libs.events.billing import (
    AccountOpened,
    AllowanceAccepted,
    ClearAccepted,
    RechargeAccepted,
    RefundAccepted,
    TariffPublished,
)
from services.billing.domain.consumption import Delta
from services.billing.domain.facts import AdjustmentAccepted
from services.billing.domain.pricing import price_delta
from services.billing.domain.tariff import TariffBook, TariffVersion

_REGISTER = {
    Medium.WATER: "volume_m3",
    Medium.HOT_WATER: "volume_m3",
    Medium.GAS: "volume_m3",
    Medium.HEAT: "heat_kwh",
}
_PER_HOUR = {
    Medium.ELECTRICITY: 200,
    Medium.WATER: 60,
    Medium.HOT_WATER: 30,
    Medium.GAS: 60,
    Medium.HEAT: 2000,
}


def _reg(meter: dict[str, Any], registers: dict[str, dict[Rate, Decimal]]) -> dict[Rate, Decimal] | None:
    if meter["medium"] is Medium.ELECTRICITY:
        return registers.get("active_import_kwh", registers.get("active_combined_kwh"))
    return registers.get(_REGISTER[meter["medium"]])


def _diff(
    meter: dict[str, Any], t0: datetime, r0: dict[Rate, Decimal], t1: datetime, r1: dict[Rate, Decimal]
) -> Delta | None:
    cap = Decimal(10) ** (meter["digits"] - meter["decimals"])
    d: dict[Rate, Decimal] = {}
    for rate in r0.keys() & r1.keys():
        step = r1[rate] - r0[rate]
        if step < 0:
            step += cap
            if step >= cap / 10:
                return None
        d[rate] = step * meter["multiplier"]
    rates: dict[Rate, Decimal] = {r: u for r, u in d.items() if r != Rate.TOTAL}
    total = d.get(Rate.TOTAL, sum(rates.values(), Decimal(0)))
    hours = Decimal((t1 - t0) // timedelta(microseconds=1)) / Decimal(3_600_000_000)
    if total > _PER_HOUR[meter["medium"]] * hours + Decimal(10) ** -meter["decimals"] * meter["multiplier"]:
        return None
    return Delta(meter["id"], "", t0, t1, total, rates)


def balances(events: Iterable[Event]) -> dict[tuple[str, str], int]:
    """(project, account) -> balance fen, computed independently of the billing domain."""
    seen: set[str] = set()
    books: dict[tuple[str, str], TariffBook] = {}
    accounts: dict[tuple[str, str], dict[str, Any]] = {}
    owner: dict[tuple[str, str], tuple[str, str]] = {}
    meters: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        p = e.project_id
        if isinstance(e, TariffPublished):
            books[(p, e.tariff_id)] = books.get((p, e.tariff_id), TariffBook(tariff_id=e.tariff_id)).publish(
                TariffVersion.from_event(e)
            )
        elif isinstance(e, AccountOpened) and (p, e.account_id) not in accounts:
            accounts[(p, e.account_id)] = {
                "project": p,
                "balance": 0,
                "tariff": e.tariff_id,
                "opened": e.time,
                "periods": set(),
                "tiers": {},
            }
            owner.update({(p, m): (p, e.account_id) for m in e.meter_ids})
        elif isinstance(e, MeterRegistered):
            m = meters.setdefault((p, e.meter_id), _meter(e.meter_id))
            m.update(
                medium=e.medium,
                digits=e.register_digits,
                decimals=e.register_decimals,
                multiplier=e.multiplier,
            )
        elif isinstance(e, RechargeAccepted | AllowanceAccepted | AdjustmentAccepted):
            a = accounts[(p, e.account_id)]
            if isinstance(e, AllowanceAccepted):
                if e.period in a["periods"]:
                    continue
                a["periods"].add(e.period)
            a["balance"] += e.amount_fen
        elif isinstance(e, RefundAccepted):
            accounts[(p, e.account_id)]["balance"] -= e.amount_fen
        elif isinstance(e, ClearAccepted):
            accounts[(p, e.account_id)]["balance"] = 0
        elif isinstance(e, ReadingRecorded | MeterReplaced):
            m = meters.setdefault((p, e.meter_id), _meter(e.meter_id))
            for delta in _readings(m, e):
                _charge(accounts.get(owner.get((p, e.meter_id), ("", ""))), books, delta)
    return {k: v["balance"] for k, v in accounts.items()}


def _meter(meter_id: str) -> dict[str, Any]:
    return {
        "id": meter_id,
        "medium": Medium.ELECTRICITY,
        "digits": 8,
        "decimals": 2,
        "multiplier": Decimal(1),
        "last": None,
        "suspect": None,
        "floor": None,
    }


def _readings(m: dict[str, Any], e: ReadingRecorded | MeterReplaced) -> list[Delta]:
    if isinstance(e, MeterReplaced):
        last, m["floor"], m["suspect"] = m["last"], e.replaced_at, None
        m["last"] = (
            e.replaced_at if last is None else max(e.replaced_at, last[0]),
            last[1] if last else 0,
            _reg(m, e.initial_registers),
        )
        if last is None or e.replaced_at <= last[0]:
            return []
        final = _diff(m, last[0], last[2], e.replaced_at, _reg(m, e.final_registers) or {})
        return [final] if final else []
    at, regs = e.meter_time or e.received_at, _reg(m, e.registers)
    if e.frozen is not None or (m["floor"] is not None and at < m["floor"]) or regs is None:
        return []
    last = m["last"]
    if last is not None and (at <= last[0] or (e.sequence and last[1] and e.sequence <= last[1])):
        return []
    new = (at, e.sequence or (last[1] if last else 0), regs)
    if last is None:
        m["last"] = new
        return []
    delta = _diff(m, last[0], last[2], at, regs)
    if delta is None and m["suspect"] is not None:
        delta = _diff(m, m["suspect"][0], m["suspect"][2], at, regs)
    if delta is None:
        m["suspect"] = new
        return []
    m["last"], m["suspect"] = new, None
    return [delta]


def _charge(account: dict[str, Any] | None, books: dict[tuple[str, str], TariffBook], delta: Delta) -> None:
    if account is None:
        return
    book = books.get((account["project"], account["tariff"]), TariffBook(tariff_id=account["tariff"]))
    charge = price_delta(book, delta, account["tiers"], account["opened"])
    account["tiers"] = charge.tier_used
    account["balance"] -= charge.amount_fen
