"""EN 13757-2/-3 M-Bus codec: libmbus / pyMeterBus test telegrams, round trips, fuzz."""

from __future__ import annotations

import contextlib
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.protocols import mbus
from libs.protocols.errors import FrameError
from tests.protocols.framing import assert_decodes

# rscada/libmbus test/test-frames/ACW_Itron-CYBLE-M-Bus-14.hex (expected: .norm.xml beside it).
ITRON_CYBLE = bytes.fromhex(
    "68 56 56 68 08 01 72 23 15 01 09 77 04 14 07 25 00 00 00 0C 78 23 15 01 09 0D 7C 08 44 49 20 2E "
    "74 73 75 63 "
    "0A 35 35 37 36 37 30 41 4C 39 30 04 6D 1A 0E CD 13 02 7C 09 65 6D 69 74 20 2E 74 61 62 D4 09 04 "
    "13 1F 00 00 "
    "00 04 93 7F 00 00 00 00 44 13 1F 00 00 00 0F 00 01 1F A9 16"
)
# rscada/libmbus test/test-frames/SLB_CF-Compact-Integral-MK-MaXX.hex (heat meter).
SLB_CF = bytes.fromhex(
    "68 5C 5C 68 08 04 72 14 73 81 11 82 4D 06 04 03 00 00 00 0C 78 14 73 81 11 0C 06 00 00 00 00 0C "
    "14 02 00 00 "
    "00 0A 3B 00 00 0B 5A 18 02 00 0B 5E 20 02 00 0B 61 18 00 F0 32 26 00 00 02 27 98 04 04 6D 02 0E "
    "CD 13 84 40 "
    "14 7B 00 00 00 84 80 40 14 41 01 00 00 09 FD 0E 03 09 FD 0F 18 0F 00 16 DB 16"
)
# rscada/libmbus test/test-frames/EFE_Engelmann-WaterStar.hex (warm water).
ENGELMANN_WATERSTAR = bytes.fromhex(
    "68 51 51 68 08 0B 72 54 02 99 04 C5 14 00 06 0C 27 00 00 04 78 2E 25 4C 00 04 6D 0A 0C CD 13 04 "
    "13 4C 01 00 "
    "00 44 13 4B 01 00 00 84 01 13 4C 01 00 00 42 6C BF 1C 02 6C DF 1C 04 3B 00 00 00 00 14 3B 16 08 "
    "00 00 02 23 "
    "A7 04 01 FD 17 00 04 90 28 08 00 00 00 3F 16"
)
# ganehag/pyMeterBus tests/fixtures/frames/long_basic.hex and short.hex.
PYMETERBUS_LONG = bytes.fromhex(
    "68 3D 3D 68 08 0B 72 21 00 00 00 B0 5C 02 1B 12 00 00 00 0C 78 49 04 00 64 02 75 0A 00 01 FD 71 "
    "1E 2F 2F 0A "
    "66 20 02 0A FB 1A 31 05 02 FD 97 1D 00 00 2F 2F 2F 2F 2F 2F 2F 2F 2F 2F 2F 2F 2F 2F 2F DD 16"
)
PYMETERBUS_SHORT = bytes.fromhex("10 08 0B 13 16")
# REQ_UD2 to the broadcast-reply address FE (EN 13757-2; checksum 5B + FE = 59) and the E5 ack.
REQ_UD2_FE = bytes.fromhex("10 5B FE 59 16")
ACK = bytes.fromhex("E5")


def one(wire: bytes) -> mbus.MBusFrame:
    consumed, frame = mbus.decode(wire)
    assert frame is not None
    assert consumed == len(wire)
    return frame


def values(wire: bytes) -> dict:
    return {k: v["value"] for k, v in mbus.describe(one(wire))["values"].items()}


@pytest.mark.parametrize(
    "wire", [ITRON_CYBLE, SLB_CF, ENGELMANN_WATERSTAR, PYMETERBUS_LONG, PYMETERBUS_SHORT, REQ_UD2_FE, ACK]
)
def test_public_vectors_decode_every_way(wire):
    frame = assert_decodes(mbus.decode, wire)
    assert mbus.encode(frame) == wire


