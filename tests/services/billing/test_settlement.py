from __future__ import annotations

from datetime import time, timedelta

import pytest

from libs.events.billing import BillingMode
from services.billing.domain.books import Books
from services.billing.domain.facts import ChargeApplied
from services.billing.domain.settlement import FreezeSchedule, freeze, freeze_points, monthly_bill
from tests.services.billing.helpers import RESIDENTIAL, SH, P, account, at, meter, reading, tariff


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
    bill = monthly_bill(P, "a1", "2024-07", charges, SH)
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
    assert books.accounts["a1"].balance_fen == -(24822 + 712)
    assert monthly_bill(P, "a1", "2024-08", charges, SH).total_fen == 712


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


def test_freeze_snapshot_holds_registers_and_balances_before_the_instant():
    books = Books()
    for f in (tariff(RESIDENTIAL), meter(), account()):
        books.handle(f)
    books.handle(reading(at(2024, 7, 1, 23), 100))
    snap = freeze(books, "daily", "2024-07-02", at(2024, 7, 2))
    assert snap.registers["m1"]["active_import_kwh"]["total"] == 100
    assert snap.balances == {"a1": 0}
    assert freeze(books, "daily", "2024-07-01", at(2024, 7, 1)).registers == {}
