"""DL/T 645-2007 codec: public hex vectors, corrupted frames, round trips and fuzzing."""

from __future__ import annotations

import contextlib
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.protocols import dlt645
from libs.protocols.dlt645 import Frame, Function, RelayAction
from libs.protocols.errors import FrameError
from tests.protocols.framing import assert_decodes

# Sources of the vectors (all checksums verified by the codec, values cross-checked by hand):
# [CSDN-LOG]  "DLT645-2007报文解析" serial log (FE FE FE FE 68 61 01 00 …): 0.26 kWh, 100.1 V.
# [553668]    https://553668.com/manong/786292.html: read 00010000 of 000102030425 = 1206.42 kWh,
#             and "FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16" read address.
# [MYAI]      https://www.myaiappgames.com/archives/1280: 68 AA … 68 11 04 33 33 34 33 AE 16.
# [SANSHENG]  GitHub, sansheng testcenter Server.java (simulated meter 201000000012): block
#             0001FF00 = 1.29/0.62/0.60/0.03/0.02, voltage block with FFFF phases, date, time,
#             daily-frozen time, remaining amount 198.56, abnormal reply ERR=02 "无请求数据".
# [PLC-C]     GitHub C source comment (2014-11-28 log): read address reply 000000193600 and its
#             0001FF00 block whose rates sum to the total (36.30 = 2.56+0.19+0.38+33.17).
# [BCAST]     GitHub C source "645-07广播校时" comment: 68 99 … 68 08 06 84 55 43 38 39 4A 4B 16.
# [QT-READER] GitHub Qt reader.cpp debug capture: FE-prefixed replies back to back.
# [JAVA-1C]   GitHub Java packDisconnect javadoc "645拉闸报文例子" (relay trip 1CH, N1=1A).
# [CSHARP]    GitHub C# MeterClient test: abnormal reply 68 12 90 78 56 34 12 68 D1 01 35 8D 16.
VECTORS = [
    ("FE FE FE FE 68 61 01 00 00 00 00 68 11 04 33 33 34 33 14 16", "000000000161", "11", "00010000", {}),
    (
        "68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16",
        "000000000161",
        "91",
        "00010000",
        {"forward_active_energy_total": "0.26"},
    ),
    (
        "68 61 01 00 00 00 00 68 91 06 33 34 34 35 34 43 10 16",
        "000000000161",
        "91",
        "02010100",
        {"voltage_a": "100.1"},
    ),
    (
        "68 25 04 03 02 01 00 68 91 08 33 33 34 33 75 39 45 33 8B 16",
        "000102030425",
        "91",
        "00010000",
        {"forward_active_energy_total": "1206.42"},
    ),
    ("FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16", "AAAAAAAAAAAA", "13", None, {}),
    ("68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16", "AAAAAAAAAAAA", "11", "00010000", {}),
    (
        "68 12 00 00 00 10 20 68 93 06 45 33 33 33 43 53 1F 16",
        "201000000012",
        "93",
        None,
        {"address": "201000000012"},
    ),
    (
        "68 00 36 19 00 00 00 68 93 06 33 69 4C 33 33 33 39 16",
        "000000193600",
        "93",
        None,
        {"address": "000000193600"},
    ),
    (
        "68 12 00 00 00 10 20 68 91 18 33 32 34 33 5C 34 33 33 95 33 33 33 93 33 33 33 36 33 33 33 35 33 33 33"
        " 74 16",
        "201000000012",
        "91",
        "0001FF00",
        {
            "forward_active_energy_total": "1.29",
            "forward_active_energy_sharp": "0.62",
            "forward_active_energy_peak": "0.60",
            "forward_active_energy_flat": "0.03",
            "forward_active_energy_valley": "0.02",
        },
    ),
    (
        "68 00 36 19 00 00 00 68 91 18 33 32 34 33 63 69 33 33 89 35 33 33 4C 33 33 33 6B 33 33 33 4A 66 33 33"
        " E9 16",
        "000000193600",
        "91",
        "0001FF00",
        {"forward_active_energy_total": "36.30", "forward_active_energy_valley": "33.17"},
    ),
    (
        "68 12 00 00 00 10 20 68 91 0A 33 32 34 35 89 55 32 32 32 32 21 16",
        "201000000012",
        "91",
        "0201FF00",
        {"voltage_a": "225.6", "voltage_b": None, "voltage_c": None},
    ),
    (
        "68 12 00 00 00 10 20 68 91 08 34 34 33 37 34 44 34 49 72 16",
        "201000000012",
        "91",
        "04000101",
        {"meter_date": "2016-01-11", "meter_date_weekday": "1"},
    ),
    (
        "68 12 00 00 00 10 20 68 91 07 35 34 33 37 88 86 54 DF 16",
        "201000000012",
        "91",
        "04000102",
        {"meter_time": "21:53:55"},
    ),
    (
        "68 12 00 00 00 10 20 68 91 09 34 33 39 38 33 33 3C 43 48 B1 16",
        "201000000012",
        "91",
        "05060001",
        {"daily_frozen_time": "2015-10-09 00:00"},
    ),
    ("68 12 00 00 00 10 20 68 11 04 33 35 C3 33 85 16", "201000000012", "11", "00900200", {}),
    (
        "68 12 00 00 00 10 20 68 91 08 33 35 C3 33 89 CB 34 33 C4 16",
        "201000000012",
        "91",
        "00900200",
        {"remaining_amount": "198.56"},
    ),
    ("68 12 00 00 00 10 20 68 D1 01 35 19 16", "201000000012", "D1", None, {}),
    ("68 12 90 78 56 34 12 68 D1 01 35 8D 16", "123456789012", "D1", None, {}),
    (
        "68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16",
        "999999999999",
        "08",
        None,
        {"time": "2017-06-05T10:22:51"},
    ),
    (
        "FE FE FE FE 68 18 55 60 06 00 00 68 91 07 35 34 33 37 65 86 4B 44 16",
        "000006605518",
        "91",
        "04000102",
        {"meter_time": "18:53:32"},
    ),
    (
        "68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16",
        "111111111111",
        "1C",
        None,
        {"action": "trip", "valid_until": "2018-05-12T15:41:24"},
    ),
]

