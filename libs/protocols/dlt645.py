"""DL/T 645-2007 codec (sans-IO): ``decode(buf) -> (consumed, Frame | None)``, ``encode(frame)``.

The link layer (clause 4.2: ``68 A0..A5 68 C L DATA CS 16``, FE preambles, +33H, checksum) is
in :mod:`libs.protocols.dlt645_frame`. This module checks the application layer of clause 7:
the function code D4..D0 of the control code (clause 4.2.3) and the data length each function
allows, and gives the data field its meaning:

====  ===================================  ===============================================
code  request data (clause)                normal reply data (D7=1, D6=0)
====  ===================================  ===============================================
08    ss mm hh DD MM YY (7.6 broadcast)    — (no reply)
11    DI0..DI3 [N [mmhhDDMMYY]] (7.1)      DI + values; D5=1 when follow-up frames exist
12    DI + SEQ (7.2 read follow-up)        DI + values + SEQ
13    — (7.4 read address, to AA..AA)      address A0..A5
14    DI + PA P0P1P2 + C0..C3 + data (7.3) —
15    new address (7.5)                    —
16    mm hh DD MM freeze time, 99 = any    —
17    Z baud-rate word (7.8)               Z
1A    PA P0P1P2, C0..C3 (7.11 电表清零)     —
1C    PA P0P1P2, C0..C3, N1, N2,           —
      valid-until ss mm hh DD MM YY (跳合闸、报警、保电)
====  ===================================  ===============================================

Meter clear 1AH empties the meter's energy registers, maximum demand and its times, frozen
data, event records and load records (the meter keeps a record of the clear itself and its
parameters); a wrong password is refused with DAH, ERR bit 2. Prepaid wallet values (remaining
amount, purchase count) are not named by 1AH: State Grid prepaid meters change them only through
the ESAM-secured wallet commands, which this codec does not carry.

An abnormal reply (D6=1) carries one error-status byte ERR (bit 0 other error, 1 no data
requested, 2 password wrong / unauthorised, 3 baud rate cannot change, 4 too many year zones,
5 too many day periods, 6 too many tariffs). DI and multi-byte values are sent low byte first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import IntEnum
from typing import Any

from libs.protocols import catalogue
from libs.protocols import dlt645_frame as link
from libs.protocols.errors import FrameError

PROTOCOL = "dlt645-2007"
BROADCAST = link.BROADCAST
WILDCARD = link.WILDCARD


class Function(IntEnum):
    """Function codes (control code bits D4..D0), DL/T 645-2007 clause 4.2.3."""

    BROADCAST_TIME = 0x08
    READ = 0x11
    READ_FOLLOW = 0x12
    READ_ADDRESS = 0x13
    WRITE = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    DEMAND_RESET = 0x19
    METER_CLEAR = 0x1A
    EVENT_CLEAR = 0x1B
    RELAY = 0x1C


class RelayAction(IntEnum):
    """N1 of the relay-control command 1CH."""

    TRIP = 0x1A
    CLOSE_ALLOWED = 0x1B
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    KEEP_POWER = 0x3A
    KEEP_POWER_RELEASE = 0x3B


ERRORS = {
    0: "other",
    1: "no_data",
    2: "unauthorised",
    3: "baud_unchangeable",
    4: "year_zones_exceeded",
    5: "day_periods_exceeded",
    6: "tariffs_exceeded",
}
BAUD_BITS = {600: 1, 1200: 2, 2400: 3, 4800: 4, 9600: 5, 19200: 6}

# function -> ((request min, max), (normal reply min, max) or None when no reply exists)
_LENGTHS: dict[int, tuple[tuple[int, int], tuple[int, int] | None]] = {
    Function.BROADCAST_TIME: ((6, 6), None),
    Function.READ: ((4, 10), (4, link.MAX_DATA)),
    Function.READ_FOLLOW: ((5, 5), (5, link.MAX_DATA)),
    Function.READ_ADDRESS: ((0, 0), (6, 6)),
    Function.WRITE: ((12, link.MAX_DATA), (0, 0)),
    Function.WRITE_ADDRESS: ((6, 6), (0, 0)),
    Function.FREEZE: ((4, 4), (0, 0)),
    Function.CHANGE_BAUD: ((1, 1), (1, 1)),
    Function.CHANGE_PASSWORD: ((12, 12), (4, 4)),
    Function.DEMAND_RESET: ((8, 8), (0, 0)),
    Function.METER_CLEAR: ((8, 8), (0, 0)),
    Function.EVENT_CLEAR: ((12, 12), (0, 0)),
    Function.RELAY: ((8, link.MAX_DATA), (0, 0)),
}
_WITH_DI = (Function.READ, Function.READ_FOLLOW, Function.WRITE)


@dataclass(frozen=True)
class Frame(link.FrameBase):
    """A DL/T 645-2007 frame: display-order address, control code, data with 33H removed."""

    @property
    def di(self) -> str | None:
        """Display-order data identifier of read/follow-up/write frames, else None."""
        if self.error or self.function not in _WITH_DI or (self.reply and self.function == Function.WRITE):
            return None
        return self.data[3::-1].hex().upper()

    @property
    def payload(self) -> bytes:
        """Values of a read reply: data without DI (and without the SEQ of follow-up replies)."""
        end = len(self.data) - 1 if self.function == Function.READ_FOLLOW else len(self.data)
        return self.data[4:end]


def _check(frame: Frame) -> None:
    """Refuse control codes and lengths DL/T 645-2007 clause 7 does not allow."""
    link.check(frame, _LENGTHS, (Function.READ, Function.READ_FOLLOW), PROTOCOL)


def decode(buf: bytes) -> tuple[int, Frame | None]:
    """Parse the next frame of ``buf``; ``(consumed, frame)``, or ``(skipped, None)`` if incomplete."""
    consumed, raw = link.scan(buf, PROTOCOL)
    if raw is None:
        return consumed, None
    frame = Frame(raw.address, raw.control, raw.data)
    _check(frame)
    return consumed, frame


def encode(frame: Frame, preamble: int = 0) -> bytes:
    """Wire bytes of ``frame``, optionally after ``preamble`` (0..4) FE wake-up bytes."""
    _check(frame)
    return link.build(frame.address, frame.control, frame.data, PROTOCOL, preamble)


def _di(di: str) -> bytes:
    try:
        raw = bytes.fromhex(di)
    except ValueError:
        raw = b""
    if len(raw) != 4:
        raise FrameError(PROTOCOL, "data", f"data identifier must be 8 hex digits, got {di!r}")
    return raw[::-1]


def _code(text: str, what: str) -> bytes:
    """A 4-byte password or operator code given as 8 hex digits, kept in the given order."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 4:
        raise FrameError(PROTOCOL, "data", f"{what} must be 8 hex digits, got {text!r}")
    return raw


