from __future__ import annotations

from decimal import Decimal

import pytest

from libs.events import Rate
from services.billing.domain.tariff import (
    Compound,
    Proportional,
    Single,
    TariffBook,
    TariffError,
    TariffVersion,
    Tiered,
    Tou,
    parse_tariff,
)
from tests.services.billing.helpers import RESIDENTIAL, SH, TOU_PEAK_VALLEY, at, tariff


def test_parses_every_kind():
    assert isinstance(parse_tariff({"kind": "single", "price_fen": "52.83"}), Single)
    compound = parse_tariff(
        {
            "kind": "compound",
            "components": [{"name": "energy", "price_fen": "52.83"}, {"name": "service", "price_fen": "2"}],
        }
    )
    assert isinstance(compound, Compound)
    assert compound.components(at(2024, 1, 1), Rate.TOTAL) == (
        ("energy", Decimal("52.83")),
        ("service", Decimal(2)),
    )
    assert isinstance(parse_tariff(TOU_PEAK_VALLEY), Tou)
    assert isinstance(parse_tariff(RESIDENTIAL), Tiered)
    prop = parse_tariff(
        {
            "kind": "proportional",
            "shares": [
                {
                    "category": "residential",
                    "ratio": "0.8",
                    "tariff": {"kind": "single", "price_fen": "48.83"},
                },
                {"category": "commercial", "ratio": "0.2", "tariff": {"kind": "single", "price_fen": "80"}},
            ],
        }
    )
    assert isinstance(prop, Proportional)


def test_tou_bands_wrap_past_midnight_and_seasons_override():
    tou = parse_tariff(
        {
            "kind": "tou",
            "prices": {"sharp": "90", "peak": "60", "flat": "45", "valley": "25"},
            "schedules": [
                {
                    "months": [7, 8],
                    "days": "weekday",
                    "bands": [
                        {"start": "08:00", "rate": "flat"},
                        {"start": "11:00", "rate": "sharp"},
                        {"start": "13:00", "rate": "peak"},
                        {"start": "23:00", "rate": "valley"},
                    ],
                    "prices": {"sharp": "100"},
                },
                {"bands": [{"start": "08:00", "rate": "flat"}, {"start": "23:00", "rate": "valley"}]},
            ],
        }
    )
    assert isinstance(tou, Tou)
    monday_july, saturday_july, monday_jan = at(2024, 7, 1, 12), at(2024, 7, 6, 12), at(2024, 1, 1, 12)
    assert tou.rate_at(monday_july) is Rate.SHARP
    assert tou.components(monday_july, Rate.SHARP)[0][1] == Decimal(100)  # summer override
    assert tou.rate_at(saturday_july) is Rate.FLAT
    assert tou.rate_at(monday_jan) is Rate.FLAT
    assert tou.rate_at(at(2024, 7, 1, 3)) is Rate.VALLEY  # before the first start = last band
    assert tou.rate_at(at(2024, 7, 1, 23, 30)) is Rate.VALLEY


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"kind": "flat_rate"}, "does not match any of the expected tags"),
        ({"kind": "single", "price_fen": "-1"}, "price_fen"),
        ({"kind": "single", "price_fen": "1", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"kind": "compound", "components": []}, "components"),
        (
            {
                "kind": "compound",
                "components": [{"name": "e", "price_fen": "1"}, {"name": "e", "price_fen": "2"}],
            },
            "repeat",
        ),
        (
            {
                "kind": "proportional",
                "shares": [{"category": "a", "ratio": "0.5", "tariff": {"kind": "single", "price_fen": "1"}}],
            },
            "sum to 1",
        ),
        (
            {
                "kind": "tou",
                "prices": {"peak": "1"},
                "schedules": [{"bands": [{"start": "00:00", "rate": "valley"}]}],
            },
            "has no price",
        ),
        (
            {
                "kind": "tou",
                "prices": {"peak": "1"},
                "schedules": [{"days": "weekday", "bands": [{"start": "00:00", "rate": "peak"}]}],
            },
            "no schedule covers month 1 (Saturdays)",
        ),
        (
            {
                "kind": "tou",
                "prices": {"peak": "1"},
                "schedules": [
                    {"bands": [{"start": "09:00", "rate": "peak"}, {"start": "08:00", "rate": "peak"}]}
                ],
            },
            "strictly increase",
        ),
        ({"kind": "tiered", "period": "month", "tiers": [{"up_to": "10", "price_fen": "1"}]}, "up_to null"),
        (
            {"kind": "tiered", "period": "month", "tiers": [{"up_to": None, "surcharge_fen": "1"}]},
            "without a base",
        ),
        (
            {
                "kind": "tiered",
                "period": "year",
                "tiers": [
                    {"up_to": "20", "price_fen": "1"},
                    {"up_to": "10", "price_fen": "1"},
                    {"up_to": None, "price_fen": "1"},
                ],
            },
            "strictly increase",
        ),
        ({"kind": "tiered", "period": "month", "base": RESIDENTIAL, "tiers": [{"up_to": None}]}, "base"),
    ],
)
def test_bad_definitions_raise_typed_errors_naming_the_problem(definition, message):
    with pytest.raises(TariffError, match="invalid tariff definition") as info:
        parse_tariff(definition)
    assert message in str(info.value)


def test_book_picks_version_in_force_and_corrections_replace():
    v1 = TariffVersion.from_event(tariff({"kind": "single", "price_fen": "50"}, 1, at(2024, 1, 1)))
    v2 = TariffVersion.from_event(tariff({"kind": "single", "price_fen": "60"}, 2, at(2024, 7, 1)))
    book = TariffBook(tariff_id="t1").publish(v2).publish(v1)
    assert book.at(at(2023, 12, 31)) is None
    assert book.at(at(2024, 6, 30, 23, 59)) == v1
    assert book.at(at(2024, 7, 1)) == v2
    v2b = TariffVersion.from_event(tariff({"kind": "single", "price_fen": "61"}, 2, at(2024, 7, 1)))
    assert book.publish(v2b).at(at(2024, 8, 1)) == v2b
    assert book.changes_between(at(2024, 6, 1), at(2024, 8, 1)) == [at(2024, 7, 1).astimezone(SH)]
    with pytest.raises(TariffError):
        TariffBook(tariff_id="other").publish(v1)
