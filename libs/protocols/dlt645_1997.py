"""DL/T 645-1997 codec (sans-IO): same frame as 2007, 2-byte data identifiers, older codes.

Link layer (clause 4.2 ``68 A0..A5 68 C L DATA CS 16``, +33H, checksum): see
:mod:`libs.protocols.dlt645_frame`. Control code (clause 4.2.3): D7 direction, D6 abnormal
reply, D5 follow-up frame, D4..D0 function:

====  =============================  =====================================
code  request data                   normal reply (D7=1)
====  =============================  =====================================
01    DI0 DI1 (read data)            DI0 DI1 + values (81H, A1H with more)
02    DI0 DI1 (read follow-up)       DI0 DI1 + values (82H/A2H)
03    DI0 DI1 (read again)           as 01
04    DI0 DI1 + PA P0 P1 P2 + data   — (84H)
08    ss mm hh DD MM YY broadcast    — (no reply)
0A    new address (write address)    — (8AH)
0C    Z baud-rate word               Z (8CH)
====  =============================  =====================================

An abnormal reply (C1H, C4H …) carries the error-status byte ERR: bit 0 illegal data, 1 data
identifier wrong, 2 password wrong, 4 too many year zones, 5 too many day periods, 6 too many
tariffs.
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

PROTOCOL = "dlt645-1997"
BROADCAST = link.BROADCAST


class Function(IntEnum):
    """Function codes of DL/T 645-1997 (control code bits D4..D0)."""

    READ = 0x01
    READ_FOLLOW = 0x02
    READ_AGAIN = 0x03
    WRITE = 0x04
    BROADCAST_TIME = 0x08
    WRITE_ADDRESS = 0x0A
    CHANGE_BAUD = 0x0C


ERRORS = {
    0: "illegal_data",
    1: "di_wrong",
    2: "password_wrong",
    4: "year_zones_exceeded",
    5: "day_periods_exceeded",
    6: "tariffs_exceeded",
}
BAUD_BITS = {600: 1, 1200: 2, 2400: 3, 4800: 4, 9600: 5}

_LENGTHS: dict[int, tuple[tuple[int, int], tuple[int, int] | None]] = {
    Function.READ: ((2, 2), (2, link.MAX_DATA)),
    Function.READ_FOLLOW: ((2, 2), (2, link.MAX_DATA)),
    Function.READ_AGAIN: ((2, 2), (2, link.MAX_DATA)),
    Function.WRITE: ((6, link.MAX_DATA), (0, 0)),
    Function.BROADCAST_TIME: ((6, 6), None),
    Function.WRITE_ADDRESS: ((6, 6), (0, 0)),
    Function.CHANGE_BAUD: ((1, 1), (1, 1)),
}
_READS = (Function.READ, Function.READ_FOLLOW, Function.READ_AGAIN)


@dataclass(frozen=True)
class Frame(link.FrameBase):
    """A DL/T 645-1997 frame: display-order address, control code, data with 33H removed."""

    @property
    def di(self) -> str | None:
        """Display-order 2-byte identifier (e.g. ``"9010"``) of read and write frames."""
        if self.error or (self.function not in _READS and (self.reply or self.function != Function.WRITE)):
            return None
        return self.data[1::-1].hex().upper()


def _check(frame: Frame) -> None:
    """Refuse control codes and lengths DL/T 645-1997 does not allow."""
    link.check(frame, _LENGTHS, _READS, PROTOCOL)


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
    if len(raw) != 2:
        raise FrameError(PROTOCOL, "data", f"data identifier must be 4 hex digits, got {di!r}")
    return raw[::-1]


def read(address: str, di: str) -> Frame:
    """Read-data request 01H."""
    return Frame(address, Function.READ, _di(di))


def write(address: str, di: str, data: bytes, password: str = "00000000") -> Frame:
    """Write-data request 04H: DI, password PA P0 P1 P2 (wire order, 8 hex digits), data."""
    try:
        code = bytes.fromhex(password)
    except ValueError:
        code = b""
    if len(code) != 4:
        raise FrameError(PROTOCOL, "data", f"password must be 8 hex digits, got {password!r}")
    return Frame(address, Function.WRITE, _di(di) + code + data)


def broadcast_time(when: datetime, address: str = BROADCAST) -> Frame:
    """Broadcast time synchronisation 08H; data ss mm hh DD MM YY, seconds first."""
    return Frame(address, Function.BROADCAST_TIME, link.datetime_to_wire(when, PROTOCOL))


def write_address(address: str, new_address: str) -> Frame:
    """Write-address request 0AH."""
    return Frame(address, Function.WRITE_ADDRESS, link.address_to_wire(new_address, PROTOCOL))


def change_baud(address: str, baud: int) -> Frame:
    """Baud-rate change request 0CH."""
    if baud not in BAUD_BITS:
        raise FrameError(PROTOCOL, "data", f"baud must be one of {sorted(BAUD_BITS)}, got {baud}")
    return Frame(address, Function.CHANGE_BAUD, bytes([1 << BAUD_BITS[baud]]))


def read_reply(address: str, di: str, values: Any, more: bool = False) -> Frame:
    """Normal read reply 81H (A1H with ``more``) with ``values`` encoded by the catalogue."""
    control = 0x80 | Function.READ | (link.FOLLOW_BIT if more else 0)
    return Frame(address, control, _di(di) + catalogue.encode_data(di, values))


def error_reply(address: str, function: int, code: int) -> Frame:
    """Abnormal reply (D7=1, D6=1, e.g. C1H) with error-status byte ``code``."""
    return Frame(address, 0xC0 | function, bytes([code & 0xFF]))


def values(frame: Frame) -> dict[str, catalogue.Reading]:
    """The meaning of the data field as ``{name: (value, unit)}``; FrameError if malformed."""
    if frame.error:
        return {}
    if frame.function == Function.BROADCAST_TIME:
        return {"time": (link.datetime_from_wire(frame.data, PROTOCOL).isoformat(), "")}
    if frame.function in _READS and frame.reply and frame.di:
        return catalogue.decode_data(frame.di, frame.data[2:])
    if frame.function == Function.WRITE_ADDRESS:
        return {"new_address": (link.address_from_wire(frame.data, PROTOCOL), "")}
    if frame.function == Function.CHANGE_BAUD:
        bauds = [b for b, bit in BAUD_BITS.items() if frame.data[0] == 1 << bit]
        return {"baud": (Decimal(bauds[0]) if bauds else None, "bd")}
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
        function=Function(frame.function).name.lower(),
        more=frame.more,
    )
