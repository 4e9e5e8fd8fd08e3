"""A Modbus-TCP to Modbus-RTU gateway in front of a simulated RS-485 bus.

Like the serial gateways sites put in front of Modbus-RTU meters (Modbus Messaging on TCP/IP
v1.0b, clause 4.4.2 "gateway"): a client sends MBAP ADUs; the gateway strips the MBAP header,
adds the RTU CRC, puts the frame on the serial bus, and turns the RTU reply back into an MBAP
ADU with the client's transaction id. Framing on both sides is :mod:`libs.protocols.modbus`
(pymodbus framers); the bus transaction (timing, faults, the one-at-a-time lock) is
:meth:`Bus.transact`. When no valid reply arrives within ``timeout`` the gateway answers
exception 0B (gateway target device failed to respond); unit 0 is a broadcast and gets no
answer; a PDU the RTU side cannot frame gets exception 01 (illegal function).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from libs.protocols import modbus
from libs.protocols.errors import FrameError

from .bus import Bus
from .tcpserver import TcpServer

log = logging.getLogger(__name__)
ILLEGAL_FUNCTION = 0x01
TARGET_FAILED = 0x0B


class ModbusTcpGateway(TcpServer):
    """One listening TCP port translating Modbus-TCP to the RTU bus and back."""

    def __init__(self, bus: Bus, host: str = "127.0.0.1", port: int = 0, timeout: float = 1.0) -> None:
        super().__init__(host, port)
        self.bus = bus
        self.timeout = timeout

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Translate ADUs until the client leaves or sends something that is not Modbus-TCP."""
        buf = b""
        try:
            while data := await reader.read(4096):
                buf += data
                while True:
                    consumed, adu = modbus.decode_tcp(buf)
                    if adu is None:
                        break
                    buf = buf[consumed:]
                    answer = await self.forward(adu)
                    if answer is not None:
                        writer.write(modbus.encode_tcp(answer))
                        await writer.drain()
        except FrameError as exc:  # not Modbus-TCP: a gateway closes such a connection
            log.debug("gateway %s: %s, closing", self.bus.name, exc)

    async def forward(self, adu: modbus.TcpAdu) -> modbus.TcpAdu | None:
        """Run one request over the RTU bus; the MBAP answer, or None for a broadcast."""
        rtu = modbus.rtu_from_tcp(adu)
        try:
            _, request = self.bus.decode(rtu)
        except FrameError:
            request = None
        if request is None:
            return self._exception(adu, ILLEGAL_FUNCTION)
        received = bytearray()

        async def collect(data: bytes) -> None:
            received.extend(data)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.bus.transact(collect, request, len(rtu)), self.timeout)
        if adu.unit == 0:
            return None
        try:
            _, reply = modbus.decode_response(bytes(received))
        except FrameError:  # corrupted on the line: the gateway drops it
            reply = None
        if reply is None or reply.unit != adu.unit:
            return self._exception(adu, TARGET_FAILED)
        return modbus.tcp_from_rtu(reply, adu.transaction)

    @staticmethod
    def _exception(adu: modbus.TcpAdu, code: int) -> modbus.TcpAdu:
        return modbus.TcpAdu(adu.transaction, adu.unit, bytes([(adu.pdu[0] | 0x80) & 0xFF, code]))

    def describe(self) -> dict[str, object]:
        """The endpoint as printed by the CLI."""
        return {"modbus_tcp": f"{self.host}:{self.port}"}