GOOD = bytes.fromhex("68 25 04 03 02 01 00 68 91 08 33 33 34 33 75 39 45 33 8B 16")


@pytest.mark.parametrize(("wire", "address", "control", "di", "expected"), VECTORS)
def test_public_vectors(wire: str, address: str, control: str, di: str | None, expected: dict) -> None:
    frame = assert_decodes(dlt645.decode, bytes.fromhex(wire))
    view = dlt645.describe(frame)
    assert (view["address"], view["control"], view["di"]) == (address, control, di)
    for name, value in expected.items():
        assert view["values"][name]["value"] == value


def test_abnormal_reply_names_the_error() -> None:
    _, frame = dlt645.decode(bytes.fromhex("68 12 90 78 56 34 12 68 D1 01 35 8D 16"))  # [CSHARP]
    view = dlt645.describe(frame)
    assert view["error"]
    assert view["reply"]
    assert view["error_code"] == 2
    assert view["errors"] == ["no_data"]


def test_units_and_exact_decimals() -> None:
    _, frame = dlt645.decode(bytes.fromhex("68 25 04 03 02 01 00 68 91 08 33 33 34 33 75 39 45 33 8B 16"))
    assert dlt645.values(frame) == {"forward_active_energy_total": (Decimal("1206.42"), "kWh")}


def test_builders_match_public_vectors() -> None:
    assert (
        dlt645.encode(dlt645.read(dlt645.WILDCARD, "00010000")).hex(" ").upper()
        == "68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16"
    )  # [MYAI]
    assert dlt645.encode(dlt645.read_address(), preamble=3) == bytes.fromhex(
        "FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16"
    )  # [553668]
    assert dlt645.encode(dlt645.broadcast_time(datetime(2017, 6, 5, 10, 22, 51))) == bytes.fromhex(
        "68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16"
    )  # [BCAST], seconds first
    trip = dlt645.relay_control(
        "111111111111", RelayAction.TRIP, datetime(2018, 5, 12, 15, 41, 24), password="00000000"
    )
    assert dlt645.encode(trip) == bytes.fromhex(
        "68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16"
    )  # [JAVA-1C]
    reply = dlt645.read_reply("000102030425", "00010000", Decimal("1206.42"))
    assert dlt645.encode(reply) == GOOD


