"""CJ/T 188-2004 codec: water, gas and heat meters (户用计量仪表数据传输技术条件), sans-IO.

Frame layout, CJ/T 188-2004 clause 5 (帧格式)::

    [FE ...] 68  T  A0 A1 A2 A3 A4 A5 A6  C  L  DI0 DI1 SER  DATA...  CS  16
    preamble     |  address, A0 first     |  |  '---- L bytes -----'   |   end
                 meter type (5.2, Table 1)|  data length (5.5)         sum of 68..DATA mod 256

- ``FE`` wake-up bytes precede the frame (clause 5.1, "前导字节"); they are skipped like garbage.
- ``T`` (Table 1): 10 cold water, 11 domestic hot water, 12 drinking water, 13 reclaimed water,
  20 heat (heat), 21 heat (cooling), 30 gas, 40 electricity.
- ``A0..A6``: 7-byte BCD address, low byte first; the display order is the reversed bytes.
- ``C`` (clause 5.4): D7 direction (1 = reply from meter), D6 abnormal reply (1 = error),
  D5..D0 function: 01 read data, 03 read address, 04 write data, 09 read key version,
  15 write address, 16 write meter synchronisation (base reading) data.
- ``L``: byte count of DI0 DI1 SER DATA (clause 5.5).
- ``DI0 DI1`` (clause 5.6, Table 4): data identifier, standard order low byte first
  (901F sent as ``1F 90``).  Many meters send it high byte first (``90 1F``); the order is a
  per-model setting when encoding and is detected when decoding (see :func:`decode`).

Reply data for 901F (clause 6, Tables 6/7): water/gas: current cumulative flow (4-byte BCD,
2 decimals) + unit, settlement-day cumulative flow + unit, real time (7-byte BCD
``YYYYMMDDhhmmss`` sent seconds first), ST (2 bytes).  Heat meters add settlement/current
heat, heat power, flow, temperatures and working hours (Table 7).  Unit codes: Table 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from libs.protocols.errors import FrameError

PROTOCOL = "cjt188"
START, END, PREAMBLE = 0x68, 0x16, 0xFE
HEADER_LEN = 11  # 68 T A0..A6 C L
DiOrder = Literal["standard", "swapped"]

READ_DATA, READ_ADDRESS, WRITE_DATA, READ_KEY, WRITE_ADDRESS, WRITE_SYNC = 0x01, 0x03, 0x04, 0x09, 0x15, 0x16
REPLY, ABNORMAL = 0x80, 0x40
DI_METERING, DI_ADDRESS, DI_TIME, DI_VALVE = 0x901F, 0x810A, 0xA015, 0xA017
VALVE_OPEN, VALVE_CLOSE = 0x55, 0x99
BROADCAST = bytes([0xAA] * 7)

# Data identifiers of CJ/T 188-2004 Table 4, used to resolve the identifier byte order.
KNOWN_DI = frozenset(
    {
        DI_METERING,
        *range(0xD120, 0xD12C),
        0x8102,
        0x8103,
        0x8104,
        0x8105,
        0x8106,
        DI_ADDRESS,
        0xA010,
        0xA011,
        0xA012,
        0xA013,
        0xA014,
        0xA015,
        0xA016,
        DI_VALVE,
        0xA018,
        0xA019,
    }
)
# Table 8 unit codes (same code space as the EN 1434 / M-Bus fixed-structure units).
UNITS = {
    0x01: "J",
    0x02: "Wh",
    0x05: "kWh",
    0x08: "MWh",
    0x0A: "MWh*100",
    0x0B: "kJ",
    0x0E: "MJ",
    0x11: "GJ",
    0x13: "GJ*100",
    0x14: "W",
    0x17: "kW",
    0x1A: "MW",
    0x29: "L",
    0x2C: "m3",
    0x32: "L/h",
    0x35: "m3/h",
}
UNIT_CODES = {name: code for code, name in UNITS.items()}
VALVE_STATES = {0: "open", 1: "closed", 2: "reserved", 3: "abnormal"}


@dataclass(frozen=True)
class Cjt188Frame:
    """One CJ/T 188 frame; ``address`` in wire order (A0 first), ``data`` is what follows SER."""

    meter_type: int
    address: bytes
    control: int
    di: int | None
    ser: int
    data: bytes = b""
    di_order: DiOrder = "standard"
    status: bytes | None = None  # ST of abnormal replies without DI (L = 3)


def _fail(fault: str, detail: str) -> FrameError:
    return FrameError(PROTOCOL, fault, detail)


def _resolve_di(b0: int, b1: int, order: DiOrder | None) -> tuple[int, DiOrder]:
    """Pick the identifier byte order: forced, else the one naming a Table 4 identifier."""
    standard, swapped = b1 << 8 | b0, b0 << 8 | b1
    if order == "swapped" or (order is None and swapped in KNOWN_DI and standard not in KNOWN_DI):
        return swapped, "swapped"
    return standard, "standard"


def decode(buf: bytes, di_order: DiOrder | None = None) -> tuple[int, Cjt188Frame | None]:
    """Parse one frame from ``buf`` (clause 5); skip preambles/garbage, ``(n, None)`` = need more.

    ``di_order`` forces the identifier byte order; ``None`` accepts both and picks the order
    whose identifier is in Table 4 (standard order when both or neither are).
    """
    skip = buf.find(START)
    if skip < 0:
        return len(buf), None
    frame = buf[skip:]
    if len(frame) < HEADER_LEN:
        return skip, None
    length = frame[10]
    total = HEADER_LEN + length + 2
    if len(frame) < total:
        return skip, None
    if frame[total - 1] != END:
        raise _fail("terminator", f"expected 0x16 at offset {total - 1}, got 0x{frame[total - 1]:02X}")
    checksum = sum(frame[: total - 2]) & 0xFF
    if frame[total - 2] != checksum:
        raise _fail("checksum", f"expected 0x{checksum:02X}, got 0x{frame[total - 2]:02X}")
    control, body = frame[9], frame[HEADER_LEN : HEADER_LEN + length]
    common: dict[str, Any] = {"meter_type": frame[1], "address": bytes(frame[2:9]), "control": control}
    if control & ABNORMAL and length == 3:  # abnormal reply: SER ST (clause 5.4)
        parsed = Cjt188Frame(**common, di=None, ser=body[0], status=bytes(body[1:3]))
    elif length < 3:
        raise _fail("length", f"expected L >= 3 (DI0 DI1 SER), got {length}")
    else:
        di, order = _resolve_di(body[0], body[1], di_order)
        parsed = Cjt188Frame(**common, di=di, ser=body[2], data=bytes(body[3:]), di_order=order)
    return skip + total, parsed


def encode(frame: Cjt188Frame, preamble: int = 0) -> bytes:
    """Serialise ``frame`` (clause 5) with ``preamble`` leading FE bytes."""
    if len(frame.address) != 7:
        raise _fail("address", f"expected 7 address bytes, got {len(frame.address)}")
    if frame.di is None:
        body = bytes([frame.ser]) + (frame.status or b"\x00\x00")
    else:
        hi, lo = frame.di >> 8, frame.di & 0xFF
        di = bytes([hi, lo]) if frame.di_order == "swapped" else bytes([lo, hi])
        body = di + bytes([frame.ser]) + frame.data
    if len(body) > 0xFF:
        raise _fail("length", f"expected at most 255 data bytes, got {len(body)}")
    head = bytes([START, frame.meter_type]) + frame.address + bytes([frame.control, len(body)]) + body
    return bytes([PREAMBLE]) * preamble + head + bytes([sum(head) & 0xFF, END])


def address_from_display(text: str) -> bytes:
    """Wire-order address from its display form, e.g. ``"78330011223344"`` (14 hex digits)."""
    return bytes.fromhex(text.zfill(14))[::-1]


def address_display(address: bytes) -> str:
    """Display form of a wire-order address (A6 first)."""
    return address[::-1].hex().upper()


def _bcd(raw: bytes, decimals: int) -> Decimal | None:
    """Little-endian BCD to Decimal; all-FF (not available) gives None."""
    if raw and all(b == 0xFF for b in raw):
        return None
    digits = raw[::-1].hex()
    if not digits.isdigit():
        raise _fail("data", f"expected BCD digits, got {raw.hex(' ').upper()}")
    return Decimal(int(digits)).scaleb(-decimals)


def _to_bcd(value: Decimal | None, size: int, decimals: int) -> bytes:
    if value is None:
        return b"\xff" * size
    scaled = int(value.scaleb(decimals))
    if not 0 <= scaled < 10 ** (2 * size):
        raise _fail("data", f"expected 0 <= value < {10 ** (2 * size - decimals)}, got {value}")
    return bytes.fromhex(f"{scaled:0{2 * size}d}")[::-1]


def _time(raw: bytes) -> str | None:
    if all(b == 0xFF for b in raw):
        return None
    d = raw[::-1].hex()
    if not d.isdigit():
        raise _fail("data", f"expected BCD time, got {raw.hex(' ').upper()}")
    return f"{d[0:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}"


def _heat_meter(meter_type: int) -> bool:
    return 0x20 <= meter_type <= 0x29


# (name, BCD size, decimals, unit: encoded unit byte default, or fixed unit when None is sent)
# per Table 6 (water/gas) and Table 7 (heat); "*" = the meter's volume unit.
_WATER_FIELDS = (("cumulative_flow", 4, 2, "*"), ("settlement_flow", 4, 2, "*"))
_HEAT_FIELDS = (
    ("settlement_heat", 4, 2, "kWh"),
    ("current_heat", 4, 2, "kWh"),
    ("heat_power", 4, 2, "kW"),
    ("flow_rate", 4, 4, "m3/h"),
    ("cumulative_flow", 4, 2, "*"),
    ("supply_temperature", 3, 2, None),
    ("return_temperature", 3, 2, None),
    ("working_hours", 3, 0, None),
)
_FIXED_UNITS = {"supply_temperature": "°C", "return_temperature": "°C", "working_hours": "h"}


def metering_values(frame: Cjt188Frame) -> dict[str, dict[str, Any]]:
    """Decode a 901F reply's data (clause 6, Tables 6–8) into ``{name: {value, unit}}``."""
    fields = _HEAT_FIELDS if _heat_meter(frame.meter_type) else _WATER_FIELDS
    need = sum(size + (unit is not None) for _, size, _, unit in fields) + 9
    if len(frame.data) < need:
        raise _fail("length", f"expected >= {need} bytes of 901F data, got {len(frame.data)}")
    out: dict[str, dict[str, Any]] = {}
    pos, data = 0, frame.data
    for name, size, decimals, wire_unit in fields:
        value = _bcd(data[pos : pos + size], decimals)
        pos += size
        unit = _FIXED_UNITS.get(name)
        if wire_unit is not None:
            unit = UNITS.get(data[pos], f"0x{data[pos]:02X}")
            pos += 1
        if value is not None:
            out[name] = {"value": str(value), "unit": unit}
    if (when := _time(data[pos : pos + 7])) is not None:
        out["meter_time"] = {"value": when, "unit": None}
    st0 = data[pos + 7]
    out["valve"] = {"value": VALVE_STATES[st0 & 0x03], "unit": None}
    out["battery_low"] = {"value": str(bool(st0 & 0x04)).lower(), "unit": None}
    out["status"] = {"value": data[pos + 7 : pos + 9].hex().upper(), "unit": None}
    return out


