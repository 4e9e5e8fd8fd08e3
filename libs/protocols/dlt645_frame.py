"""DL/T 645 link layer shared by the 2007 and 1997 editions (sans-IO).

Both editions use the same frame (DL/T 645-2007 clause 4.2 "帧格式"; DL/T 645-1997 clause 4.2)::

    [FE ...] 68 A0 A1 A2 A3 A4 A5 68 C L DATA(L bytes) CS 16

- 4.3 (2007): up to four ``FE`` wake-up bytes may precede a frame; they are skipped here like any
  other bytes before the start byte ``68`` and counted in ``consumed``.
- 4.2.2: the address is six bytes of two BCD digits each, sent low byte first; ``AA`` is the
  wildcard (缩位寻址) and ``999999999999`` the broadcast address. Frames hold it in display order.
- 4.2.3: control code C — D7 direction (1 = reply from the meter), D6 abnormal reply, D5
  follow-up frame, D4..D0 function.
- 4.2.4: L is the data length; reads allow L <= 200, so a larger L is refused.
- 4.2.5: every data byte is sent plus 33H; frames hold the data with 33H removed.
- 4.2.6: CS is the modulo-256 sum of every byte from the first 68 up to the last data byte.
- 4.2.7: the frame ends with 16H.

Parsing is driven by the length field only (silence never ends a frame), so a reader can feed
bytes as they arrive and call :func:`scan` again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from libs.protocols.errors import FrameError

START = 0x68
END = 0x16
PREAMBLE = 0xFE
OFFSET = 0x33
MAX_DATA = 200
HEADER = 10  # 68 A0..A5 68 C L

DIRECTION_BIT = 0x80
ABNORMAL_BIT = 0x40
FOLLOW_BIT = 0x20
FUNCTION_MASK = 0x1F

BROADCAST = "999999999999"
WILDCARD = "AAAAAAAAAAAA"


@dataclass(frozen=True)
class RawFrame:
    """One checked link frame: display-order address, control code, data with 33H removed."""

    address: str
    control: int
    data: bytes


def scan(buf: bytes, protocol: str) -> tuple[int, RawFrame | None]:
    """Find the next frame in ``buf``; ``(consumed, frame)`` or ``(skipped, None)`` if incomplete.

    Raises :class:`FrameError` (faults ``start``, ``length``, ``checksum``, ``terminator``,
    ``address``) as soon as enough bytes have arrived to prove the frame bad.
    """
    start = buf.find(START)
    if start < 0:
        return len(buf), None
    view = buf[start:]
    if len(view) > 7 and view[7] != START:
        raise FrameError(protocol, "start", f"second start byte expected 0x68, got 0x{view[7]:02X}")
    if len(view) < HEADER:
        return start, None
    length = view[9]
    if length > MAX_DATA:
        raise FrameError(protocol, "length", f"data length at most {MAX_DATA}, got {length}")
    total = HEADER + length + 2
    if len(view) < total:
        return start, None
    expected = sum(view[: HEADER + length]) & 0xFF
    got = view[HEADER + length]
    if got != expected:
        raise FrameError(protocol, "checksum", f"expected 0x{expected:02X}, got 0x{got:02X}")
    if view[total - 1] != END:
        raise FrameError(protocol, "terminator", f"expected 0x16, got 0x{view[total - 1]:02X}")
    address = address_from_wire(view[1:7], protocol)
    data = bytes((b - OFFSET) & 0xFF for b in view[HEADER : HEADER + length])
    return start + total, RawFrame(address, view[8], data)


def build(address: str, control: int, data: bytes, protocol: str, preamble: int = 0) -> bytes:
    """Build the wire bytes of a frame (adds 33H, checksum, terminator, optional FE preamble)."""
    if not 0 <= control <= 0xFF:
        raise FrameError(protocol, "control", f"control code must be one byte, got {control}")
    if len(data) > MAX_DATA:
        raise FrameError(protocol, "length", f"data length at most {MAX_DATA}, got {len(data)}")
    if not 0 <= preamble <= 4:
        raise FrameError(protocol, "preamble", f"0..4 FE bytes allowed, got {preamble}")
    body = (
        bytes([START])
        + address_to_wire(address, protocol)
        + bytes([START, control, len(data)])
        + bytes((b + OFFSET) & 0xFF for b in data)
    )
    return bytes([PREAMBLE] * preamble) + body + bytes([sum(body) & 0xFF, END])


def _is_bcd(byte: int) -> bool:
    return (byte >> 4) <= 9 and (byte & 0x0F) <= 9


def address_from_wire(raw: bytes, protocol: str) -> str:
    """Six wire bytes (low first) to the display-order address; bytes must be BCD or AA."""
    for byte in raw:
        if byte != 0xAA and not _is_bcd(byte):
            raise FrameError(protocol, "address", f"address byte 0x{byte:02X} is neither BCD nor AA")
    return raw[::-1].hex().upper()


def address_to_wire(address: str, protocol: str) -> bytes:
    """Display-order address (12 digits, ``AA`` pairs allowed) to the six wire bytes."""
    text = address.upper()
    pairs = [text[i : i + 2] for i in range(0, len(text), 2)]
    if len(text) != 12 or any(not (p.isdigit() or p == "AA") for p in pairs):
        raise FrameError(protocol, "address", f"address must be 12 digits or AA pairs, got {address!r}")
    return bytes.fromhex(text)[::-1]


def digits_from_bcd(raw: bytes, protocol: str, what: str = "data") -> str:
    """BCD bytes sent low byte first to a display-order digit string; refuses non-BCD bytes."""
    for byte in raw:
        if not _is_bcd(byte):
            raise FrameError(protocol, "data", f"{what}: byte 0x{byte:02X} is not BCD")
    return raw[::-1].hex()


def bcd_from_digits(digits: str, protocol: str) -> bytes:
    """A display-order digit string (even length) to BCD bytes, low byte first."""
    if len(digits) % 2 or not digits.isdigit() or not digits.isascii():
        raise FrameError(protocol, "data", f"expected an even number of decimal digits, got {digits!r}")
    return bytes.fromhex(digits)[::-1]


def datetime_from_wire(raw: bytes, protocol: str) -> datetime:
    """``ss mm hh DD MM YY`` (seconds first, low byte first, years 2000-2099) to a datetime."""
    digits = digits_from_bcd(raw, protocol, "date-time")  # display order YYMMDDhhmmss
    try:
        return datetime(
            2000 + int(digits[0:2]),
            int(digits[2:4]),
            int(digits[4:6]),
            int(digits[6:8]),
            int(digits[8:10]),
            int(digits[10:12]),
        )
    except ValueError as exc:
        raise FrameError(protocol, "data", f"impossible date-time {digits}: {exc}") from None


def datetime_to_wire(when: datetime, protocol: str) -> bytes:
    """A datetime (years 2000-2099) to ``ss mm hh DD MM YY`` BCD, seconds first on the wire."""
    if not 2000 <= when.year <= 2099:
        raise FrameError(protocol, "data", f"year must be 2000-2099, got {when.year}")
    return bcd_from_digits(when.strftime("%y%m%d%H%M%S"), protocol)


def error_names(code: int, names: dict[int, str]) -> list[str]:
    """Names of the bits set in an error-status byte, ``bitN`` for bits without a name."""
    return [names.get(bit, f"bit{bit}") for bit in range(8) if code >> bit & 1]


def describe(
    protocol: str,
    address: str,
    control: int,
    di: str | None,
    error_code: int | None,
    values: Mapping[str, tuple[object, str]],
    error_bits: dict[int, str],
    **extra: object,
) -> dict[str, Any]:
    """The JSON view shared by both editions; Decimal values become exact strings."""
    return {
        "protocol": protocol,
        "address": address,
        "control": f"{control:02X}",
        "reply": bool(control & DIRECTION_BIT),
        "error": bool(control & ABNORMAL_BIT),
        "error_code": error_code,
        "errors": error_names(error_code, error_bits) if error_code is not None else [],
        "di": di,
        "values": {
            name: {"value": str(value) if isinstance(value, Decimal) else value, "unit": unit}
            for name, (value, unit) in values.items()
        },
        **extra,
    }


@dataclass(frozen=True)
class FrameBase:
    """What both editions' frames share: display-order address, control code C and the data
    field with 33H removed. Control code bits (both editions): D7 direction (1 = reply from the
    meter), D6 abnormal reply, D5 follow-up frames, D4..D0 function code."""

    address: str
    control: int
    data: bytes = b""

    @property
    def function(self) -> int:
        """Function code D4..D0."""
        return self.control & FUNCTION_MASK

    @property
    def reply(self) -> bool:
        """True for frames sent by the meter (D7)."""
        return bool(self.control & DIRECTION_BIT)

    @property
    def error(self) -> bool:
        """True for abnormal replies (D6)."""
        return bool(self.control & ABNORMAL_BIT)

    @property
    def more(self) -> bool:
        """True when the meter has follow-up frames (D5)."""
        return bool(self.control & FOLLOW_BIT)

    @property
    def error_code(self) -> int | None:
        """The error-status byte of an abnormal reply."""
        return self.data[0] if self.error else None


Lengths = dict[int, tuple[tuple[int, int], tuple[int, int] | None]]


def check(frame: FrameBase, lengths: Lengths, follow_ok: tuple[int, ...], protocol: str) -> None:
    """Refuse control codes and data lengths an edition does not allow.

    ``lengths`` maps each function code to ((min, max) request data, (min, max) normal-reply data
    or None when the function has no reply); an abnormal reply carries exactly one error byte.
    ``follow_ok`` lists the functions whose replies may set the follow-up bit D5.
    """
    rule = lengths.get(frame.function)
    control = f"0x{frame.control:02X}"
    if rule is None:
        raise FrameError(protocol, "control", f"unknown function 0x{frame.function:02X} in control {control}")
    if not frame.reply and frame.control & (ABNORMAL_BIT | FOLLOW_BIT):
        raise FrameError(protocol, "control", f"request {control} sets reply-only bits D6/D5")
    request, normal = rule
    if frame.reply and normal is None:
        raise FrameError(protocol, "control", f"function 0x{frame.function:02X} has no reply")
    if frame.more and frame.function not in follow_ok:
        raise FrameError(protocol, "control", f"follow-up bit D5 on function 0x{frame.function:02X}")
    low, high = (1, 1) if frame.error else normal if frame.reply and normal else request
    if not low <= len(frame.data) <= high:
        want = str(low) if low == high else f"{low}..{high}"
        got = len(frame.data)
        raise FrameError(protocol, "length", f"control {control} expects {want} data bytes, got {got}")