def test_address_is_low_byte_first_on_the_wire() -> None:
    wire = dlt645.encode(dlt645.read("202301010001", "00010000"))
    assert wire[1:7] == bytes.fromhex("010001012320")


def _patched(offset: int, value: int, fix_checksum: bool = False) -> bytes:
    wire = GOOD[:offset] + bytes([value]) + GOOD[offset + 1 :]
    if fix_checksum:
        wire = wire[:-2] + bytes([sum(wire[:-2]) & 0xFF]) + wire[-1:]
    return wire


@pytest.mark.parametrize(
    ("wire", "fault", "message"),
    [
        (_patched(18, 0x8C), "checksum", "expected 0x8B, got 0x8C"),
        (_patched(19, 0x17), "terminator", "expected 0x16, got 0x17"),
        (_patched(7, 0x69), "start", "expected 0x68, got 0x69"),
        (bytes.fromhex("68 25 04 03 02 01 00 68 91 C9"), "length", "at most 200, got 201"),
        (_patched(1, 0x2F, fix_checksum=True), "address", "0x2F"),
    ],
)
def test_corrupted_frames_are_refused(wire: bytes, fault: str, message: str) -> None:
    with pytest.raises(FrameError) as info:
        dlt645.decode(wire)
    assert info.value.fault == fault
    assert message in str(info.value)


def test_control_and_length_rules() -> None:
    with pytest.raises(FrameError, match="unknown function 0x01"):  # a 1997 read is not 2007
        dlt645.decode(bytes.fromhex("68 59 75 00 00 00 00 68 01 02 43 C3 A7 16"))
    with pytest.raises(FrameError) as info:
        dlt645.encode(Frame("000000000001", Function.READ_ADDRESS, b"\x00"))
    assert info.value.fault == "length"
    with pytest.raises(FrameError, match="no reply"):
        dlt645.encode(Frame("999999999999", 0x88, bytes(6)))


def test_partial_input_needs_more_and_counts_garbage() -> None:
    assert dlt645.decode(b"") == (0, None)
    assert dlt645.decode(b"\x00\x01\xfe\xfe") == (4, None)
    assert dlt645.decode(b"\x00\x01" + GOOD[:-1]) == (2, None)


def test_follow_up_frames() -> None:
    first = dlt645.read_reply("000000000001", "00010000", Decimal("5"), more=True)
    assert first.control == 0xB1
    assert first.more
    follow = dlt645.read_follow("000000000001", "00010000", 1)
    _, decoded = dlt645.decode(dlt645.encode(follow))
    assert decoded == follow
    assert decoded.di == "00010000"
    reply = Frame("000000000001", 0x92, follow.data[:4] + bytes.fromhex("00050000") + b"\x01")
    assert dlt645.values(reply) == {
        "forward_active_energy_total": (Decimal("5.00"), "kWh"),
        "seq": (Decimal(1), ""),
    }


ADDRESSES = st.one_of(st.text("0123456789", min_size=12, max_size=12), st.just(dlt645.WILDCARD))
TIMES = st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(lambda t: t.replace(microsecond=0))
DIS = st.integers(0, 2**32 - 1).map(lambda n: f"{n:08X}")
CODES = st.integers(0, 2**32 - 1).map(lambda n: f"{n:08X}")
FRAMES = st.one_of(
    st.builds(dlt645.read, ADDRESSES, DIS),
    st.builds(dlt645.read_follow, ADDRESSES, DIS, st.integers(0, 255)),
    st.just(dlt645.read_address()),
    st.builds(dlt645.write, ADDRESSES, DIS, st.binary(max_size=100), CODES, CODES),
    st.builds(dlt645.broadcast_time, TIMES),
    st.builds(dlt645.freeze, ADDRESSES, st.text("0123456789", min_size=8, max_size=8)),
    st.builds(dlt645.change_baud, ADDRESSES, st.sampled_from(sorted(dlt645.BAUD_BITS))),
    st.builds(dlt645.relay_control, ADDRESSES, st.sampled_from(list(RelayAction)), TIMES, CODES, CODES),
    st.builds(
        dlt645.read_reply, ADDRESSES, st.just("00010000"), st.decimals(0, 999999, places=2), st.booleans()
    ),
    st.builds(
        dlt645.error_reply,
        ADDRESSES,
        st.sampled_from([f for f in Function if f != Function.BROADCAST_TIME]),
        st.integers(0, 127),
    ),
    st.builds(
        lambda a: dlt645.ack(dlt645.relay_control(a, RelayAction.CLOSE_ALLOWED, datetime(2030, 1, 1))),
        ADDRESSES,
    ),
)


