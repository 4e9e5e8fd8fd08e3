"""The DI catalogue: names, units and formats, value codec, round trips."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.protocols import catalogue
from libs.protocols.catalogue import CATALOGUE_1997, CATALOGUE_2007, DataItem
from libs.protocols.errors import FrameError


@pytest.mark.parametrize(
    ("di", "name", "unit", "digits", "decimals", "signed"),
    [
        ("00010000", "forward_active_energy_total", "kWh", 8, 2, False),
        ("00010100", "forward_active_energy_sharp", "kWh", 8, 2, False),
        ("00010400", "forward_active_energy_valley", "kWh", 8, 2, False),
        ("00000000", "combined_active_energy_total", "kWh", 8, 2, True),
        ("00020000", "reverse_active_energy_total", "kWh", 8, 2, False),
        ("00030000", "combined_reactive_1_energy_total", "kvarh", 8, 2, True),
        ("00010001", "forward_active_energy_total_settlement_1", "kWh", 8, 2, False),
        ("02010100", "voltage_a", "V", 4, 1, False),
        ("02020300", "current_c", "A", 6, 3, True),
        ("02030000", "active_power_total", "kW", 6, 4, True),
        ("02040200", "reactive_power_b", "kvar", 6, 4, True),
        ("02060000", "power_factor_total", "", 4, 3, True),
        ("02800002", "frequency", "Hz", 4, 2, False),
        ("00900200", "remaining_amount", "yuan", 8, 2, False),
        ("03330201", "purchase_count", "", 4, 0, False),
        ("9010", "forward_active_energy_total", "kWh", 8, 2, False),
        ("9410", "forward_active_energy_total_settlement_1", "kWh", 8, 2, False),
        ("B611", "voltage_a", "V", 4, 0, False),
        ("B621", "current_a", "A", 4, 2, False),
    ],
)
def test_entries(di: str, name: str, unit: str, digits: int, decimals: int, signed: bool) -> None:
    item = catalogue.lookup(di)
    assert item is not None
    got = (item.name, item.unit, item.digits, item.decimals, item.signed)
    assert got == (name, unit, digits, decimals, signed)


def test_blocks_list_their_members() -> None:
    block = CATALOGUE_2007["0001FF00"]
    assert [m.name for m in block.members[:5]] == [
        "forward_active_energy_total",
        "forward_active_energy_sharp",
        "forward_active_energy_peak",
        "forward_active_energy_flat",
        "forward_active_energy_valley",
    ]
    assert block.variable
    assert [m.name for m in CATALOGUE_2007["0201FF00"].members] == ["voltage_a", "voltage_b", "voltage_c"]
    assert [m.name for m in CATALOGUE_1997["B61F"].members] == ["voltage_a", "voltage_b", "voltage_c"]
    assert "0001FF01" in CATALOGUE_2007
    assert "05060101" in CATALOGUE_2007
    assert "05060201" in CATALOGUE_2007


def test_signed_values_use_the_top_bit() -> None:
    # current -1.500 A: digits 001500, sign bit set in the most significant (last) byte
    decoded = catalogue.decode_data("02020100", bytes.fromhex("001580"))
    assert decoded == {"current_a": (Decimal("-1.500"), "A")}
    assert catalogue.encode_data("02030000", Decimal("-12.3456")) == bytes.fromhex("563492")
    assert catalogue.encode_data("02060000", Decimal("-0.5")) == bytes.fromhex("0085")
    with pytest.raises(FrameError, match="does not fit"):
        catalogue.encode_data("02030000", Decimal("80"))  # top digit 8 would collide with the sign bit
    with pytest.raises(FrameError, match="does not fit"):
        catalogue.encode_data("00010000", Decimal("-1"))  # forward energy is unsigned


def test_clock_status_and_frozen_values() -> None:
    assert catalogue.encode_data("04000101", date(2016, 1, 11)) == bytes.fromhex("01110116")
    assert catalogue.encode_data("04000102", "21:53:55") == bytes.fromhex("555321")
    assert catalogue.decode_data("05060001", bytes.fromhex("0000091015")) == {
        "daily_frozen_time": ("2015-10-09 00:00", "")
    }
    status = catalogue.decode_data("04000503", (0x0250).to_bytes(2, "little"))
    assert status["relay_open"] == (True, "")
    assert status["meter_type"] == ("money-prepaid", "")
    assert status["relay_command_open"] == (True, "")
    assert status["pre_trip_alarm"] == (False, "")
    frozen = catalogue.decode_data("05060101", bytes.fromhex("0010000000050000"))
    assert frozen == {
        "daily_frozen_forward_active_energy_total": (Decimal("10.00"), "kWh"),
        "daily_frozen_forward_active_energy_sharp": (Decimal("5.00"), "kWh"),
    }


@pytest.mark.parametrize(
    ("di", "data", "message"),
    [
        ("00010000", "123456", "expected 4 bytes, got 3"),
        ("00010000", "1A000000", "not BCD"),
        ("0201FF00", "5622", "expected 3 values"),
        ("0001FF00", "0000000000", "expected 1..15 values"),
        ("04000101", "01133116", "impossible"),
        ("04000102", "006100", "impossible"),
    ],
)
def test_malformed_values_raise_frame_error(di: str, data: str, message: str) -> None:
    with pytest.raises(FrameError, match=message) as info:
        catalogue.decode_data(di, bytes.fromhex(data))
    assert info.value.fault == "data"


def test_unknown_identifiers_are_raw() -> None:
    assert catalogue.decode_data("03300D00", bytes.fromhex("270000")) == {"raw": ("270000", "")}
    assert catalogue.encode_data("03300D00", b"\x27\x00\x00") == b"\x27\x00\x00"


def _value(item: DataItem) -> st.SearchStrategy[object]:
    if item.kind == "date":
        return st.dates(date(2000, 1, 1), date(2099, 12, 31))
    if item.kind == "time":
        return st.times().map(lambda t: time(t.hour, t.minute, t.second).isoformat())
    if item.kind == "ymdhm":
        return st.datetimes().map(lambda t: f"{t.year % 100 + 2000:04d}-{t:%m-%d %H:%M}")
    if item.kind in ("status3", "word"):
        return st.integers(0, 256**item.size - 1)
    top = 8 * 10 ** (item.digits - 1) - 1 if item.signed else 10**item.digits - 1
    low = -top if item.signed else 0
    return st.integers(low, top).map(lambda n: Decimal(n).scaleb(-item.decimals))


@st.composite
def _entry(draw: st.DrawFn) -> tuple[str, object]:
    di = draw(st.sampled_from(sorted(CATALOGUE_2007) + sorted(CATALOGUE_1997)))
    item = CATALOGUE_1997[di] if len(di) == 4 else CATALOGUE_2007[di]
    if not item.members:
        return di, draw(st.one_of(st.none(), _value(item)))
    count = draw(st.integers(1, len(item.members))) if item.variable else len(item.members)
    return di, [draw(st.one_of(st.none(), _value(m))) for m in item.members[:count]]


@settings(max_examples=400)
@given(_entry())
def test_values_round_trip(entry: tuple[str, object]) -> None:
    di, values = entry
    data = catalogue.encode_data(di, values)
    decoded = catalogue.decode_data(di, data)
    assert catalogue.encode_data(di, {name: value for name, (value, _) in decoded.items()}) == data
    item = catalogue.lookup(di)
    assert item is not None
    if item.kind == "bcd" and not item.members:
        assert decoded[item.name][0] == values
