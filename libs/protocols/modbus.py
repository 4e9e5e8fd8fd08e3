"""Modbus-RTU meter access, sans-IO, on pymodbus's own RTU framer and PDU classes.

RTU ADU (Modbus over Serial Line v1.02, clause 2.5.1)::

    [ unit ][ function ][ data ... ][ CRC lo ][ CRC hi ]
      1 B      1 B        0..252 B     CRC-16/Modbus of unit..data

The CRC (``FramerRTU.compute_CRC``/``check_CRC``), the PDU layouts and the frame sizes
(``calculateRtuFrameSize``) come from pymodbus; this module only decides where a frame ends.

**Request vs response ambiguity.**  RTU has no direction bit: ``01 03 00 00 00 0A C5 CD`` is a
request, ``01 03 04 ...`` a response, and only the length rules tell them apart.  :func:`decode`
tries both readings at the buffer start (pymodbus's server-side decoder for the request size,
client-side for the response size), and accepts the shorter reading whose CRC checks; it waits
for more bytes while a longer reading is still possible, and raises ``crc`` only when every
reading is complete and fails.  A false match needs a 16-bit CRC collision (p = 2^-16 per
frame); callers that know the direction (the transaction layer, the simulator) use
:func:`decode_request` / :func:`decode_response`, which have no ambiguity.  RTU has no start
marker, so garbage before a frame cannot be resynchronised: it surfaces as a ``crc`` error and
the caller drops the buffer (pymodbus's framer does the same).

Register maps per meter model are JSON files in ``libs/protocols/models/`` (see
:func:`load_model`); :func:`plan_reads` groups them into as few read requests as possible.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import WriteSingleCoilRequest, WriteSingleCoilResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from libs.protocols.errors import FrameError

PROTOCOL = "modbus-rtu"
MAX_ADU = 256
MODELS_DIR = Path(__file__).with_name("models")
_SERVER = DecodePDU(is_server=True)  # decodes requests
_CLIENT = DecodePDU(is_server=False)  # decodes responses
_FRAMER = FramerRTU(_CLIENT)
_MBAP = FramerSocket(_SERVER)
MBAP_HEADER = 7  # transaction id 2, protocol id 2, length 2, unit 1
_PDU_ERRORS = (ModbusException, ValueError, IndexError, KeyError, struct.error)


@dataclass(frozen=True)
class RtuFrame:
    """One RTU ADU: ``pdu`` is function code + data (as pymodbus encodes it), without unit/CRC."""

    unit: int
    pdu: bytes
    reply: bool
    address: int | None = None
    count: int | None = None
    registers: tuple[int, ...] = ()
    bits: tuple[bool, ...] = ()
    exception_code: int | None = None

    @property
    def function(self) -> int:
        """Function code (bit 7 set for exception responses)."""
        return self.pdu[0]


def _fail(fault: str, detail: str) -> FrameError:
    return FrameError(PROTOCOL, fault, detail)


def _frame(unit: int, pdu_bytes: bytes, reply: bool) -> RtuFrame:
    decoder = _CLIENT if reply else _SERVER
    try:
        pdu = decoder.decode(pdu_bytes)
    except _PDU_ERRORS as exc:  # pymodbus catches most, not all, decode faults
        raise _fail("data", f"PDU {pdu_bytes.hex(' ')} not decodable: {exc}") from None
    if pdu is None:
        raise _fail(
            "data",
            f"PDU {pdu_bytes.hex(' ').upper()} not decodable as a {'response' if reply else 'request'}",
        )
    if isinstance(pdu, ExceptionResponse):
        return RtuFrame(unit, pdu_bytes, True, exception_code=pdu.exception_code)
    plain = (ReadHoldingRegistersResponse, ReadInputRegistersResponse)
    return RtuFrame(
        unit,
        pdu_bytes,
        reply,
        address=None if isinstance(pdu, plain) else pdu.address,
        count=pdu.count if pdu_bytes[0] in (1, 2, 3, 4, 15, 16) else None,
        registers=tuple(pdu.registers),
        bits=tuple(bool(b) for b in pdu.bits),
    )


def _size(decoder: DecodePDU, buf: bytes) -> int | None:
    """Frame size by pymodbus's length rules; 0 = not yet known; None = impossible reading."""
    try:
        cls = decoder.lookupPduClass(buf)
        if cls is None:
            return None
        size = cls.calculateRtuFrameSize(buf)
    except _PDU_ERRORS:
        return None
    return size if size <= MAX_ADU else None