def test_itron_cyble_matches_libmbus_norm_xml():
    view = mbus.describe(one(ITRON_CYBLE))
    assert view["header"] == {
        "id": "09011523",
        "manufacturer": "ACW",
        "version": 20,
        "medium": "water",
        "access_no": 37,
        "status": "00",
        "signature": "0000",
    }
    assert view["reply"]
    assert view["address"] == "1"
    assert view["di"] == "72"
    assert values(ITRON_CYBLE) == {
        "0:fabrication_no": "9011523",
        "1:cust. ID": "09LA076755",
        "2:date_time": "2014-03-13T14:26",
        "3:bat. time": "2516",
        "4:volume": "0.031",
        "5:volume": "0.000",
        "6:volume@1": "0.031",
        "7:manufacturer_data": "00011F",
    }


def test_slb_heat_meter_matches_libmbus_norm_xml():
    got = values(SLB_CF)
    assert got["2:volume"] == "0.02"
    assert got["4:flow_temperature"] == "21.8"
    assert got["5:return_temperature"] == "22.0"
    assert got["6:temperature_difference"] == "-0.18"
    assert got["8:operating_time"] == "1176"  # days; libmbus: 101606400 s
    assert got["9:date_time"] == "2014-03-13T14:02"
    assert got["12:firmware_version"] == "3"
    assert got["13:software_version"] == "18"
    records = one(SLB_CF).records
    assert (records[10].subunit, records[10].value) == (1, Decimal("1.23"))
    assert (records[11].subunit, records[11].value) == (2, Decimal("3.21"))
    assert records[7].function == "error"


def test_engelmann_matches_libmbus_norm_xml():
    got = values(ENGELMANN_WATERSTAR)
    assert got["2:volume"] == "0.332"
    assert got["3:volume@1"] == "0.331"
    assert got["4:volume@2"] == "0.332"
    assert got["5:date@1"] == "2013-12-31"
    assert got["8:volume_flow"] == "2.070"
    assert got["9:on_time"] == "1191"
    assert got["11:volume"] == "0.000008"
    assert one(ENGELMANN_WATERSTAR).records[8].function == "maximum"


@pytest.mark.parametrize(
    ("wire", "fault"),
    [
        (SLB_CF[:-2] + b"\x00\x16", "checksum"),
        (SLB_CF[:-1] + b"\x17", "terminator"),
        (bytes.fromhex("68 5C 5B 68") + SLB_CF[4:], "length"),
        (bytes.fromhex("68 5C 5C 69") + SLB_CF[4:], "start"),
        (bytes.fromhex("10 5B FE 58 16"), "checksum"),
        (bytes.fromhex("68 02 02 68 08 01 09 16"), "length"),
    ],
)
def test_bad_frames_name_their_fault(wire, fault):
    with pytest.raises(FrameError) as err:
        mbus.decode(wire)
    assert err.value.fault == fault
    assert err.value.protocol == "mbus"


def test_truncated_record_is_a_data_error():
    body = bytes([0x08, 0x01, 0x78, 0x04, 0x13, 0x1F, 0x00])  # CI 78, int32 record cut short
    wire = bytes([0x68, len(body), len(body), 0x68]) + body + bytes([sum(body) & 0xFF, 0x16])
    with pytest.raises(FrameError) as err:
        mbus.decode(wire)
    assert err.value.fault == "data"
    assert "truncated" in str(err.value)


def test_need_more_and_garbage():
    assert mbus.decode(b"") == (0, None)
    assert mbus.decode(b"\x00\x01") == (2, None)
    assert mbus.decode(b"\x00\x68\x56\x56") == (1, None)


def test_request_and_response_for_a_simulated_slave():
    req = mbus.request_ud2(5)
    assert mbus.encode(req) == bytes.fromhex("10 5B 05 60 16")
    assert not mbus.describe(req)["reply"]
    header = mbus.MBusHeader("12345678", "ACW", 1, 0x07, 9, 0, 0)
    records = mbus.encode_record(bytes([0x13]), 123456) + mbus.encode_record(bytes([0x6D]), 0x13CD0E1A, 4)
    rsp = mbus.build_rsp_ud(5, header, records)
    frame = assert_decodes(mbus.decode, mbus.encode(rsp))
    assert frame.header == header
    assert [(r.name, r.value) for r in frame.records] == [
        ("volume", Decimal("123.456")),
        ("date_time", "2014-03-13T14:26"),
    ]


def test_manufacturer_code_round_trip_and_rejects():
    assert mbus.manufacturer_code(mbus.manufacturer_id("SLB")) == "SLB"
    with pytest.raises(FrameError):
        mbus.manufacturer_id("sl")