def build_read(
    address: bytes,
    meter_type: int = 0x10,
    *,
    ser: int = 0,
    di: int = DI_METERING,
    di_order: DiOrder = "standard",
) -> Cjt188Frame:
    """Read-data request (C = 01, clause 7.1); ``di_order`` is the meter model's setting."""
    control = READ_ADDRESS if di == DI_ADDRESS else READ_DATA
    return Cjt188Frame(meter_type, address, control, di, ser, b"", di_order)


def build_metering_reply(
    address: bytes,
    meter_type: int,
    values: dict[str, Decimal | None],
    *,
    meter_time: str | None = None,
    valve: str = "open",
    battery_low: bool = False,
    ser: int = 0,
    unit: str = "m3",
    di_order: DiOrder = "standard",
) -> Cjt188Frame:
    """901F reply (C = 81) for a simulated meter; ``values`` uses :func:`metering_values` names.

    Missing values and a missing ``meter_time`` (``YYYY-MM-DDThh:mm:ss``) are sent as FF.
    """
    fields = _HEAT_FIELDS if _heat_meter(meter_type) else _WATER_FIELDS
    data = b""
    for name, size, decimals, wire_unit in fields:
        data += _to_bcd(values.get(name), size, decimals)
        if wire_unit is not None:
            data += bytes([UNIT_CODES[unit if wire_unit == "*" else wire_unit]])
    stamp = "".join(c for c in meter_time or "" if c.isdigit())
    if meter_time is not None and len(stamp) != 14:
        raise _fail("data", f"expected meter time YYYY-MM-DDThh:mm:ss, got {meter_time!r}")
    data += bytes.fromhex(stamp)[::-1] if meter_time else b"\xff" * 7
    st0 = {v: k for k, v in VALVE_STATES.items()}[valve] | (0x04 if battery_low else 0)
    return Cjt188Frame(
        meter_type, address, REPLY | READ_DATA, DI_METERING, ser, data + bytes([st0, 0]), di_order
    )


