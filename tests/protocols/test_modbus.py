"""Modbus-RTU codec and register maps: public hex vectors, round trips, fuzz.

``assert_decodes`` is called with ``garbage=b""``: RTU has no start byte, so leading garbage
cannot be told from a frame (see libs/protocols/modbus.py); back-to-back frames still are.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.protocols import modbus
from libs.protocols.errors import FrameError
from tests.protocols.framing import assert_decodes

# Modbus Application Protocol spec example (fc 03, slave 0x11, registers 108..110), quoted with
# these bytes in several repositories' tests (e.g. node-modbus-serial SerialHelper tests).
SPEC_REQUEST = bytes.fromhex("11 03 00 6B 00 03 76 87")
SPEC_RESPONSE = bytes.fromhex("11 03 06 AE 41 56 52 43 40 49 AD")
# Read 10 holding registers of slave 1: the golden frame of many RTU test suites (e.g. a Swift
# ModbusCodec test "testBuildRTUReadHoldingRegisters"); write single register from a proto-script test.
READ_10 = bytes.fromhex("01 03 00 00 00 0A C5 CD")
WRITE_SINGLE = bytes.fromhex("01 06 00 01 00 03 98 0B")
# Real Eastron SDM630 traffic logged by gonium/gosdm630 (README "Testing"): L1 voltage 235.84 V,
# L1 power factor 1.0.
SDM_REQUEST = bytes.fromhex("01 04 00 00 00 02 71 cb")
SDM_RESPONSE = bytes.fromhex("01 04 04 43 6b d7 3d 01 fd")
SDM_PF_RESPONSE = bytes.fromhex("01 04 04 3f 80 00 00 f6 78")
SDM_ZERO_RESPONSE = bytes.fromhex("01 04 04 00 00 00 00 fb 84")
# Board log in a C Modbus master comment: read 2 registers -> {10, 20}.
BOARD_REQUEST = bytes.fromhex("01 03 00 00 00 02 C4 0B")
BOARD_RESPONSE = bytes.fromhex("01 03 04 00 0A 00 14 DA 3E")

VECTORS = [
    SPEC_REQUEST,
    SPEC_RESPONSE,
    READ_10,
    WRITE_SINGLE,
    SDM_REQUEST,
    SDM_RESPONSE,
    SDM_PF_RESPONSE,
    SDM_ZERO_RESPONSE,
    BOARD_REQUEST,
    BOARD_RESPONSE,
]


def one(wire: bytes) -> modbus.RtuFrame:
    consumed, frame = modbus.decode(wire)
    assert frame is not None
    assert consumed == len(wire)
    return frame


@pytest.mark.parametrize("wire", VECTORS)
def test_public_vectors_decode_every_way(wire):
    frame = assert_decodes(modbus.decode, wire, garbage=b"")
    assert modbus.encode(frame) == wire


def test_spec_example_fields():
    request = one(SPEC_REQUEST)
    assert (request.reply, request.unit, request.function, request.address, request.count) == (
        False,
        17,
        3,
        107,
        3,
    )
    response = one(SPEC_RESPONSE)
    assert response.reply
    assert response.registers == (0xAE41, 0x5652, 0x4340)
    view = modbus.describe(request)
    assert (view["address"], view["control"], view["di"], view["reply"]) == ("17", "03", "006B", False)


def test_direction_specific_decoders():
    request = modbus.decode_request(READ_10)[1]
    assert request is not None
    assert request.count == 10
    response = modbus.decode_response(BOARD_RESPONSE)[1]
    assert response is not None
    assert response.registers == (10, 20)
    assert modbus.decode_response(BOARD_RESPONSE[:6]) == (0, None)
    with pytest.raises(FrameError) as err:
        modbus.decode_response(READ_10)  # read as a response it claims 0 bytes and fails its CRC
    assert err.value.fault == "crc"


def test_sdm630_voltage_from_real_traffic():
    model = modbus.load_model("sdm630")
    (block, request), *_ = modbus.read_requests(model, 1, max_count=2)
    assert modbus.encode(request) == SDM_REQUEST
    value = modbus.decode_values(block, one(SDM_RESPONSE))["voltage_l1"]
    assert value == Decimal("235.84077")
    assert value.quantize(Decimal("0.01")) == Decimal("235.84")
    pf_block = next(b for b, _ in modbus.read_requests(model, 1, max_count=2) if b.start == 30)
    assert modbus.decode_values(pf_block, one(SDM_PF_RESPONSE)) == {"power_factor_l1": Decimal(1)}


@pytest.mark.parametrize(
    ("wire", "fault"),
    [
        (SPEC_RESPONSE[:-1] + b"\xae", "crc"),
        (READ_10[:-1] + b"\xce", "crc"),
        (bytes.fromhex("01 64 00 00 00 00"), "function"),
    ],
)
def test_bad_frames_name_their_fault(wire, fault):
    with pytest.raises(FrameError) as err:
        modbus.decode(wire)
    assert err.value.fault == fault


def test_exception_response():
    frame = modbus.exception_response(1, 3, 2)
    wire = modbus.encode(frame)
    assert wire[:3] == bytes([1, 0x83, 2])
    assert len(wire) == 5
    view = modbus.describe(assert_decodes(modbus.decode, wire, garbage=b""))
    assert view["error"]
    assert view["error_code"] == "02"
    assert view["reply"]


def test_plan_reads_groups_contiguous_registers():
    model = modbus.load_model("single_phase_prepaid")
    assert [(b.function, b.start, b.count) for b in modbus.plan_reads(model)] == [(3, 0, 5), (3, 16, 4)]
    assert [(b.start, b.count) for b in modbus.plan_reads(model, max_gap=11)] == [(0, 20)]
    assert [(b.start, b.count) for b in modbus.plan_reads(model, max_count=3)] == [
        (0, 3),
        (3, 2),
        (16, 3),
        (19, 1),
    ]
    sdm = modbus.load_model("sdm630")
    assert sum(b.count for b in modbus.plan_reads(sdm)) == 2 * len(sdm.quantities)


@pytest.mark.parametrize("name", ["single_phase_prepaid", "three_phase_multifunction", "sdm630", "generic"])
def test_simulated_meter_round_trip(name):
    model = modbus.load_model(name)
    examples = {
        "float32": Decimal("230.5"),
        "int16": Decimal(-7),
        "int32": Decimal(-12345),
        "uint16": Decimal(4321),
        "uint32": Decimal(123456789),
    }
    values = {q.name: examples[q.type] * q.scale for q in model.quantities}
    got: dict[str, Decimal] = {}
    for block, request in modbus.read_requests(model, 7):
        wire = modbus.encode(modbus.simulate_response(model, one(modbus.encode(request)), values))
        got.update(modbus.decode_values(block, assert_decodes(modbus.decode_response, wire, garbage=b"")))
    assert got == values


def test_simulator_rejects_unmapped_registers():
    model = modbus.load_model("single_phase_prepaid")
    answer = modbus.simulate_response(model, modbus.read_request(1, 3, 5, 2), {})
    assert answer.exception_code == 2


def test_prepaid_relay_control_and_word_order():
    model = modbus.load_model("single_phase_prepaid")
    trip = modbus.relay_command(model, 3, close=False)
    assert modbus.encode(trip)[:6] == bytes.fromhex("03 05 00 00 00 00")
    close = modbus.relay_command(model, 3, close=True)
    assert modbus.encode(close)[:6] == bytes.fromhex("03 05 00 00 FF 00")
    echo = modbus.relay_echo(close)
    assert modbus.encode(echo) == modbus.encode(close)
    assert echo.reply
    remaining = next(q for q in model.quantities if q.name == "remaining_amount")
    assert remaining.encode(Decimal("-1.00")) == [0xFF9C, 0xFFFF]  # little word first
    assert remaining.decode([0xFF9C, 0xFFFF]) == Decimal("-1.00")


def test_model_validation(tmp_path):
    (tmp_path / "bad.json").write_text(
        '{"model": "bad", "quantities": '
        '[{"name": "x", "function": 3, "register": 0, "type": "uint32", "count": 1}]}'
    )
    with pytest.raises(ValueError, match="count/signed"):
        modbus.load_model("bad", tmp_path)


@given(
    unit=st.integers(1, 247),
    function=st.sampled_from([3, 4]),
    address=st.integers(0, 65535 - 125),
    count=st.integers(1, 125),
)
def test_read_request_round_trip(unit, function, address, count):
    frame = modbus.read_request(unit, function, address, count)
    wire = modbus.encode(frame)
    assert modbus.decode_request(wire) == (8, frame)
    assert modbus.decode(wire) == (8, frame)


@given(
    unit=st.integers(1, 247),
    function=st.sampled_from([3, 4]),
    registers=st.lists(st.integers(0, 65535), min_size=1, max_size=125),
)
def test_read_response_round_trip(unit, function, registers):
    frame = modbus.read_response(unit, function, registers)
    wire = modbus.encode(frame)
    assert modbus.decode_response(wire) == (len(wire), frame)


@given(unit=st.integers(1, 247), function=st.integers(1, 127), code=st.integers(1, 11))
def test_exception_round_trip(unit, function, code):
    frame = modbus.exception_response(unit, function, code)
    assert modbus.decode_response(modbus.encode(frame)) == (5, frame)


@given(name=st.sampled_from(["single_phase_prepaid", "three_phase_multifunction"]), data=st.data())
def test_scaled_integer_quantities_round_trip(name, data):
    for q in modbus.load_model(name).quantities:
        bits = 16 * q.count
        low, high = (
            (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if q.type.startswith("int") else (0, 2**bits - 1)
        )
        value = data.draw(st.integers(low, high)) * q.scale
        assert q.decode(q.encode(value)) == value


def _decode_all(buf: bytes) -> None:
    while buf:
        consumed, frame = modbus.decode(buf)
        if frame is None:
            return
        modbus.describe(frame)
        buf = buf[consumed:]


@settings(max_examples=400)
@given(st.binary(max_size=40))
def test_fuzz_random_bytes_raise_only_frame_error(buf):
    with contextlib.suppress(FrameError):
        _decode_all(buf)


@settings(max_examples=400)
@given(
    st.sampled_from(VECTORS),
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 255)), min_size=1, max_size=3),
    st.booleans(),
)
def test_fuzz_mutated_frames_raise_only_frame_error(wire, edits, fix_crc):
    buf = bytearray(wire)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    if fix_crc:  # repair the CRC so the PDU decoders see the mutation
        buf[-2:] = modbus.FramerRTU.compute_CRC(bytes(buf[:-2])).to_bytes(2, "big")
    with contextlib.suppress(FrameError):
        _decode_all(bytes(buf))