def _decode(buf: bytes, readings: tuple[bool, ...]) -> tuple[int, RtuFrame | None]:
    if len(buf) < FramerRTU.MIN_SIZE:
        return 0, None
    sizes = [
        (size, reply) for reply in readings if (size := _size(_CLIENT if reply else _SERVER, buf)) is not None
    ]
    if not sizes:
        raise _fail("function", f"expected a function code pymodbus knows, got 0x{buf[1]:02X}")
    waiting, failures = False, []
    for size, reply in sorted(sizes):
        if size == 0 or len(buf) < size:
            waiting = True
            continue
        crc = int.from_bytes(buf[size - 2 : size], "big")
        if FramerRTU.check_CRC(buf[: size - 2], crc):
            return size, _frame(buf[0], bytes(buf[1 : size - 2]), reply)
        failures.append(
            f"{size}-byte {'response' if reply else 'request'}: expected "
            f"{FramerRTU.compute_CRC(buf[: size - 2]):04X}, got {crc:04X}"
        )
    if waiting:
        return 0, None
    raise _fail("crc", "; ".join(failures))


def decode(buf: bytes) -> tuple[int, RtuFrame | None]:
    """Parse one request or response (see the module docstring for the heuristic)."""
    return _decode(buf, (False, True))


def decode_request(buf: bytes) -> tuple[int, RtuFrame | None]:
    """Parse one request (server side)."""
    return _decode(buf, (False,))


def decode_response(buf: bytes) -> tuple[int, RtuFrame | None]:
    """Parse one response (client side)."""
    return _decode(buf, (True,))


def encode(frame: RtuFrame) -> bytes:
    """Serialise ``frame``: unit + PDU + CRC via ``FramerRTU.encode``."""
    if not 0 <= frame.unit <= 0xFF or len(frame.pdu) + 3 > MAX_ADU:
        raise _fail(
            "length",
            f"expected unit 0..255 and ADU <= 256 bytes, got unit {frame.unit}, {len(frame.pdu) + 3} bytes",
        )
    return _FRAMER.encode(frame.pdu, frame.unit, 0)


def _build(pdu: ModbusPDU, reply: bool) -> RtuFrame:
    """Encode a pymodbus PDU object and read it back into a frame."""
    try:
        data = _FRAMER.buildFrame(pdu)
    except _PDU_ERRORS as exc:
        raise _fail("data", f"cannot encode {type(pdu).__name__}: {exc}") from None
    return _frame(data[0], data[1:-2], reply)


def read_request(unit: int, function: int, address: int, count: int) -> RtuFrame:
    """Read holding (3) or input (4) registers request."""
    cls = {3: ReadHoldingRegistersRequest, 4: ReadInputRegistersRequest}[function]
    return _build(cls(dev_id=unit, address=address, count=count), False)


def read_response(unit: int, function: int, registers: list[int]) -> RtuFrame:
    """Read holding (3) or input (4) registers response carrying ``registers``."""
    cls = {3: ReadHoldingRegistersResponse, 4: ReadInputRegistersResponse}[function]
    return _build(cls(dev_id=unit, registers=registers), True)


def exception_response(unit: int, function: int, code: int) -> RtuFrame:
    """Exception response (function | 0x80, exception code), e.g. 2 = illegal data address."""
    return _build(ExceptionResponse(function, code, device_id=unit), True)


def describe(frame: RtuFrame) -> dict[str, Any]:
    """JSON view of a frame per :mod:`libs.protocols.registry`; ``di`` is the start register."""
    values: dict[str, dict[str, Any]] = {}
    if frame.count is not None and not frame.reply:
        values["count"] = {"value": str(frame.count), "unit": None}
    for offset, register in enumerate(frame.registers):
        key = f"register_{(frame.address or 0) + offset}" if frame.address is not None else f"word_{offset}"
        values[key] = {"value": str(register), "unit": None}
    if frame.bits:
        values["bits"] = {"value": "".join("1" if b else "0" for b in frame.bits), "unit": None}
    return {
        "protocol": PROTOCOL,
        "address": str(frame.unit),
        "control": f"{frame.function:02X}",
        "reply": frame.reply,
        "error": frame.exception_code is not None,
        "error_code": f"{frame.exception_code:02X}" if frame.exception_code is not None else None,
        "di": f"{frame.address:04X}" if frame.address is not None else None,
        "values": values,
    }


# ---- Modbus-TCP (MBAP) --------------------------------------------------------------------


