from __future__ import annotations

from datetime import time, timedelta

import pytest

from libs.events import Rate
from libs.events.billing import BillingMode, MeterFrozen, SettlementIssued
from services.billing.domain.books import Books
from services.billing.domain.facts import ChargeApplied
from services.billing.domain.settlement import FreezeSchedule, freeze_points, monthly_bill
from tests.services.billing.helpers import (
    RESIDENTIAL,
    SH,
    SINGLE,
    P,
    account,
    at,
    meter,
    reading,
    recharge,
    tariff,
)


def test_monthly_bill_groups_lines_per_tier_and_rate_and_equals_charges():
    books = Books()
    for f in (tariff(RESIDENTIAL), meter(), account(mode=BillingMode.POSTPAID)):
        books.handle(f)
    charges = []
    for day in range(33):  # readings July 1 .. Aug 2: the Aug 1-2 charge belongs to the next bill
        out = books.handle(
            reading(at(2024, 7, 1) + timedelta(days=day), 15 * day, peak=10 * day, valley=5 * day)
        )
        charges += [e for e in out if isinstance(e, ChargeApplied)]
    bill = monthly_bill("a1", "2024-07", charges, SH)
    assert bill is not None
    assert bill.total_fen == 24822 and bill.charges == 31  # the worked example of test_pricing
    assert bill.units == 465
    assert [(ln.rate.value, ln.tier, ln.units) for ln in bill.lines] == [
        ("peak", 1, 160),
        ("valley", 1, 80),
        ("peak", 2, 110),
        ("valley", 2, 50),
        ("peak", 3, 40),
        ("valley", 3, 25),
    ]
    assert books.account(P, "a1").balance_fen == -(24822 + 712)
    august = monthly_bill("a1", "2024-08", charges, SH)
    assert august is not None and august.total_fen == 712
    assert monthly_bill("a1", "2024-09", charges, SH) is None


def test_freeze_points_daily_and_monthly_at_local_times():
    schedule = FreezeSchedule(daily_at=time(0), monthly_day=1, monthly_at=time(0, 5))
    points = freeze_points(schedule, at(2024, 7, 30, 12), at(2024, 8, 2, 0))
    assert [(k, key) for k, key, _ in points] == [
        ("daily", "2024-07-31"),
        ("daily", "2024-08-01"),
        ("monthly", "2024-08"),
        ("daily", "2024-08-02"),
    ]
    assert points[2][2] == at(2024, 8, 1, 0, 5)
    with pytest.raises(ValueError, match=r"1\.\.28"):
        FreezeSchedule(monthly_day=31)


def postpaid_books(*meters: str) -> Books:
    books = Books()
    for f in (tariff(SINGLE), *(meter(m) for m in meters), account(mode=BillingMode.POSTPAID, meters=meters)):
        books.handle(f)
    return books


def test_the_bill_is_issued_once_the_next_month_is_charged():
    books = postpaid_books("m1")
    out = []
    for day, kwh in ((30, 0), (31, 10)):  # July 30 (baseline), 31
        out += books.handle(reading(at(2024, 7, day), kwh))
    out += books.handle(reading(at(2024, 8, 1), 30))  # interval ends at 00:00 on Aug 1: July
    assert not [e for e in out if isinstance(e, SettlementIssued)]
    closing = books.handle(reading(at(2024, 8, 1, 1), 31))  # the first August charge closes July
    [bill] = [e for e in closing if isinstance(e, SettlementIssued)]
    charges = [e for e in out if isinstance(e, ChargeApplied)]
    assert (bill.period, bill.units, bill.total_fen, bill.charges) == ("2024-07", 30, 1500, 2)
    assert bill.total_fen == sum(c.amount_fen for c in charges)
    recomputed = monthly_bill("a1", "2024-07", charges, SH)
    assert recomputed is not None and (recomputed.lines, recomputed.event_id) == (bill.lines, bill.event_id)
    [closer] = [e for e in closing if isinstance(e, ChargeApplied)]  # the charge that closed July
    assert bill.causation_id == closer.event_id and bill.subject_id == "a1"
    again = books.handle(reading(at(2024, 8, 2), 40))
    assert not [e for e in again if isinstance(e, SettlementIssued)]  # once per month


def test_a_bill_waits_for_every_meter_of_the_account():
    books = postpaid_books("m1", "m2")
    for m in ("m1", "m2"):
        books.handle(reading(at(2024, 7, 30), 0, meter_id=m))
        books.handle(reading(at(2024, 7, 31), 5, meter_id=m))
    early = books.handle(reading(at(2024, 8, 1, 1), 8, meter_id="m1"))
    assert not [e for e in early if isinstance(e, SettlementIssued)]  # m2 may still charge July
    late = books.handle(reading(at(2024, 8, 1, 2), 6, meter_id="m2"))
    [bill] = [e for e in late if isinstance(e, SettlementIssued)]
    assert (bill.period, bill.units, bill.charges) == ("2024-07", 10, 2)


def test_prepaid_accounts_get_no_bills():
    books = Books()
    for f in (tariff(SINGLE), meter(), account()):
        books.handle(f)
    out = [e for day in (30, 31) for e in books.handle(reading(at(2024, 7, day), day))]
    out += books.handle(reading(at(2024, 8, 2), 40))
    assert not [e for e in out if isinstance(e, SettlementIssued)]


def test_meter_frozen_at_each_daily_and_monthly_instant():
    books = Books(freeze_schedule=FreezeSchedule(daily_at=time(0), monthly_day=1, monthly_at=time(0)))
    for f in (tariff(SINGLE), meter(), account(), recharge(10_000, "k1")):
        books.handle(f)
    books.handle(reading(at(2024, 7, 30, 23), 100))
    out = books.handle(reading(at(2024, 7, 31, 0), 110))  # falls exactly on the daily instant
    [exact] = [e for e in out if isinstance(e, MeterFrozen)]
    assert (exact.kind, exact.label, exact.read_at) == ("daily", "2024-07-31", at(2024, 7, 31))
    assert exact.registers["active_import_kwh"][Rate.TOTAL] == 110 and exact.balance_fen == 10_000 - 500
    out = books.handle(reading(at(2024, 8, 1, 3), 150))  # passes Aug 1 00:00: daily and monthly
    frozen = [e for e in out if isinstance(e, MeterFrozen)]
    assert [(e.kind, e.label) for e in frozen] == [("daily", "2024-08-01"), ("monthly", "2024-08")]
    assert {e.read_at for e in frozen} == {at(2024, 7, 31)}  # the last registers before the instant
    assert {e.balance_fen for e in frozen} == {9500}  # before this reading's charge of 2000
    assert books.account(P, "a1").balance_fen == 7500
    assert not [e for e in books.handle(reading(at(2024, 8, 1, 4), 151)) if isinstance(e, MeterFrozen)]
    again = books.handle(reading(at(2024, 8, 1, 3), 150))  # a redelivery freezes nothing twice
    assert again == []