def read(address: str, di: str, extra: bytes = b"") -> Frame:
    """Read-data request 11H (``extra``: block count N and load-curve time, if any)."""
    return Frame(address, Function.READ, _di(di) + extra)


def read_follow(address: str, di: str, seq: int) -> Frame:
    """Read follow-up request 12H for frame number ``seq``."""
    return Frame(address, Function.READ_FOLLOW, _di(di) + bytes([seq & 0xFF]))


def read_address() -> Frame:
    """Read-address request 13H to the wildcard address (point-to-point buses only)."""
    return Frame(WILDCARD, Function.READ_ADDRESS)


def write(
    address: str, di: str, data: bytes, password: str = "02000000", operator: str = "00000000"
) -> Frame:
    """Write-data request 14H: DI, password PA P0 P1 P2, operator code C0..C3, data."""
    head = _di(di) + _code(password, "password") + _code(operator, "operator")[::-1]
    return Frame(address, Function.WRITE, head + data)


def broadcast_time(when: datetime, address: str = BROADCAST) -> Frame:
    """Broadcast time synchronisation 08H; data ss mm hh DD MM YY, seconds first."""
    return Frame(address, Function.BROADCAST_TIME, link.datetime_to_wire(when, PROTOCOL))


def freeze(address: str, pattern: str = "99999999") -> Frame:
    """Freeze command 16H; ``pattern`` is MMDDhhmm in display order, 99 = every."""
    return Frame(address, Function.FREEZE, link.bcd_from_digits(pattern, PROTOCOL))


def change_baud(address: str, baud: int) -> Frame:
    """Baud-rate change request 17H."""
    if baud not in BAUD_BITS:
        raise FrameError(PROTOCOL, "data", f"baud must be one of {sorted(BAUD_BITS)}, got {baud}")
    return Frame(address, Function.CHANGE_BAUD, bytes([1 << BAUD_BITS[baud]]))


