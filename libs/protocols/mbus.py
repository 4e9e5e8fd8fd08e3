"""EN 13757-2 / EN 13757-3 wired M-Bus codec, sans-IO.

Link layer, EN 13757-2 clause 5 (FT 1.2 frame formats of IEC 60870-5-1)::

    single character   E5                                  (acknowledge)
    short frame        10  C  A  CS  16                    CS = C + A mod 256
    control/long frame 68  L  L  68  C  A  CI  data..  CS  16
                           L = count of C A CI data (3 for a control frame); CS = sum of them

C field (clause 5.4): bit 6 PRM = 1 from the master (SND_NKE 40, SND_UD 53/73, REQ_UD2 5B/7B,
REQ_UD1 5A/7A), PRM = 0 from the slave (RSP_UD 08/18/28/38).

Application layer, EN 13757-3 clause 6: CI 72 = variable data response with the 12-byte long
header (identification number 4-byte BCD, manufacturer 2 bytes, version, medium, access number,
status, signature 2 bytes); CI 7A = 4-byte short header (access number, status, signature);
CI 78 = no header.  Data records follow (clause 6.3): DIF [DIFE..] VIF [VIFE..] data; see
:func:`parse_records`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from libs.protocols.errors import FrameError

PROTOCOL = "mbus"
ACK, SHORT_START, LONG_START, END = 0xE5, 0x10, 0x68, 0x16
SND_NKE, SND_UD, REQ_UD2, RSP_UD = 0x40, 0x53, 0x5B, 0x08
FCB, FCV = 0x20, 0x10  # C field bits 5 and 4 of master requests (clause 5.4)
# Primary addresses (EN 13757-2 clause 5.5 / EN 13757-3 Table 1): 0 unconfigured, 1..250 slaves,
# 253 network layer (secondary addressing), 254 broadcast with reply (point-to-point buses
# only: every slave answers), 255 broadcast without reply.
UNCONFIGURED, NETWORK_LAYER, BROADCAST_REPLY, BROADCAST = 0x00, 0xFD, 0xFE, 0xFF
CI_APPLICATION_RESET, CI_DATA_SEND = 0x50, 0x51
CI_LONG_HEADER, CI_NO_HEADER, CI_SHORT_HEADER = 0x72, 0x78, 0x7A
CI_WITH_RECORDS = {CI_LONG_HEADER: 12, CI_NO_HEADER: 0, CI_SHORT_HEADER: 4}

# EN 13757-3 Table 3 (device type / medium), the common codes.
MEDIA = {
    0x00: "other",
    0x01: "oil",
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat (outlet)",
    0x05: "steam",
    0x06: "warm water",
    0x07: "water",
    0x08: "heat cost allocator",
    0x09: "compressed air",
    0x0A: "cooling (outlet)",
    0x0B: "cooling (inlet)",
    0x0C: "heat (inlet)",
    0x0D: "heat/cooling",
    0x0E: "bus/system",
    0x0F: "unknown",
    0x15: "hot water",
    0x16: "cold water",
    0x17: "dual water",
    0x18: "pressure",
    0x19: "A/D converter",
}


@dataclass(frozen=True)
class MBusHeader:
    """Fixed data header of CI 72 (clause 6.2.1); ``ident`` is the 8-digit BCD id as text."""

    ident: str = ""
    manufacturer: str = ""
    version: int = 0
    medium: int = 0
    access_no: int = 0
    status: int = 0
    signature: int = 0


@dataclass(frozen=True)
class MBusFrame:
    """An M-Bus telegram: ``kind`` is ``ack``, ``short`` or ``long`` (long also covers control)."""

    kind: str
    control: int = 0
    address: int = 0
    ci: int | None = None
    data: bytes = b""
    header: MBusHeader | None = field(default=None, compare=False)
    records: tuple[MBusRecord, ...] = field(default=(), compare=False)


def _fail(fault: str, detail: str) -> FrameError:
    return FrameError(PROTOCOL, fault, detail)


def manufacturer_code(raw: int) -> str:
    """Three letters from the 15-bit manufacturer id (clause 6.2.4, EN 62056-21 flag)."""
    return "".join(chr(((raw >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


def manufacturer_id(code: str) -> int:
    """Inverse of :func:`manufacturer_code`."""
    if len(code) != 3 or not all("A" <= c <= "Z" for c in code):
        raise _fail("data", f"expected three letters A-Z as manufacturer, got {code!r}")
    return (ord(code[0]) - 64) << 10 | (ord(code[1]) - 64) << 5 | (ord(code[2]) - 64)


@dataclass(frozen=True)
class MBusRecord:
    """One data record (clause 6.3): DIB (``dif`` incl. DIFEs), VIB (``vif`` incl. VIFEs), data.

    ``value`` is scaled by the VIF's decimal exponent (a Decimal), a date/time ISO string, text,
    or the raw hex when the coding cannot carry a number (e.g. non-decimal BCD digits).
    """

    dif: bytes
    vif: bytes
    raw: bytes
    storage: int = 0
    tariff: int = 0
    subunit: int = 0
    function: str = "instantaneous"
    name: str = ""
    unit: str | None = None
    value: Decimal | int | str | None = None


FUNCTIONS = ("instantaneous", "maximum", "minimum", "error")
# DIF data field (clause 6.3.2, Table 4): coding -> data length; 0x0D is variable (LVAR).
DATA_LENGTH = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4, 6: 6, 7: 8, 8: 0, 9: 1, 10: 2, 11: 3, 12: 4, 14: 6}
BCD_CODINGS = {9, 10, 11, 12, 14}
DURATION_UNITS = ("s", "min", "h", "d")
# Primary VIF table (clause 6.4.2, Table 10): (first code, last code, name, unit, exponent base)
# where the exponent is (vif - first) + base; None marks codes handled specially.
_VIF_RANGES = (
    (0x00, 0x07, "energy", "Wh", -3),
    (0x08, 0x0F, "energy", "J", 0),
    (0x10, 0x17, "volume", "m3", -6),
    (0x18, 0x1F, "mass", "kg", -3),
    (0x28, 0x2F, "power", "W", -3),
    (0x30, 0x37, "power", "J/h", 0),
    (0x38, 0x3F, "volume_flow", "m3/h", -6),
    (0x40, 0x47, "volume_flow", "m3/min", -7),
    (0x48, 0x4F, "volume_flow", "m3/s", -9),
    (0x50, 0x57, "mass_flow", "kg/h", -3),
    (0x58, 0x5B, "flow_temperature", "°C", -3),
    (0x5C, 0x5F, "return_temperature", "°C", -3),
    (0x60, 0x63, "temperature_difference", "K", -3),
    (0x64, 0x67, "external_temperature", "°C", -3),
    (0x68, 0x6B, "pressure", "bar", -3),
)
_VIF_SPECIAL = {
    0x6C: "date",
    0x6D: "date_time",
    0x6E: "hca_units",
    0x78: "fabrication_no",
    0x79: "enhanced_id",
    0x7A: "bus_address",
    0x7C: "text_vif",
    0x7E: "any",
    0x7F: "manufacturer",
}
# Extension table FD (clause 6.4.4, Table 14), the codes meters commonly send.
_VIF_FD = {
    0x0C: "model_version",
    0x0E: "firmware_version",
    0x0F: "software_version",
    0x17: "error_flags",
    0x1A: "digital_output",
    0x1B: "digital_input",
}


def _need(data: bytes, pos: int, count: int, what: str) -> None:
    if pos + count > len(data):
        raise _fail(
            "data", f"record truncated: expected {count} byte(s) of {what} at {pos}, got {len(data) - pos}"
        )


def _float32(raw: bytes) -> Decimal | str:
    number = struct.unpack("<f", raw)[0]
    if number != number or number in (float("inf"), float("-inf")):
        return str(number)
    for digits in range(1, 10):  # shortest text that reads back as the same float32
        text = f"{number:.{digits}g}"
        if struct.pack("<f", float(text)) == raw:
            return Decimal(text)
    return Decimal(repr(number))  # pragma: no cover - 9 significant digits always round-trip


def _bcd_value(raw: bytes) -> int | str:
    text = raw[::-1].hex()
    negative = text[:1] == "f"
    if negative:
        text = "0" + text[1:]
    if not text.isdigit():
        return raw[::-1].hex().upper()
    return -int(text) if negative else int(text)


def _date(raw: bytes, with_time: bool) -> str:
    """Type G date (2 bytes) or type F date-time (4 bytes), EN 13757-3 Annex A."""
    d = raw[2:] if with_time else raw
    year = ((d[0] & 0xE0) >> 5) | ((d[1] & 0xF0) >> 1)
    text = f"{2000 + year if year < 81 else 1900 + year:04d}-{d[1] & 0x0F:02d}-{d[0] & 0x1F:02d}"
    return text + f"T{raw[1] & 0x1F:02d}:{raw[0] & 0x3F:02d}" if with_time else text


def _interpret(
    vif: bytes, text_vif: str, raw_value: int | str | Decimal | None, raw: bytes
) -> tuple[str, str | None, Decimal | int | str | None]:
    code = vif[0] & 0x7F
    if vif[0] == 0xFD and len(vif) > 1:
        ext = vif[1] & 0x7F
        if 0x40 <= ext <= 0x4F:
            return "voltage", "V", _scale(raw_value, ext - 0x40 - 9)
        if 0x50 <= ext <= 0x5F:
            return "current", "A", _scale(raw_value, ext - 0x50 - 12)
        return _VIF_FD.get(ext, f"fd_{ext:02X}"), None, raw_value
    if vif[0] == 0xFB and len(vif) > 1:
        return f"fb_{vif[1] & 0x7F:02X}", None, raw_value
    for first, last, name, unit, base in _VIF_RANGES:
        if first <= code <= last:
            return name, unit, _scale(raw_value, code - first + base)
    if 0x20 <= code <= 0x27 or 0x70 <= code <= 0x77:
        names = {
            0x20: "on_time",
            0x24: "operating_time",
            0x70: "averaging_duration",
            0x74: "actuality_duration",
        }
        return names[code & 0x7C], DURATION_UNITS[code & 0x03], raw_value
    if code in (0x6C, 0x6D) and len(raw) in (2, 4):
        return _VIF_SPECIAL[code], None, _date(raw, len(raw) == 4)
    if code == 0x7C:
        return text_vif, None, raw_value
    return _VIF_SPECIAL.get(code, f"vif_{code:02X}"), None, raw_value


def _scale(value: int | str | Decimal | None, exponent: int) -> Decimal | str | None:
    if isinstance(value, int | Decimal):
        return Decimal(value) * Decimal(10) ** exponent
    return value


def _chain(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """A byte plus its extension bytes (bit 7 set = another follows), at most 10 extensions."""
    start = pos
    while True:
        _need(data, pos, 1, what)
        pos += 1
        if not data[pos - 1] & 0x80:
            return data[start:pos], pos
        if pos - start > 10:
            raise _fail("data", f"expected at most 10 {what} extensions, got more at {start}")


def parse_records(data: bytes) -> list[MBusRecord]:
    """Decode the data records of a variable data structure (clause 6.3)."""
    records: list[MBusRecord] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0x2F:  # idle filler
            pos += 1
            continue
        if data[pos] & 0x0F == 0x0F:  # 0F/1F manufacturer specific data (special functions, Table 6)
            records.append(
                MBusRecord(
                    data[pos : pos + 1],
                    b"",
                    data[pos + 1 :],
                    name="manufacturer_data",
                    value=data[pos + 1 :].hex().upper(),
                )
            )
            break
        dib, pos = _chain(data, pos, "DIF")
        vib, pos = _chain(data, pos, "VIF")
        text_vif = ""
        if vib[0] & 0x7F == 0x7C:  # plain-text VIF: length + ASCII, reversed (clause 6.4.3)
            _need(data, pos, 1, "plain text VIF length")
            size = data[pos]
            _need(data, pos + 1, size, "plain text VIF")
            text_vif = data[pos + 1 : pos + 1 + size][::-1].decode("latin-1")
            pos += 1 + size
        coding = dib[0] & 0x0F
        value: int | str | Decimal | None
        if coding == 0x0D:
            _need(data, pos, 1, "LVAR")
            lvar = data[pos]
            pos += 1
            if lvar >= 0xF0:
                raise _fail("data", f"expected LVAR < 0xF0 (text, BCD, binary), got 0x{lvar:02X}")
            size = lvar if lvar < 0xC0 else lvar & 0x0F if lvar < 0xE0 else lvar - 0xE0
            _need(data, pos, size, "variable data")
            raw = data[pos : pos + size]
            if lvar < 0xC0:
                value = raw[::-1].decode("latin-1")
            elif lvar < 0xE0:
                bcd = _bcd_value(raw)
                value = -bcd if lvar >= 0xD0 and isinstance(bcd, int) else bcd
            else:
                value = int.from_bytes(raw, "little", signed=True)
        else:
            size = DATA_LENGTH[coding]
            _need(data, pos, size, "data")
            raw = data[pos : pos + size]
            if size == 0:
                value = None
            elif coding == 5:
                value = _float32(raw)
            elif coding in BCD_CODINGS:
                value = _bcd_value(raw)
            else:
                value = int.from_bytes(raw, "little", signed=True)
        pos += size
        storage, tariff, subunit = dib[0] >> 6 & 1, 0, 0
        for i, dife in enumerate(dib[1:]):
            storage |= (dife & 0x0F) << (1 + 4 * i)
            tariff |= (dife >> 4 & 0x03) << (2 * i)
            subunit |= (dife >> 6 & 0x01) << i
        name, unit, scaled = _interpret(vib, text_vif, value, raw)
        records.append(
            MBusRecord(
                dib, vib, raw, storage, tariff, subunit, FUNCTIONS[dib[0] >> 4 & 3], name, unit, scaled
            )
        )
    return records


def encode_record(
    vif: bytes,
    value: int,
    coding: int = 0x04,
    *,
    storage: int = 0,
    tariff: int = 0,
    subunit: int = 0,
    function: int = 0,
) -> bytes:
    """One data record (clause 6.3) for a simulated slave; ``value`` is the unscaled integer.

    ``coding`` is the DIF data field: 1/2/3/4/6/7 signed binary, 9/A/B/C/E BCD.
    """
    if coding not in DATA_LENGTH or DATA_LENGTH[coding] == 0:
        raise _fail("data", f"expected a fixed-length numeric DIF coding, got 0x{coding:X}")
    size = DATA_LENGTH[coding]
    if coding in BCD_CODINGS:
        if not 0 <= value < 10 ** (2 * size):
            raise _fail("data", f"expected 0 <= BCD value < {10 ** (2 * size)}, got {value}")
        payload = bytes.fromhex(f"{value:0{2 * size}d}")[::-1]
    else:
        payload = value.to_bytes(size, "little", signed=True)
    difes = []
    rest_storage, rest_tariff, rest_subunit = storage >> 1, tariff, subunit
    while rest_storage or rest_tariff or rest_subunit:
        difes.append((rest_storage & 0x0F) | (rest_tariff & 0x03) << 4 | (rest_subunit & 1) << 6)
        rest_storage, rest_tariff, rest_subunit = rest_storage >> 4, rest_tariff >> 2, rest_subunit >> 1
    dif = coding | (function & 3) << 4 | (storage & 1) << 6 | (0x80 if difes else 0)
    dib = bytes([dif, *(d | 0x80 for d in difes[:-1]), *difes[-1:]])
    return dib + vif + payload


def _parse_header(ci: int, data: bytes) -> MBusHeader | None:
    if ci == CI_LONG_HEADER:
        ident = data[3::-1].hex().upper()
        return MBusHeader(
            ident,
            manufacturer_code(int.from_bytes(data[4:6], "little")),
            data[6],
            data[7],
            data[8],
            data[9],
            int.from_bytes(data[10:12], "little"),
        )
    if ci == CI_SHORT_HEADER:
        return MBusHeader(access_no=data[0], status=data[1], signature=int.from_bytes(data[2:4], "little"))
    return None


def _long(control: int, address: int, ci: int, data: bytes) -> MBusFrame:
    header_len = CI_WITH_RECORDS.get(ci)
    if header_len is None:
        return MBusFrame("long", control, address, ci, data)
    if len(data) < header_len:
        raise _fail("length", f"expected >= {header_len} header bytes for CI {ci:02X}, got {len(data)}")
    records = tuple(parse_records(data[header_len:]))
    return MBusFrame("long", control, address, ci, data, _parse_header(ci, data), records)


def decode(buf: bytes) -> tuple[int, MBusFrame | None]:
    """Parse one telegram from ``buf``; bytes before a start character are skipped as garbage."""
    skip = next((i for i, b in enumerate(buf) if b in (ACK, SHORT_START, LONG_START)), len(buf))
    frame = buf[skip:]
    if not frame:
        return skip, None
    if frame[0] == ACK:
        return skip + 1, MBusFrame("ack")
    if frame[0] == SHORT_START:
        if len(frame) < 5:
            return skip, None
        if frame[4] != END:
            raise _fail("terminator", f"expected 0x16 at offset 4, got 0x{frame[4]:02X}")
        if (frame[1] + frame[2]) & 0xFF != frame[3]:
            raise _fail("checksum", f"expected 0x{(frame[1] + frame[2]) & 0xFF:02X}, got 0x{frame[3]:02X}")
        return skip + 5, MBusFrame("short", frame[1], frame[2])
    if len(frame) < 4:
        return skip, None
    if frame[1] != frame[2]:
        raise _fail("length", f"expected both L fields equal, got 0x{frame[1]:02X} and 0x{frame[2]:02X}")
    if frame[3] != LONG_START:
        raise _fail("start", f"expected second 0x68 at offset 3, got 0x{frame[3]:02X}")
    length = frame[1]
    if length < 3:
        raise _fail("length", f"expected L >= 3 (C A CI), got {length}")
    total = 4 + length + 2
    if len(frame) < total:
        return skip, None
    if frame[total - 1] != END:
        raise _fail("terminator", f"expected 0x16 at offset {total - 1}, got 0x{frame[total - 1]:02X}")
    checksum = sum(frame[4 : 4 + length]) & 0xFF
    if frame[total - 2] != checksum:
        raise _fail("checksum", f"expected 0x{checksum:02X}, got 0x{frame[total - 2]:02X}")
    return skip + total, _long(frame[4], frame[5], frame[6], bytes(frame[7 : 4 + length]))


def encode(frame: MBusFrame) -> bytes:
    """Serialise ``frame`` (EN 13757-2 clause 5)."""
    if frame.kind == "ack":
        return bytes([ACK])
    if frame.kind == "short":
        return bytes([SHORT_START, frame.control, frame.address, (frame.control + frame.address) & 0xFF, END])
    body = bytes([frame.control, frame.address, frame.ci or 0]) + frame.data
    if len(body) > 0xFF:
        raise _fail("length", f"expected at most 252 data bytes, got {len(frame.data)}")
    return bytes([LONG_START, len(body), len(body), LONG_START]) + body + bytes([sum(body) & 0xFF, END])


def snd_nke(address: int) -> MBusFrame:
    """SND_NKE short frame: link reset of a slave (clause 5.4); the slave answers E5."""
    return MBusFrame("short", SND_NKE, address)


def set_primary_address(address: int, new_address: int, fcb: bool = False) -> MBusFrame:
    """SND_UD with CI 51 and the record ``01 7A nn`` giving a slave a new primary address.

    EN 13757-3 clause 6.4.2: VIF 7A is "bus address", here as a one-byte binary value.
    """
    if not 0 <= new_address <= 250:
        raise _fail("address", f"expected a primary address 0..250, got {new_address}")
    return MBusFrame(
        "long", SND_UD | (FCB if fcb else 0), address, CI_DATA_SEND, bytes([0x01, 0x7A, new_address])
    )


def time_point(when: datetime) -> bytes:
    """A type F date-time (EN 13757-3 Annex A): minute, hour, day + year, month + year.

    Years 2000..2080 (the 7-bit year field reads 0..80 as 2000..2080, 81..99 as 1981..1999);
    the IV (invalid) and SU (summer time) bits are left clear.
    """
    year = when.year - 2000
    if not 0 <= year <= 80:
        raise _fail("data", f"expected a year 2000..2080 for a type F date-time, got {when.year}")
    return bytes([when.minute, when.hour, when.day | (year & 0x07) << 5, when.month | (year >> 3) << 4])


def encode_time_record(when: datetime, storage: int = 0) -> bytes:
    """The data record ``04 6D`` + type F date-time (storage 0: "time point now")."""
    dif = 0x04 | (storage & 1) << 6
    return bytes([dif, 0x6D]) + time_point(when)


def request_ud2(address: int, fcb: bool = False) -> MBusFrame:
    """REQ_UD2 short frame asking a slave for its class 2 data (clause 5.4)."""
    return MBusFrame("short", REQ_UD2 | (0x20 if fcb else 0), address)


def build_rsp_ud(address: int, header: MBusHeader, records: bytes, access_control: int = RSP_UD) -> MBusFrame:
    """RSP_UD long frame with CI 72 for a simulated slave; ``records`` from :func:`encode_record`."""
    head = (
        bytes.fromhex(header.ident.zfill(8))[::-1]
        + manufacturer_id(header.manufacturer).to_bytes(2, "little")
        + bytes([header.version, header.medium, header.access_no, header.status])
        + header.signature.to_bytes(2, "little")
    )
    return _long(access_control, address, CI_LONG_HEADER, head + records)


def describe(frame: MBusFrame) -> dict[str, Any]:
    """JSON view of a telegram per :mod:`libs.protocols.registry`."""
    values: dict[str, dict[str, Any]] = {}
    for index, record in enumerate(frame.records):
        key = f"{index}:{record.name}"
        if record.storage:
            key += f"@{record.storage}"
        value = record.value
        values[key] = {
            "value": str(value) if isinstance(value, Decimal | int) else value,
            "unit": record.unit,
        }
    result: dict[str, Any] = {
        "protocol": PROTOCOL,
        "address": str(frame.address) if frame.kind != "ack" else None,
        "control": f"{frame.control:02X}" if frame.kind != "ack" else "E5",
        "reply": frame.kind == "ack" or not frame.control & 0x40,
        "error": False,
        "error_code": None,
        "di": f"{frame.ci:02X}" if frame.ci is not None else None,
        "values": values,
    }
    if frame.header is not None:
        h = frame.header
        result["header"] = {
            "id": h.ident,
            "manufacturer": h.manufacturer,
            "version": h.version,
            "medium": MEDIA.get(h.medium, f"0x{h.medium:02X}"),
            "access_no": h.access_no,
            "status": f"{h.status:02X}",
            "signature": f"{h.signature:04X}",
        }
        result["error"] = bool(h.status & 0x03)  # status bits 0-1: application busy / error
        result["error_code"] = f"{h.status & 0x03:02X}" if h.status & 0x03 else None
    return result
