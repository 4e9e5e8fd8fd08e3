"""Worked examples priced by hand, in fen (prices in fen per kWh)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events import Rate
from services.billing.domain.consumption import Delta
from services.billing.domain.pricing import price_delta, templates, to_fen, window
from services.billing.domain.tariff import TariffBook, TariffVersion
from tests.services.billing.helpers import RESIDENTIAL, TOU_PEAK_VALLEY, at, d, tariff


def book(*versions):
    b = TariffBook(tariff_id="t1")
    for v in versions:
        b = b.publish(TariffVersion.from_event(v))
    return b


def delta(start, end, total, **rates):
    return Delta("m1", "r", start, end, d(total), {Rate(k): d(v) for k, v in rates.items()})


OPEN = at(2024, 1, 1)


def test_rounding_is_half_up_per_line():
    assert to_fen(Decimal("50"), Decimal("0.01")) == 1  # 0.5 fen rounds up
    assert to_fen(Decimal("49"), Decimal("0.01")) == 0
    assert to_fen(Decimal("5"), Decimal("58.83")) == 294  # 294.15


def test_compound_charges_one_line_per_component():
    b = book(
        tariff(
            {
                "kind": "compound",
                "components": [
                    {"name": "energy", "price_fen": "52.83"},
                    {"name": "service", "price_fen": "2"},
                    {"name": "loss", "price_fen": "1.5"},
                ],
            }
        )
    )
    charge = price_delta(b, delta(at(2024, 3, 1, 1), at(2024, 3, 1, 2), 100), {}, OPEN)
    assert [(ln.component, ln.amount_fen) for ln in charge.lines] == [
        ("energy", 5283),
        ("service", 200),
        ("loss", 150),
    ]
    assert charge.amount_fen == 5633


def test_proportional_splits_units_by_ratio():
    b = book(
        tariff(
            {
                "kind": "proportional",
                "shares": [
                    {
                        "category": "residential",
                        "ratio": "0.8",
                        "tariff": {"kind": "single", "price_fen": "48.83"},
                    },
                    {
                        "category": "commercial",
                        "ratio": "0.2",
                        "tariff": {"kind": "single", "price_fen": "80"},
                    },
                ],
            }
        )
    )
    charge = price_delta(b, delta(at(2024, 3, 1, 1), at(2024, 3, 1, 2), 100), {}, OPEN)
    assert {ln.category: (ln.units, ln.amount_fen) for ln in charge.lines} == {
        "residential": (Decimal("80.0"), 3906),  # 3906.4
        "commercial": (Decimal("20.0"), 1600),
    }


def test_tou_total_only_meter_is_split_at_band_edges_linearly():
    b = book(tariff(TOU_PEAK_VALLEY))
    charge = price_delta(b, delta(at(2024, 3, 1, 7), at(2024, 3, 1, 9), 4), {}, OPEN)
    # 07:00-08:00 valley 2 kWh x 28.83 = 57.66; 08:00-09:00 peak 2 x 56.83 = 113.66
    assert {ln.rate: ln.amount_fen for ln in charge.lines} == {Rate.VALLEY: 58, Rate.PEAK: 114}


def test_tou_uses_the_meters_own_rate_registers_when_read():
    b = book(tariff(TOU_PEAK_VALLEY))
    charge = price_delta(b, delta(at(2024, 3, 1, 7), at(2024, 3, 1, 9), 4, peak=1, valley=3), {}, OPEN)
    assert {ln.rate: ln.amount_fen for ln in charge.lines} == {Rate.PEAK: 57, Rate.VALLEY: 86}  # 56.83, 86.49


def test_price_change_mid_interval_is_apportioned_by_time():
    b = book(
        tariff({"kind": "single", "price_fen": "50"}, 1, at(2024, 7, 1)),
        tariff({"kind": "single", "price_fen": "60"}, 2, at(2024, 7, 1, 12)),
    )
    charge = price_delta(b, delta(at(2024, 7, 1, 6), at(2024, 7, 1, 18), 12), {}, OPEN)
    assert [(ln.version, ln.units, ln.amount_fen) for ln in charge.lines] == [(1, 6, 300), (2, 6, 360)]


def test_units_before_opening_or_before_any_version_are_not_charged():
    b = book(tariff({"kind": "single", "price_fen": "50"}, 1, at(2024, 7, 1)))
    charge = price_delta(b, delta(at(2024, 6, 30, 18), at(2024, 7, 1, 6), 12), {}, at(2024, 7, 1, 3))
    assert charge.uncharged == 9 and charge.amount_fen == 150


def test_yearly_tier_resets_at_local_new_year():
    b = book(
        tariff(
            {
                "kind": "tiered",
                "period": "year",
                "tiers": [{"up_to": "2760", "price_fen": "48.83"}, {"up_to": None, "price_fen": "53.83"}],
            }
        )
    )
    charge = price_delta(b, delta(at(2024, 12, 31, 12), at(2025, 1, 1, 12), 20), {"t1:2024": d(2755)}, OPEN)
    # 2024: 10 units, 5 in tier 1 and 5 in tier 2; 2025 starts again in tier 1 with 10 units.
    assert sorted((ln.tier, ln.units) for ln in charge.lines) == [(1, 15), (2, 5)]
    assert charge.tier_used == {"t1:2024": 2765, "t1:2025": 10}
    assert charge.amount_fen == to_fen(d(15), d("48.83")) + to_fen(d(5), d("53.83"))  # 732 + 269


def test_residential_month_tiered_on_top_of_tou_worked_example():
    """A household read at local midnight: 10 kWh peak + 5 kWh valley every day of July 2024.

    Monthly tiers 0-240 (+0), 240-400 (+5), above 400 (+30) fen on 峰 56.83 / 谷 28.83; each day
    fills peak first, then valley. Per day, rounding each line half-up:
      days 1-16  tier 1: 10 x 56.83 = 568.3 -> 568, 5 x 28.83 = 144.15 -> 144   => 712 x 16 = 11392
      days 17-26 tier 2: 10 x 61.83 = 618.3 -> 618, 5 x 33.83 = 169.15 -> 169   => 787 x 10 =  7870
      day 27   (390 used): peak 10 in tier 2 -> 618, valley 5 in tier 3 x 58.83 = 294.15 -> 294 => 912
      days 28-31 tier 3: 10 x 86.83 = 868.3 -> 868, 294                        => 1162 x 4 =  4648
    Month: 24822 fen (exact 24835.95; per-line rounding loses 0.45 fen a day).
    """
    b = book(tariff(RESIDENTIAL))
    used: dict[str, Decimal] = {}
    total = 0
    for day in range(31):
        start = at(2024, 7, 1) + timedelta(days=day)
        charge = price_delta(b, delta(start, start + timedelta(days=1), 15, peak=10, valley=5), used, OPEN)
        used = charge.tier_used
        total += charge.amount_fen
    assert used == {"t1:2024-07": 465}
    assert total == 24822
    august = price_delta(b, delta(at(2024, 8, 1), at(2024, 8, 2), 15, peak=10, valley=5), used, OPEN)
    assert august.amount_fen == 712 and august.tier_used["t1:2024-08"] == 15  # the month tier reset


BOOKS = {
    "single": book(tariff({"kind": "single", "price_fen": "50"})),
    "tou": book(tariff(TOU_PEAK_VALLEY)),
    "residential": book(tariff(RESIDENTIAL)),
    "versions": book(
        tariff({"kind": "single", "price_fen": "50"}),
        tariff({"kind": "single", "price_fen": "60"}, version=2, effective=at(2024, 3, 1, 13, 30)),
    ),
    "compound": book(
        tariff({"kind": "compound", "components": [{"name": "energy", "price_fen": "52.83"},
                                                   {"name": "service", "price_fen": "2"}]})
    ),
    "proportional": book(
        tariff({"kind": "proportional", "shares": [
            {"category": "residential", "ratio": "0.8", "tariff": TOU_PEAK_VALLEY},
            {"category": "commercial", "ratio": "0.2", "tariff": {"kind": "single", "price_fen": "80"}},
        ]})
    ),
}  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(BOOKS)),
    st.integers(min_value=0, max_value=60 * 24 * 4),  # start: minutes after Feb 28 00:00
    st.integers(min_value=1, max_value=60 * 30),  # length in minutes
    st.integers(min_value=0, max_value=10_000),  # centi-kWh
    st.booleans(),  # meter reads peak/valley registers
    st.integers(min_value=0, max_value=60 * 24 * 5),  # opening, minutes after Feb 28 00:00
)
def test_the_uncut_window_fast_path_prices_exactly_like_the_edge_search(
    name: str, start_min: int, minutes: int, centi: int, by_rate: bool, open_min: int
) -> None:
    b = BOOKS[name]
    base = at(2024, 2, 28)
    start = base + timedelta(minutes=start_min)
    total = Decimal(centi) / 100
    rates = {"peak": total / 2, "valley": total - total / 2} if by_rate else {}
    dl = delta(start, start + timedelta(minutes=minutes), total, **rates)
    not_before = base + timedelta(minutes=open_min)
    uncut = window(b, dl)
    assert uncut[0] <= dl.start < uncut[1]
    used = {"t1:2024-02": Decimal(230)}
    full = price_delta(b, dl, used, not_before)
    assert price_delta(b, dl, used, not_before, uncut) == full
    # the line templates of the window, made from another delta in it, price this one the same
    probe = delta(uncut[0], uncut[0] + timedelta(minutes=1), 1, **dict.fromkeys(rates, 1))
    assert price_delta(b, dl, used, not_before, uncut, templates(b, probe)) == full