def relay_control(
    address: str,
    action: RelayAction,
    valid_until: datetime,
    password: str = "02000000",
    operator: str = "00000000",
) -> Frame:
    """Relay control 1CH (trip, close allowed, alarm, keep power …) valid until a time.

    ``password`` is PA P0 P1 P2 in wire order; ``operator`` is C3..C0 in display order.
    """
    data = (
        _code(password, "password")
        + _code(operator, "operator")[::-1]
        + bytes([RelayAction(action), 0])
        + link.datetime_to_wire(valid_until, PROTOCOL)
    )
    return Frame(address, Function.RELAY, data)


def meter_clear(address: str, password: str = "02000000", operator: str = "00000000") -> Frame:
    """Meter clear 1AH (电表清零, clause 7.11): password PA P0 P1 P2, operator code C0..C3.

    ``password`` is in wire order; ``operator`` is C3..C0 in display order (as for 14H and 1CH).
    The normal reply is 9AH without data; DAH carries the error byte (bit 2: password wrong).
    """
    data = _code(password, "password") + _code(operator, "operator")[::-1]
    return Frame(address, Function.METER_CLEAR, data)


def read_reply(address: str, di: str, values: Any, more: bool = False) -> Frame:
    """Normal read reply 91H (B1H with ``more``) carrying ``values`` encoded by the catalogue."""
    control = 0x80 | Function.READ | (link.FOLLOW_BIT if more else 0)
    return Frame(address, control, _di(di) + catalogue.encode_data(di, values))


def read_parts(address: str, di: str, values: Any, max_data: int = link.MAX_DATA) -> list[Frame]:
    """A read reply split to fit ``max_data`` data bytes per frame (clause 7.2, 后续帧).

    The first frame is 91H (B1H when more follow) with DI + the first values; follow-up frame
    *n* (the reply to read-follow-up 12H with SEQ = *n*) is 92H (B2H when more follow) with
    DI + values + SEQ. Cuts fall between whole values where one fits, as meters send records.
    """
    data = catalogue.encode_data(di, values)
    item = catalogue.lookup(di)
    step = (item.members[0] if item and item.members else item or catalogue.DataItem(di, "")).size or 1
    if max_data < 5 + step:
        raise FrameError(PROTOCOL, "length", f"max_data {max_data} cannot carry a {step}-byte value")
    parts: list[bytes] = []
    room = max_data - 4  # the first frame has no SEQ
    while data or not parts:
        take = len(data) if len(data) <= room else room - room % step
        parts.append(data[:take])
        data = data[take:]
        room = max_data - 5
    frames = []
    for seq, part in enumerate(parts):
        more = link.FOLLOW_BIT if seq < len(parts) - 1 else 0
        if seq == 0:
            frames.append(Frame(address, 0x80 | Function.READ | more, _di(di) + part))
        else:
            control = 0x80 | Function.READ_FOLLOW | more
            frames.append(Frame(address, control, _di(di) + part + bytes([seq & 0xFF])))
    return frames


def join_parts(frames: list[Frame]) -> dict[str, catalogue.Reading]:
    """Decode a reply sent in parts (first 91H/B1H frame, then the 92H/B2H follow-ups in order)."""
    if not frames or frames[0].di is None or any(f.error or not f.reply for f in frames):
        raise FrameError(PROTOCOL, "data", "expected normal read replies, the first one with a DI")
    di = frames[0].di
    if any(f.di != di for f in frames) or frames[-1].more:
        raise FrameError(PROTOCOL, "data", f"expected every part of {di}, the last without D5")
    return catalogue.decode_data(di, b"".join(f.payload for f in frames))


def ack(request: Frame, data: bytes = b"") -> Frame:
    """Normal reply to ``request`` (e.g. 9CH for a relay command, 93H with the address)."""
    return Frame(request.address, 0x80 | request.function, data)


def error_reply(address: str, function: int, code: int) -> Frame:
    """Abnormal reply (D7=1, D6=1) with error-status byte ``code``."""
    return Frame(address, 0xC0 | function, bytes([code & 0xFF]))


@dataclass(frozen=True)
class RelayCommand:
    """The fields of a plain (unencrypted) relay-control frame."""

    password: str
    operator: str
    action: RelayAction
    valid_until: datetime