@dataclass(frozen=True)
class TcpAdu:
    """One Modbus-TCP ADU (Modbus Messaging on TCP/IP v1.0b, clause 3.1.3)::

        [ transaction id ][ protocol id = 0 ][ length ][ unit ][ function ][ data ... ]
              2 B                2 B             2 B      1 B       1 B       0..252 B
                                                 '---- length = unit + PDU -----------'

    No CRC: TCP checks the bytes. ``pdu`` is function code + data, as in :class:`RtuFrame`.
    """

    transaction: int
    unit: int
    pdu: bytes


def decode_tcp(buf: bytes) -> tuple[int, TcpAdu | None]:
    """Parse one MBAP ADU (framing by pymodbus ``FramerSocket``); ``(0, None)``: need more.

    MBAP has no start marker either, so a bad header (protocol id not 0, length outside
    2..254) raises ``FrameError`` and the caller drops the connection, as gateways do.
    """
    if len(buf) < MBAP_HEADER:
        return 0, None
    protocol, length = int.from_bytes(buf[2:4], "big"), int.from_bytes(buf[4:6], "big")
    if protocol != 0:
        raise _fail("start", f"expected MBAP protocol id 0, got {protocol}")
    if not 2 <= length <= 254:
        raise _fail("length", f"expected MBAP length 2..254 (unit + PDU), got {length}")
    if len(buf) < 6 + length:
        return 0, None
    used, unit, transaction, pdu = _MBAP.decode(bytes(buf[: 6 + length]))
    return used, TcpAdu(transaction, unit, bytes(pdu))


def encode_tcp(adu: TcpAdu) -> bytes:
    """Serialise an MBAP ADU (pymodbus ``FramerSocket.encode``)."""
    if not 1 <= len(adu.pdu) <= 253 or not 0 <= adu.unit <= 0xFF or not 0 <= adu.transaction <= 0xFFFF:
        raise _fail("length", f"expected a 1..253-byte PDU, unit 0..255, transaction 0..65535, got {adu}")
    return _MBAP.encode(adu.pdu, adu.unit, adu.transaction)


def rtu_from_tcp(adu: TcpAdu) -> bytes:
    """The RTU ADU a gateway puts on the serial line for a Modbus-TCP request (adds the CRC)."""
    return _FRAMER.encode(adu.pdu, adu.unit, 0)


def tcp_from_rtu(frame: RtuFrame, transaction: int) -> TcpAdu:
    """The Modbus-TCP ADU a gateway sends back for an RTU reply (the CRC is dropped)."""
    return TcpAdu(transaction, frame.unit, frame.pdu)


# ---- register maps -----------------------------------------------------------------------

DataType = Literal["int16", "uint16", "int32", "uint32", "float32"]
_DT = ModbusClientMixin.DATATYPE
_TYPES: dict[str, Any] = {
    "int16": _DT.INT16,
    "uint16": _DT.UINT16,
    "int32": _DT.INT32,
    "uint32": _DT.UINT32,
    "float32": _DT.FLOAT32,
}


@dataclass(frozen=True)
class Quantity:
    """One register-mapped value: raw register value × ``scale`` = value in ``unit``."""

    name: str
    function: int
    register: int
    type: DataType
    word_order: Literal["big", "little"]
    scale: Decimal
    unit: str | None

    @property
    def count(self) -> int:
        """Registers occupied (1 for 16-bit types, 2 for 32-bit)."""
        return int(_TYPES[self.type].value[1])

    def decode(self, registers: list[int]) -> Decimal:
        """Registers to a scaled Decimal (pymodbus ``convert_from_registers``)."""
        raw = ModbusClientMixin.convert_from_registers(
            registers, _TYPES[self.type], word_order=self.word_order
        )
        if self.type == "float32":
            packed = struct.pack(">f", raw)
            text = next(t for d in range(1, 10) if struct.pack(">f", float(t := f"{raw:.{d}g}")) == packed)
            return Decimal(text) * self.scale
        return Decimal(int(raw)) * self.scale  # type: ignore[arg-type]

    def encode(self, value: Decimal) -> list[int]:
        """Scaled value to registers (pymodbus ``convert_to_registers``), for simulators."""
        raw = value / self.scale
        number: int | float = float(raw) if self.type == "float32" else int(raw.to_integral_value())
        return ModbusClientMixin.convert_to_registers(number, _TYPES[self.type], word_order=self.word_order)


@dataclass(frozen=True)
class MeterModel:
    """A meter model's register map; ``relay`` describes the relay control write, if any."""

    name: str
    description: str
    quantities: tuple[Quantity, ...]
    relay: dict[str, int] | None = None


@dataclass(frozen=True)
class ReadBlock:
    """One read request's span and the quantities it covers."""

    function: int
    start: int
    count: int
    quantities: tuple[Quantity, ...]


