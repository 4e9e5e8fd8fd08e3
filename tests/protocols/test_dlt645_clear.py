"""DL/T 645-2007 meter clear 1AH (电表清零): request layout, replies, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.protocols import dlt645
from libs.protocols.dlt645 import Frame, Function
from libs.protocols.errors import FrameError
from tests.protocols.framing import assert_decodes

# Clause 7.11 layout: 68 A0..A5 68 1A 08 PA P0 P1 P2 C0 C1 C2 C3 CS 16, every data byte +33H.
# Password 02 000000 (level 02, wire order), operator code 12345678 (C3..C0) → C0..C3 = 78 56 34 12.
# Checksums summed by hand (modulo 256 from the first 68).
CLEAR = bytes.fromhex("68 11 11 11 11 11 11 68 1A 08 35 33 33 33 AB 89 67 45 06 16")
ACK = bytes.fromhex("68 11 11 11 11 11 11 68 9A 00 D0 16")  # normal reply: no data
REFUSED = bytes.fromhex("68 11 11 11 11 11 11 68 DA 01 37 48 16")  # abnormal reply, ERR bit 2


def test_builder_lays_out_password_then_operator_code() -> None:
    request = dlt645.meter_clear("111111111111", password="02000000", operator="12345678")
    assert dlt645.encode(request) == CLEAR
    frame = assert_decodes(dlt645.decode, dlt645.encode(request, preamble=4))
    assert frame == request and frame.function == Function.METER_CLEAR and not frame.reply
    command = dlt645.clear_command(frame)
    assert (command.password, command.operator) == ("02000000", "12345678")
    assert dlt645.values(frame) == {"operator": ("12345678", "")}
    assert dlt645.describe(frame)["function"] == "meter_clear"


def test_replies_normal_without_data_and_abnormal_with_the_error_byte() -> None:
    ack = assert_decodes(dlt645.decode, ACK)
    assert (ack.control, ack.reply, ack.error, ack.data) == (0x9A, True, False, b"")
    assert ack == dlt645.ack(dlt645.meter_clear("111111111111"))
    refused = assert_decodes(dlt645.decode, REFUSED)
    assert (refused.control, refused.error, refused.error_code) == (0xDA, True, 0x04)
    assert refused == dlt645.error_reply("111111111111", Function.METER_CLEAR, 0x04)
    assert dlt645.describe(refused)["errors"] == ["unauthorised"]


def test_lengths_and_codes_are_checked() -> None:
    with pytest.raises(FrameError) as info:
        dlt645.encode(Frame("111111111111", Function.METER_CLEAR, bytes(7)))
    assert info.value.fault == "length"
    with pytest.raises(FrameError) as info:
        dlt645.encode(Frame("111111111111", 0x9A, b"\x00"))  # a normal 9AH reply has no data
    assert info.value.fault == "length"
    with pytest.raises(FrameError, match="operator must be 8 hex digits"):
        dlt645.meter_clear("111111111111", operator="42")
    with pytest.raises(FrameError, match="not a plain 8-byte meter-clear request"):
        dlt645.clear_command(dlt645.read("111111111111", "00010000"))


CODES = st.integers(0, 2**32 - 1).map(lambda n: f"{n:08X}")


@given(st.text("0123456789", min_size=12, max_size=12), CODES, CODES, st.integers(0, 4))
def test_round_trip(address: str, password: str, operator: str, preamble: int) -> None:
    request = dlt645.meter_clear(address, password, operator)
    wire = dlt645.encode(request, preamble)
    assert dlt645.decode(wire) == (len(wire), request)
    assert dlt645.clear_command(request) == dlt645.ClearCommand(password, operator)