@settings(max_examples=300)
@given(FRAMES, st.integers(0, 4))
def test_round_trip(frame: Frame, preamble: int) -> None:
    wire = dlt645.encode(frame, preamble)
    assert dlt645.decode(wire) == (len(wire), frame)
    dlt645.describe(frame)


@given(TIMES, st.sampled_from(list(RelayAction)))
def test_relay_and_time_fields_round_trip(when: datetime, action: RelayAction) -> None:
    cmd = dlt645.relay_command(dlt645.relay_control("000000000001", action, when, "02123456", "87654321"))
    assert (cmd.action, cmd.valid_until, cmd.password, cmd.operator) == (action, when, "02123456", "87654321")
    _, frame = dlt645.decode(dlt645.encode(dlt645.broadcast_time(when)))
    assert dlt645.values(frame)["time"][0] == when.isoformat()


def _drain(buf: bytes) -> None:
    """Decode everything; only FrameError may escape a decode, and then one byte is dropped."""
    while buf:
        try:
            consumed, frame = dlt645.decode(buf)
        except FrameError:
            buf = buf[1:]
            continue
        assert 0 <= consumed <= len(buf)
        if frame is None:
            return
        with contextlib.suppress(FrameError):
            dlt645.describe(frame)
        buf = buf[consumed:]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(buf: bytes) -> None:
    _drain(buf)


@settings(max_examples=500)
@given(st.sampled_from([bytes.fromhex(v[0]) for v in VECTORS]), st.data())
def test_fuzz_mutated_frames(wire: bytes, data: st.DataObject) -> None:
    mutated = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    _drain(bytes(mutated) + wire)


@pytest.mark.parametrize("max_data", [9, 12, 16, 24, 200])
def test_read_parts_split_on_values_and_join_back(max_data: int) -> None:
    values = [Decimal("1.00"), Decimal("2.00"), Decimal("3.00"), Decimal("4.00"), Decimal("5.00")]
    parts = dlt645.read_parts("000000000001", "0001FF00", values, max_data)
    for seq, part in enumerate(parts):
        assert len(part.data) <= max_data
        assert part.more == (seq < len(parts) - 1)
        assert part.function == (Function.READ if seq == 0 else Function.READ_FOLLOW)
        assert dlt645.decode(dlt645.encode(part))[1] == part
        if seq:
            assert part.data[-1] == seq
    whole = dlt645.values(dlt645.read_reply("000000000001", "0001FF00", values))
    assert dlt645.join_parts(parts) == whole
    with pytest.raises(FrameError):
        dlt645.join_parts(parts[:-1] if len(parts) > 1 else [dlt645.error_reply("000000000001", 0x11, 2)])


def test_write_command_and_baud_fields() -> None:
    request = dlt645.write("000000000001", "04001001", bytes.fromhex("00500000"), "02123456", "12345678")
    command = dlt645.write_command(request)
    assert (command.di, command.password, command.operator) == ("04001001", "02123456", "12345678")
    assert command.data == bytes.fromhex("00500000")
    assert dlt645.values(request)["value"] == ("00500000", "")
    assert dlt645.requested_baud(dlt645.change_baud("000000000001", 9600)) == 9600
    assert dlt645.requested_baud(Frame("000000000001", Function.CHANGE_BAUD, b"\x03")) is None
    with pytest.raises(FrameError):
        dlt645.write_command(dlt645.read("000000000001", "04001001"))