def load_model(name: str, directory: Path = MODELS_DIR) -> MeterModel:
    """Load ``<directory>/<name>.json``; ValueError names the first inconsistent entry."""
    spec = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    quantities = []
    for q in spec["quantities"]:
        if q["type"] not in _TYPES or q["function"] not in (3, 4):
            raise ValueError(f"{name}: {q['name']}: expected function 3/4 and a known type, got {q}")
        item = Quantity(
            q["name"],
            q["function"],
            q["register"],
            q["type"],
            q.get("word_order", "big"),
            Decimal(q.get("scale", "1")),
            q.get("unit"),
        )
        if q.get("count", item.count) != item.count or q.get("signed", item.type[0] != "u") != (
            item.type[0] != "u"
        ):
            raise ValueError(f"{name}: {q['name']}: count/signed disagree with type {item.type}")
        quantities.append(item)
    return MeterModel(spec["model"], spec.get("description", ""), tuple(quantities), spec.get("relay"))


def plan_reads(model: MeterModel, max_count: int = 125, max_gap: int = 0) -> list[ReadBlock]:
    """Group quantities into the fewest read requests: same function, contiguous registers.

    Gaps of up to ``max_gap`` unmapped registers are read through (some meters reject reads of
    unmapped registers, hence the default 0); a block never exceeds ``max_count`` registers.
    """
    blocks: list[ReadBlock] = []
    for q in sorted(model.quantities, key=lambda q: (q.function, q.register)):
        last = blocks[-1] if blocks else None
        if (
            last
            and last.function == q.function
            and q.register <= last.start + last.count + max_gap
            and max(last.start + last.count, q.register + q.count) - last.start <= max_count
        ):
            end = max(last.start + last.count, q.register + q.count)
            blocks[-1] = ReadBlock(last.function, last.start, end - last.start, (*last.quantities, q))
        else:
            blocks.append(ReadBlock(q.function, q.register, q.count, (q,)))
    return blocks


def read_requests(model: MeterModel, unit: int, **plan: int) -> list[tuple[ReadBlock, RtuFrame]]:
    """The request frames reading every quantity of ``model`` from slave ``unit``."""
    return [(b, read_request(unit, b.function, b.start, b.count)) for b in plan_reads(model, **plan)]


def decode_values(block: ReadBlock, response: RtuFrame) -> dict[str, Decimal]:
    """``{quantity: Decimal}`` from the response to ``block``'s request."""
    if response.exception_code is not None:
        raise _fail("function", f"expected registers, got exception {response.exception_code:02X}")
    if response.function != block.function or len(response.registers) != block.count:
        raise _fail(
            "data",
            f"expected fc {block.function} with {block.count} registers, got fc "
            f"{response.function} with {len(response.registers)}",
        )
    regs = list(response.registers)
    return {
        q.name: q.decode(regs[q.register - block.start : q.register - block.start + q.count])
        for q in block.quantities
    }


def simulate_response(model: MeterModel, request: RtuFrame, values: dict[str, Decimal]) -> RtuFrame:
    """A simulated meter's answer: the registers of ``values``; exception 02 outside the map."""
    fc, start, count = request.function, request.address or 0, request.count or 0
    registers: dict[int, int] = {}
    for q in model.quantities:
        if q.function == fc and q.name in values:
            registers.update(
                zip(range(q.register, q.register + q.count), q.encode(values[q.name]), strict=True)
            )
    if not all(r in registers for r in range(start, start + count)):
        return exception_response(request.unit, fc, 2)
    return read_response(request.unit, fc, [registers[r] for r in range(start, start + count)])


def relay_command(model: MeterModel, unit: int, close: bool) -> RtuFrame:
    """Relay close (power on) / open (trip) write per the model's ``relay`` entry (fc 5 or 6)."""
    if not model.relay:
        raise ValueError(f"model {model.name} has no relay control")
    relay = model.relay
    if relay["function"] == 5:
        return _build(WriteSingleCoilRequest(dev_id=unit, address=relay["register"], bits=[close]), False)
    value = relay["close_value"] if close else relay["open_value"]
    return _build(
        WriteSingleRegisterRequest(dev_id=unit, address=relay["register"], registers=[value]), False
    )


def relay_echo(request: RtuFrame) -> RtuFrame:
    """The normal response to a single coil/register write, which echoes the request."""
    cls = WriteSingleCoilResponse if request.function == 5 else WriteSingleRegisterResponse
    return _build(
        cls(
            dev_id=request.unit,
            address=request.address or 0,
            bits=list(request.bits),
            registers=list(request.registers),
        ),
        True,
    )