vifs = st.sampled_from([0x03, 0x06, 0x13, 0x14, 0x2B, 0x3B, 0x5A, 0x5E, 0x61, 0x22, 0x78])


@settings(max_examples=200)
@given(
    vif=vifs,
    coding=st.sampled_from([1, 2, 3, 4, 6, 7, 9, 10, 11, 12, 14]),
    raw=st.integers(0, 2**63 - 1),
    storage=st.integers(0, 2**9 - 1),
    tariff=st.integers(0, 15),
    subunit=st.integers(0, 3),
    function=st.integers(0, 3),
)
def test_record_round_trip(vif, coding, raw, storage, tariff, subunit, function):
    size = mbus.DATA_LENGTH[coding]
    if coding in mbus.BCD_CODINGS:
        value = raw % 10 ** (2 * size)
    else:
        value = raw % 2 ** (8 * size) - 2 ** (8 * size - 1)
    blob = mbus.encode_record(
        bytes([vif]), value, coding, storage=storage, tariff=tariff, subunit=subunit, function=function
    )
    (record,) = mbus.parse_records(blob)
    assert (record.storage, record.tariff, record.subunit) == (storage, tariff, subunit)
    assert record.function == mbus.FUNCTIONS[function]
    assert int.from_bytes(record.raw, "little", signed=True) == value or coding in mbus.BCD_CODINGS


@given(
    control=st.integers(0, 255),
    address=st.integers(0, 255),
    ci=st.integers(0, 255),
    data=st.binary(max_size=120),
)
def test_long_frame_round_trip(control, address, ci, data):
    if ci in mbus.CI_WITH_RECORDS:
        ci = 0x51  # arbitrary application data, records are covered above
    frame = mbus.MBusFrame("long", control, address, ci, data)
    wire = mbus.encode(frame)
    assert mbus.decode(wire) == (len(wire), frame)


@given(control=st.integers(0, 255), address=st.integers(0, 255))
def test_short_frame_round_trip(control, address):
    frame = mbus.MBusFrame("short", control, address)
    assert mbus.decode(mbus.encode(frame)) == (5, frame)


def _decode_and_describe(buf: bytes) -> None:
    while buf:
        consumed, frame = mbus.decode(buf)
        if frame is None:
            return
        mbus.describe(frame)
        buf = buf[consumed:]


@settings(max_examples=300)
@given(st.sampled_from([0x68, 0x10, 0x00]), st.binary(max_size=120))
def test_fuzz_random_bytes_raise_only_frame_error(start, buf):
    with contextlib.suppress(FrameError):
        _decode_and_describe(bytes([start]) + buf)


@settings(max_examples=400)
@given(
    st.sampled_from([ITRON_CYBLE, SLB_CF, ENGELMANN_WATERSTAR, PYMETERBUS_LONG]),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_fuzz_mutated_frames_raise_only_frame_error(wire, edits):
    buf = bytearray(wire)
    for pos, value in edits:
        buf[7 + pos % (len(buf) - 9)] = value  # mutate the user data, then repair the checksum
    buf[-2] = sum(buf[4:-2]) & 0xFF
    with contextlib.suppress(FrameError):
        _decode_and_describe(bytes(buf))


@given(st.datetimes(datetime(2000, 1, 1), datetime(2080, 12, 31)))
@settings(max_examples=200, deadline=None)
def test_time_point_round_trips(when: datetime) -> None:
    (record,) = mbus.parse_records(mbus.encode_time_record(when))
    assert record.name == "date_time"
    assert record.value == when.strftime("%Y-%m-%dT%H:%M")


def test_slave_requests_snd_nke_and_set_primary_address() -> None:
    assert mbus.encode(mbus.snd_nke(5)) == bytes.fromhex("10 40 05 45 16")
    wire = mbus.encode(mbus.set_primary_address(1, 7))
    assert wire == bytes.fromhex("68 06 06 68 53 01 51 01 7A 07 27 16")
    frame = assert_decodes(mbus.decode, wire)
    (record,) = mbus.parse_records(frame.data)
    assert (record.name, record.value) == ("bus_address", 7)
    with pytest.raises(FrameError):
        mbus.set_primary_address(1, 251)
    with pytest.raises(FrameError):
        mbus.time_point(datetime(2099, 1, 1))