def build_valve(
    address: bytes, meter_type: int, open_valve: bool, *, ser: int = 0, di_order: DiOrder = "standard"
) -> Cjt188Frame:
    """Valve control write (C = 04, DI A017, 55 = open, 99 = close; clause 7.3)."""
    data = bytes([VALVE_OPEN if open_valve else VALVE_CLOSE])
    return Cjt188Frame(meter_type, address, WRITE_DATA, DI_VALVE, ser, data, di_order)


def build_time_write(
    address: bytes, meter_type: int, when: datetime, *, ser: int = 0, di_order: DiOrder = "standard"
) -> Cjt188Frame:
    """Write standard time (C = 04, DI A015, clause 7.3): 7-byte BCD ``YYYYMMDDhhmmss``, low
    byte (seconds) first like the real-time field of a 901F reply."""
    if not 1000 <= when.year <= 9999:
        raise _fail("data", f"expected a four-digit year, got {when.year}")
    data = bytes.fromhex(when.strftime("%Y%m%d%H%M%S"))[::-1]
    return Cjt188Frame(meter_type, address, WRITE_DATA, DI_TIME, ser, data, di_order)


def time_written(frame: Cjt188Frame) -> datetime:
    """The time an A015 write request carries; FrameError if it is not one or not a valid time."""
    if frame.control & REPLY or frame.di != DI_TIME or len(frame.data) != 7:
        raise _fail("data", "expected an A015 write-time request with 7 data bytes")
    digits = frame.data[::-1].hex()
    try:
        if not digits.isdigit():
            raise ValueError("not BCD")
        return datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise _fail("data", f"expected BCD YYYYMMDDhhmmss, got {digits.upper()}: {exc}") from None


