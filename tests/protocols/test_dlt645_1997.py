"""DL/T 645-1997 codec: public hex vectors, corrupted frames, round trips and fuzzing."""

from __future__ import annotations

import contextlib
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.protocols import dlt645_1997 as dlt
from libs.protocols.dlt645_1997 import Frame, Function
from libs.protocols.errors import FrameError
from tests.protocols.framing import assert_decodes

# [HEYUAN] Heyuan Intelligence ASDU-LS manual, "1997 DL/645 Protocol Configuration" (page 18,
#          manualshive.com/en/manual/heyuan-intelligence/asdu-ls/2128413?page=18): read B611 of
#          030000000000 and its reply, voltage A = 0100 V.
# [GW-PY]  GitHub Python concentrator test list: 1997 read of 9010 "68 59 75 00 00 00 00 68 01 02
#          43 C3 A7 16".
# Others are built from the standard's rules (C = 81H reply, C1H abnormal, 08H time).
REQUEST = "68 03 00 00 00 00 00 68 01 02 44 E9 03 16"
REPLY = "68 03 00 00 00 00 00 68 81 04 44 E9 33 34 EC 16"


def test_heyuan_read_voltage() -> None:
    request = assert_decodes(dlt.decode, bytes.fromhex(REQUEST))
    assert (request.address, request.function, request.di) == ("000000000003", Function.READ, "B611")
    reply = assert_decodes(dlt.decode, bytes.fromhex(REPLY))
    view = dlt.describe(reply)
    assert view["reply"]
    assert not view["error"]
    assert view["di"] == "B611"
    assert view["values"] == {"voltage_a": {"value": "100", "unit": "V"}}
    assert dlt.encode(dlt.read("000000000003", "B611")) == bytes.fromhex(REQUEST)
    assert dlt.encode(dlt.read_reply("000000000003", "B611", Decimal(100))) == bytes.fromhex(REPLY)


def test_read_total_energy_request() -> None:
    wire = bytes.fromhex("68 59 75 00 00 00 00 68 01 02 43 C3 A7 16")  # [GW-PY]
    frame = assert_decodes(dlt.decode, wire)
    assert (frame.address, frame.di) == ("000000007559", "9010")
    assert dlt.encode(dlt.read("000000007559", "9010"), preamble=4) == b"\xfe" * 4 + wire


def test_energy_block_and_abnormal_reply() -> None:
    reply = dlt.read_reply("000000007559", "901F", [Decimal("12.34"), Decimal("1.00"), None])
    frame = assert_decodes(dlt.decode, dlt.encode(reply))
    values = dlt.values(frame)
    assert values["forward_active_energy_total"] == (Decimal("12.34"), "kWh")
    assert values["forward_active_energy_peak"] == (None, "kWh")
    error = assert_decodes(dlt.decode, dlt.encode(dlt.error_reply("000000007559", Function.READ, 0x02)))
    view = dlt.describe(error)
    assert view["control"] == "C1"
    assert view["errors"] == ["di_wrong"]
    assert view["di"] is None


def test_refuses_2007_frames_and_corruption() -> None:
    with pytest.raises(FrameError) as info:
        dlt.decode(bytes.fromhex("68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16"))
    assert info.value.fault == "control"
    with pytest.raises(FrameError, match="checksum: expected 0xEC, got 0xED"):
        dlt.decode(bytes.fromhex(REPLY[:-5] + "ED 16"))
    with pytest.raises(FrameError) as info:
        dlt.encode(Frame("000000000003", Function.READ, b"\x10\x90\x00"))
    assert info.value.fault == "length"


ADDRESSES = st.text("0123456789", min_size=12, max_size=12)
TIMES = st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(lambda t: t.replace(microsecond=0))
DIS = st.integers(0, 0xFFFF).map(lambda n: f"{n:04X}")
FRAMES = st.one_of(
    st.builds(dlt.read, ADDRESSES, DIS),
    st.builds(
        dlt.write, ADDRESSES, DIS, st.binary(max_size=50), st.integers(0, 2**32 - 1).map(lambda n: f"{n:08X}")
    ),
    st.builds(dlt.broadcast_time, TIMES),
    st.builds(dlt.write_address, ADDRESSES, ADDRESSES),
    st.builds(dlt.change_baud, ADDRESSES, st.sampled_from(sorted(dlt.BAUD_BITS))),
    st.builds(
        dlt.read_reply,
        ADDRESSES,
        st.sampled_from(["9010", "B611", "B621", "B630", "C011"]),
        st.none(),
        st.booleans(),
    ),
    st.builds(
        dlt.error_reply, ADDRESSES, st.sampled_from([Function.READ, Function.WRITE]), st.integers(0, 127)
    ),
)


@settings(max_examples=300)
@given(FRAMES, st.integers(0, 4))
def test_round_trip(frame: Frame, preamble: int) -> None:
    wire = dlt.encode(frame, preamble)
    assert dlt.decode(wire) == (len(wire), frame)
    dlt.describe(frame)


@settings(max_examples=500)
@given(st.binary(max_size=200), st.sampled_from([bytes.fromhex(REQUEST), bytes.fromhex(REPLY)]), st.data())
def test_fuzz(noise: bytes, wire: bytes, data: st.DataObject) -> None:
    mutated = bytearray(wire)
    pos = data.draw(st.integers(0, len(mutated) - 1))
    mutated[pos] = data.draw(st.integers(0, 255))
    buf = noise + bytes(mutated) + wire
    while buf:
        try:
            consumed, frame = dlt.decode(buf)
        except FrameError:
            buf = buf[1:]
            continue
        if frame is None:
            break
        with contextlib.suppress(FrameError):
            dlt.describe(frame)
        buf = buf[consumed:]
