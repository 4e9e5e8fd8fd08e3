"""CJ/T 188-2004 codec: public hex vectors, round trips, fuzz."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.protocols import cjt188
from libs.protocols.errors import FrameError
from tests.protocols.framing import assert_decodes

# "Universal" read command (broadcast address, DI high byte first), quoted identically in several
# public repositories, e.g. a Java CJ188 request class comment and LuatOS water-meter scripts:
# "FE FE FE 68 10 AA AA AA AA AA AA AA 01 03 90 1F 01 D2 16 ------万能读表指令".
UNIVERSAL_READ = bytes.fromhex("FE FE FE 68 10 AA AA AA AA AA AA AA 01 03 90 1F 01 D2 16")
# Python CJT188Protocol doctest (BinaryEncoder): '68 10 AA AA AA AA AA AA AA 01 03 90 1F 90 61 16'.
DOCTEST_READ = bytes.fromhex("68 10 AA AA AA AA AA AA AA 01 03 90 1F 90 61 16")
# Go water-meter driver comments (devices/shuibiao): request with DI low byte first, and a real
# reply whose settlement value and clock are FF-filled ("not available").
GO_READ_STANDARD = bytes.fromhex("FE FE 68 10 44 33 22 11 00 33 78 01 03 1F 90 00 80 16")
GO_REPLY_FF = bytes.fromhex(
    "FE FE 68 10 45 41 10 05 15 33 78 81 16 90 1F AA 00 59 59 00 2C FF FF FF FF 2C FF FF FF FF FF FF "
    "FF 00 00 C2 16"
)
# Same Go file: read address (C = 03, DI 810A sent 0A 81) and the meter's reply (C = 83).
GO_READ_ADDRESS = bytes.fromhex("68 10 AA AA AA AA AA AA AA 03 03 0A 81 A7 56 16")
GO_ADDRESS_REPLY = bytes.fromhex("FE FE 68 10 89 67 45 23 01 33 78 83 03 0A 81 A7 34 16")
# hftangyu.com "CJ/T-188 水表协议解析" reply example: its checksum is wrong (the Go file notes
# "回复数据的校验值不对"): the sum is 0x13, the text says 08.
ARTICLE_REPLY_BAD_CS = bytes.fromhex(
    "FE FE FE FE 68 10 44 33 22 11 00 33 78 81 16 1F 90 00 00 77 66 55 2C 00 77 66 55 2C "
    "31 01 22 11 05 15 20 21 84 08 16"
)


def one(wire: bytes, **kwargs) -> cjt188.Cjt188Frame:
    consumed, frame = cjt188.decode(wire, **kwargs)
    assert frame is not None
    assert consumed == len(wire)
    return frame


@pytest.mark.parametrize(
    "wire", [UNIVERSAL_READ, DOCTEST_READ, GO_READ_STANDARD, GO_REPLY_FF, GO_READ_ADDRESS, GO_ADDRESS_REPLY]
)
def test_public_vectors_decode_every_way(wire):
    frame = assert_decodes(cjt188.decode, wire)
    preamble = len(wire) - len(wire.lstrip(b"\xfe"))
    assert cjt188.encode(frame, preamble=preamble) == wire


def test_universal_read_fields():
    frame = one(UNIVERSAL_READ)
    view = cjt188.describe(frame)
    assert (view["address"], view["control"], view["di"], view["di_order"]) == (
        "AAAAAAAAAAAAAA",
        "01",
        "901F",
        "swapped",
    )
    assert view["reply"] is False
    assert frame.ser == 1


def test_standard_order_read_and_reply_with_ff_fields():
    request = one(GO_READ_STANDARD)
    assert request.di == cjt188.DI_METERING
    assert request.di_order == "standard"
    assert cjt188.describe(request)["address"] == "78330011223344"
    reply = one(GO_REPLY_FF)
    values = cjt188.describe(reply)["values"]
    assert values["cumulative_flow"] == {"value": "5959.00", "unit": "m3"}
    assert "settlement_flow" not in values
    assert "meter_time" not in values
    assert values["valve"]["value"] == "open"


def test_read_address_reply_carries_address():
    reply = one(GO_ADDRESS_REPLY)
    assert cjt188.describe(reply)["address"] == "78330123456789"  # "当前表具ID号为78330123456789"
    assert reply.di == cjt188.DI_ADDRESS
    assert reply.control == 0x83


def test_article_reply_checksum_is_rejected_and_corrected_one_decodes():
    with pytest.raises(FrameError) as err:
        cjt188.decode(ARTICLE_REPLY_BAD_CS)
    assert err.value.fault == "checksum"
    assert "expected 0x13, got 0x08" in str(err.value)
    fixed = ARTICLE_REPLY_BAD_CS[:-2] + b"\x13\x16"
    frame = assert_decodes(cjt188.decode, fixed)
    values = cjt188.describe(frame)["values"]
    assert values["cumulative_flow"] == {"value": "556677.00", "unit": "m3"}
    assert values["settlement_flow"] == {"value": "556677.00", "unit": "m3"}
    assert values["meter_time"]["value"] == "2015-05-11T22:01:31"
    assert values["valve"]["value"] == "closed"  # ST0 = 0x21: D1D0 = 01


@pytest.mark.parametrize(
    ("wire", "fault"),
    [
        (bytes.fromhex("68 10 AA AA AA AA AA AA AA 01 03 90 1F 01 D2 17"), "terminator"),
        (bytes.fromhex("68 10 AA AA AA AA AA AA AA 01 02 90 1F 51 16"), "length"),
        (bytes.fromhex("68 10 AA AA AA AA AA AA AA 81 04 90 1F 00 AB 1E 16"), "length"),
    ],
)
def test_bad_frames_name_their_fault(wire, fault):
    fixed = wire[:-2] + bytes([sum(wire[:-2]) & 0xFF]) + wire[-1:] if fault != "terminator" else wire
    with pytest.raises(FrameError) as err:
        _decode_and_describe(fixed)
    assert err.value.fault == fault


def test_partial_and_garbage_only():
    assert cjt188.decode(b"") == (0, None)
    assert cjt188.decode(b"\x00\x01") == (2, None)
    assert cjt188.decode(b"\xfe\xfe\x68\x10") == (2, None)


def test_valve_command_and_replies():
    addr = cjt188.address_from_display("78330011223344")
    close = cjt188.build_valve(addr, 0x10, open_valve=False, ser=7, di_order="swapped")
    wire = cjt188.encode(close, preamble=2)
    assert wire[13:16] == bytes([0xA0, 0x17, 7])
    assert wire[16] == cjt188.VALVE_CLOSE
    decoded = assert_decodes(cjt188.decode, wire)
    assert decoded == close
    assert cjt188.describe(decoded)["values"]["valve_command"]["value"] == "close"
    ok = assert_decodes(cjt188.decode, cjt188.encode(cjt188.build_write_reply(close)))
    assert ok.control == 0x84
    assert not cjt188.describe(ok)["error"]
    bad = assert_decodes(cjt188.decode, cjt188.encode(cjt188.build_write_reply(close, b"\x01\x00", ok=False)))
    view = cjt188.describe(bad)
    assert view["control"] == "C4"
    assert view["error"]
    assert view["error_code"] == "0100"


def test_bad_meter_time_is_a_frame_error():
    with pytest.raises(FrameError, match="meter time"):
        cjt188.build_metering_reply(bytes(7), 0x10, {}, meter_time="999-01-01T00:00:00")


def test_forced_order_overrides_detection():
    frame = one(UNIVERSAL_READ, di_order="standard")
    assert frame.di == 0x1F90


def test_heat_meter_reply():
    addr = cjt188.address_from_display("11223344556677")
    values: dict[str, Decimal | None] = {
        "settlement_heat": Decimal("123456.78"),
        "current_heat": Decimal("123460.01"),
        "heat_power": Decimal("12.50"),
        "flow_rate": Decimal("1.2345"),
        "cumulative_flow": Decimal("99.99"),
        "supply_temperature": Decimal("60.25"),
        "return_temperature": Decimal("40.75"),
        "working_hours": Decimal("1234"),
    }
    reply = cjt188.build_metering_reply(addr, 0x20, values, meter_time="2024-01-31T23:59:58")
    wire = cjt188.encode(reply)
    assert wire[10] == 0x2E  # L = 46, CJ/T 188 Table 7
    got = cjt188.describe(assert_decodes(cjt188.decode, wire))["values"]
    assert {k: Decimal(got[k]["value"]) for k in values} == values
    assert got["current_heat"]["unit"] == "kWh"
    assert got["heat_power"]["unit"] == "kW"
    assert got["supply_temperature"]["unit"] == "°C"
    assert got["meter_time"]["value"] == "2024-01-31T23:59:58"


amounts = st.one_of(st.none(), st.integers(0, 99_999_999).map(lambda n: Decimal(n).scaleb(-2)))


@settings(max_examples=150)
@given(
    addr=st.binary(min_size=7, max_size=7),
    meter_type=st.sampled_from([0x10, 0x11, 0x30]),
    cur=amounts,
    settle=amounts,
    ser=st.integers(0, 255),
    order=st.sampled_from(["standard", "swapped"]),
    valve=st.sampled_from(["open", "closed", "abnormal"]),
    low=st.booleans(),
    preamble=st.integers(0, 4),
    when=st.one_of(
        st.none(), st.datetimes(min_value=datetime(2000, 1, 1)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S"))
    ),
)
def test_metering_reply_round_trip(addr, meter_type, cur, settle, ser, order, valve, low, preamble, when):
    reply = cjt188.build_metering_reply(
        addr,
        meter_type,
        {"cumulative_flow": cur, "settlement_flow": settle},
        meter_time=when,
        valve=valve,
        battery_low=low,
        ser=ser,
        di_order=order,
    )
    consumed, decoded = cjt188.decode(cjt188.encode(reply, preamble=preamble))
    assert decoded == reply
    assert consumed == preamble + 13 + 22
    values = cjt188.describe(decoded)["values"]
    assert values.get("cumulative_flow", {}).get("value") == (str(cur) if cur is not None else None)
    assert values["valve"]["value"] == valve
    assert values["battery_low"]["value"] == str(low).lower()


@given(
    addr=st.binary(min_size=7, max_size=7),
    meter_type=st.integers(0, 255),
    control=st.integers(0, 0x3F),
    di=st.sampled_from(sorted(cjt188.KNOWN_DI)),
    ser=st.integers(0, 255),
    data=st.binary(max_size=60),
    order=st.sampled_from(["standard", "swapped"]),
)
def test_any_request_round_trip(addr, meter_type, control, di, ser, data, order):
    frame = cjt188.Cjt188Frame(meter_type, addr, control, di, ser, data, order)
    wire = cjt188.encode(frame)
    assert cjt188.decode(wire, di_order=order) == (len(wire), frame)
    auto = cjt188.decode(wire)[1]
    swapped = (di & 0xFF) << 8 | di >> 8
    if swapped not in cjt188.KNOWN_DI:  # unambiguous identifiers are detected in either order
        assert auto == frame


def _decode_and_describe(buf: bytes) -> None:
    while buf:
        consumed, frame = cjt188.decode(buf)
        if frame is None:
            return
        cjt188.describe(frame)
        buf = buf[consumed:]


@settings(max_examples=400)
@given(st.binary(max_size=80))
def test_fuzz_random_bytes_raise_only_frame_error(buf):
    with contextlib.suppress(FrameError):
        _decode_and_describe(b"\x68" + buf)


@settings(max_examples=400)
@given(
    st.sampled_from([UNIVERSAL_READ, GO_REPLY_FF, GO_ADDRESS_REPLY, ARTICLE_REPLY_BAD_CS[:-2] + b"\x13\x16"]),
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_fuzz_mutated_frames_raise_only_frame_error(wire, edits):
    buf = bytearray(wire)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    fixed = bytes(buf)
    start = fixed.find(b"\x68")
    if start >= 0 and len(fixed) > start + 12:  # also try with a repaired checksum to reach the data parser
        end = len(fixed) - 2
        fixed = fixed[:end] + bytes([sum(fixed[start:end]) & 0xFF]) + fixed[end + 1 :]
    for candidate in (bytes(buf), fixed):
        with contextlib.suppress(FrameError):
            _decode_and_describe(candidate)


def test_time_write_request_and_parser():
    address = cjt188.address_from_display("78330011223344")
    frame = cjt188.build_time_write(address, 0x10, datetime(2026, 1, 2, 3, 4, 5), ser=9)
    wire = cjt188.encode(frame)
    assert wire[11:21] == bytes.fromhex("15 A0 09 05 04 03 02 01 26 20")  # DI low first, seconds first
    decoded = assert_decodes(cjt188.decode, wire)
    assert cjt188.time_written(decoded) == datetime(2026, 1, 2, 3, 4, 5)
    swapped = cjt188.build_time_write(address, 0x10, datetime(2026, 1, 2), di_order="swapped")
    assert cjt188.time_written(one(cjt188.encode(swapped))) == datetime(2026, 1, 2)
    for bad in (frame.data[:6], bytes.fromhex("05 04 03 32 01 26 20"), bytes.fromhex("0A 04 03 02 01 26 20")):
        with pytest.raises(FrameError):
            cjt188.time_written(replace(frame, data=bad))
    with pytest.raises(FrameError):
        cjt188.time_written(cjt188.build_valve(address, 0x10, True))


def test_read_address_request_and_reply_builders_match_the_go_vectors():
    assert cjt188.encode(cjt188.build_read_address(0x10, ser=0xA7)) == GO_READ_ADDRESS
    reply = cjt188.build_address_reply(cjt188.address_from_display("78330123456789"), 0x10, ser=0xA7)
    assert cjt188.encode(reply, preamble=2) == GO_ADDRESS_REPLY