def relay_command(frame: Frame) -> RelayCommand:
    """Parse the data of a 1CH request; FrameError if it is not a plain relay command."""
    data = frame.data
    if frame.reply or frame.function != Function.RELAY or len(data) != 16:
        raise FrameError(PROTOCOL, "data", "not a plain 16-byte relay-control request")
    try:
        action = RelayAction(data[8])
    except ValueError:
        raise FrameError(PROTOCOL, "data", f"unknown relay action N1=0x{data[8]:02X}") from None
    return RelayCommand(
        data[0:4].hex().upper(),
        data[4:8][::-1].hex().upper(),
        action,
        link.datetime_from_wire(data[10:16], PROTOCOL),
    )


@dataclass(frozen=True)
class WriteCommand:
    """The fields of a plain write-data 14H request (clause 7.3)."""

    di: str
    password: str
    operator: str
    data: bytes


def write_command(frame: Frame) -> WriteCommand:
    """Parse the data of a 14H request: DI, password PA P0P1P2, operator C0..C3, value bytes."""
    data = frame.data
    if frame.reply or frame.function != Function.WRITE or len(data) < 12:
        raise FrameError(PROTOCOL, "data", "not a write-data request")
    return WriteCommand(
        data[3::-1].hex().upper(), data[4:8].hex().upper(), data[8:12][::-1].hex().upper(), data[12:]
    )


@dataclass(frozen=True)
class ClearCommand:
    """The fields of a plain meter-clear 1AH request (clause 7.11)."""

    password: str
    operator: str


def clear_command(frame: Frame) -> ClearCommand:
    """Parse the data of a 1AH request: password PA P0P1P2, operator C0..C3."""
    data = frame.data
    if frame.reply or frame.function != Function.METER_CLEAR or len(data) != 8:
        raise FrameError(PROTOCOL, "data", "not a plain 8-byte meter-clear request")
    return ClearCommand(data[0:4].hex().upper(), data[4:8][::-1].hex().upper())


def requested_baud(frame: Frame) -> int | None:
    """The speed a 17H request (or its reply) names in Z, or None if Z is not a single known bit."""
    if frame.function != Function.CHANGE_BAUD or len(frame.data) != 1:
        return None
    return next((b for b, bit in BAUD_BITS.items() if frame.data[0] == 1 << bit), None)


def values(frame: Frame) -> dict[str, catalogue.Reading]:
    """The meaning of the data field as ``{name: (value, unit)}``; FrameError if malformed."""
    fn, data = frame.function, frame.data
    if frame.error:
        return {}
    if fn == Function.BROADCAST_TIME:
        return {"time": (link.datetime_from_wire(data, PROTOCOL).isoformat(), "")}
    if fn == Function.READ_ADDRESS and frame.reply:
        return {"address": (link.address_from_wire(data, PROTOCOL), "")}
    if fn in (Function.READ, Function.READ_FOLLOW) and frame.reply and frame.di:
        item = catalogue.lookup(frame.di)
        if (frame.more or fn == Function.READ_FOLLOW) and item is not None and item.members:
            # One part of a block: its values only mean something joined (join_parts).
            out: dict[str, catalogue.Reading] = {"part": (frame.payload.hex().upper(), "")}
        else:
            out = catalogue.decode_data(frame.di, frame.payload)
        if fn == Function.READ_FOLLOW:
            out["seq"] = (Decimal(data[-1]), "")
        return out
    if fn == Function.WRITE and not frame.reply and len(data) >= 12:
        command = write_command(frame)
        return {"operator": (command.operator, ""), "value": (command.data.hex().upper(), "")}
    if fn == Function.RELAY and not frame.reply and len(data) == 16:
        cmd = relay_command(frame)
        return {
            "action": (cmd.action.name.lower(), ""),
            "operator": (cmd.operator, ""),
            "valid_until": (cmd.valid_until.isoformat(), ""),
        }
    if fn == Function.METER_CLEAR and not frame.reply and len(data) == 8:
        return {"operator": (clear_command(frame).operator, "")}
    if fn == Function.CHANGE_BAUD:
        baud = requested_baud(frame)
        return {"baud": (Decimal(baud) if baud else None, "bd")}
    return {}


def describe(frame: Frame) -> dict[str, Any]:
    """The JSON view of ``frame`` printed by ``meterflow frame decode``."""
    return link.describe(
        PROTOCOL,
        frame.address,
        frame.control,
        frame.di,
        frame.error_code,
        values(frame),
        ERRORS,
        function=_name(frame.function),
        more=frame.more,
    )


def _name(function: int) -> str:
    try:
        return Function(function).name.lower()
    except ValueError:
        return f"0x{function:02X}"