def build_read_address(
    meter_type: int = 0xAA, *, ser: int = 0, di_order: DiOrder = "standard"
) -> Cjt188Frame:
    """Read address (C = 03, DI 810A, clause 7.2) to the wildcard address AA..AA: only for a
    point-to-point line, since every meter that hears it answers."""
    return build_read(BROADCAST, meter_type, ser=ser, di=DI_ADDRESS, di_order=di_order)


def build_address_reply(
    address: bytes, meter_type: int, *, ser: int = 0, di_order: DiOrder = "standard"
) -> Cjt188Frame:
    """Reply to read address (C = 83, L = 3: DI 810A + SER); the address is the frame's own."""
    return Cjt188Frame(meter_type, address, REPLY | READ_ADDRESS, DI_ADDRESS, ser, b"", di_order)


def build_write_reply(request: Cjt188Frame, status: bytes = b"\x00\x00", ok: bool = True) -> Cjt188Frame:
    """Reply to a write (C = 84 with DI SER ST, or abnormal C4 with SER ST)."""
    if ok:
        return Cjt188Frame(
            request.meter_type,
            request.address,
            request.control | REPLY,
            request.di,
            request.ser,
            status,
            request.di_order,
        )
    return Cjt188Frame(
        request.meter_type,
        request.address,
        request.control | REPLY | ABNORMAL,
        None,
        request.ser,
        status=status,
    )


def describe(frame: Cjt188Frame) -> dict[str, Any]:
    """JSON view of a frame per :mod:`libs.protocols.registry`."""
    reply, error = bool(frame.control & REPLY), bool(frame.control & ABNORMAL)
    values: dict[str, dict[str, Any]] = {}
    if reply and not error and frame.di in (DI_METERING, *range(0xD120, 0xD12C)):
        values = metering_values(frame)
    elif frame.di == DI_VALVE and not reply and frame.data:
        values = {
            "valve_command": {
                "value": {VALVE_OPEN: "open", VALVE_CLOSE: "close"}.get(
                    frame.data[0], f"0x{frame.data[0]:02X}"
                ),
                "unit": None,
            }
        }
    status = frame.status if frame.status is not None else (frame.data[:2] if error else None)
    return {
        "protocol": PROTOCOL,
        "address": address_display(frame.address),
        "meter_type": f"{frame.meter_type:02X}",
        "control": f"{frame.control:02X}",
        "reply": reply,
        "error": error,
        "error_code": status.hex().upper() if error and status else None,
        "di": f"{frame.di:04X}" if frame.di is not None else None,
        "di_order": frame.di_order,
        "ser": frame.ser,
        "values": values,
    }
