"""Thin byte transports to a meter bus: TCP pass-through (DTU / serial server) and a serial port.

A transport moves bytes and nothing else: ``open`` / ``send`` / ``receive(timeout)`` / ``close``.
It does not frame, retry, time transactions or lock the bus; :mod:`libs.protocols.transaction`
does. Both transports carry the :class:`LineSettings` of the RS-485 / M-Bus segment behind them
(for TCP pass-through, the DTU's serial side), because the transaction layer needs the character
time to compute timeouts: ``(1 start + data + parity + stop) / baud`` (2400 8E1: 11 bits =
4.583 ms).

``receive(timeout)`` returns whatever has arrived: at once if bytes are buffered, else the first
bytes to arrive within ``timeout`` seconds, else ``b""``. ``receive(0)`` never waits, so a caller
drains stale input with ``while await t.receive(0): ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Literal, Protocol

import serial

Parity = Literal["N", "E", "O"]


class TransportError(ConnectionError):
    """The transport could not connect, or the connection failed or was closed.

    ``endpoint`` names the peer (``host:port`` or the device path); ``reason`` is a short
    machine-readable cause (``connect``, ``closed``, ``io``, ``not_open``).
    """

    def __init__(self, endpoint: str, reason: str, detail: str = "") -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.detail = detail
        super().__init__(f"{endpoint}: {reason}" + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class LineSettings:
    """Serial line settings of a bus: baud, data bits, parity (N/E/O), stop bits."""

    baud: int = 2400
    data_bits: int = 8
    parity: Parity = "E"
    stop_bits: int = 1

    def __post_init__(self) -> None:
        if self.baud <= 0 or not 5 <= self.data_bits <= 8 or self.stop_bits not in (1, 2):
            raise ValueError(f"impossible line settings {self.label()}")
        if self.parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be N, E or O, got {self.parity!r}")

    @property
    def bits_per_char(self) -> int:
        """Start bit + data bits + parity bit (if any) + stop bits."""
        return 1 + self.data_bits + (0 if self.parity == "N" else 1) + self.stop_bits

    @property
    def char_time(self) -> float:
        """Seconds one character takes on the wire (2400 8E1: 4.583 ms)."""
        return self.bits_per_char / self.baud

    def wire_time(self, nbytes: int) -> float:
        """Seconds ``nbytes`` characters take on the wire."""
        return nbytes * self.char_time

    def label(self) -> str:
        """The usual short form, e.g. ``2400 8E1``."""
        return f"{self.baud} {self.data_bits}{self.parity}{self.stop_bits}"

    @classmethod
    def parse(cls, label: str) -> LineSettings:
        """``"2400 8E1"`` → ``LineSettings(2400, 8, "E", 1)``."""
        try:
            baud, frame = label.split()
            parity = frame[1].upper()
            if parity not in ("N", "E", "O"):
                raise ValueError(parity)
            return cls(int(baud), int(frame[0]), parity, int(frame[2]))  # type: ignore[arg-type]
        except (ValueError, IndexError):
            raise ValueError(f"expected line settings like '2400 8E1', got {label!r}") from None


class Transport(Protocol):
    """What the transaction layer needs from a link to a bus."""

    line: LineSettings

    @property
    def endpoint(self) -> str:
        """Where the bytes go (``host:port``, device path)."""
        ...

    async def open(self) -> None:
        """Connect / open the device; TransportError on failure."""
        ...

    async def send(self, data: bytes) -> None:
        """Hand ``data`` to the link; TransportError on failure."""
        ...

    async def receive(self, timeout: float) -> bytes:
        """Bytes received so far, or the first to arrive within ``timeout``; ``b""`` if none."""
        ...

    async def close(self) -> None:
        """Release the link; safe to call twice."""
        ...


class _Inbox:
    """Received bytes waiting for ``receive``, and the reason the link ended (if it did)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.data = bytearray()
        self.arrived = asyncio.Event()
        self.error: TransportError | None = None

    def put(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()

    def fail(self, error: TransportError) -> None:
        self.error = error
        self.arrived.set()

    async def take(self, timeout: float) -> bytes:
        if not self.data and self.error is None and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout)
        if self.data:
            out = bytes(self.data)
            self.data.clear()
            self.arrived.clear()
            return out
        if self.error is not None:
            raise self.error
        self.arrived.clear()
        return b""


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, inbox: _Inbox) -> None:
        self.inbox = inbox
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.inbox.put(data)

    def connection_lost(self, exc: Exception | None) -> None:
        detail = str(exc) if exc else "peer closed the connection"
        self.inbox.fail(TransportError(self.inbox.endpoint, "closed", detail))


class TcpTransport:
    """TCP pass-through to a DTU or serial server: bus bytes in both directions, unframed."""

    def __init__(
        self, host: str, port: int, line: LineSettings | None = None, connect_timeout: float = 5.0
    ) -> None:
        self.host = host
        self.port = port
        self.line = line or LineSettings()
        self.connect_timeout = connect_timeout
        self._inbox = _Inbox(self.endpoint)
        self._protocol: _TcpProtocol | None = None

    @property
    def endpoint(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    async def open(self) -> None:
        """Connect; TransportError(reason ``connect``) on refusal or timeout."""
        loop = asyncio.get_running_loop()
        self._inbox = _Inbox(self.endpoint)
        inbox = self._inbox
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _TcpProtocol(inbox), self.host, self.port),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise TransportError(self.endpoint, "connect", str(exc) or type(exc).__name__) from exc
        self._protocol = protocol

    def _live(self) -> asyncio.Transport:
        if self._protocol is None or self._protocol.transport is None:
            raise TransportError(self.endpoint, "not_open")
        if self._inbox.error is not None:
            raise self._inbox.error
        return self._protocol.transport

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the socket."""
        transport = self._live()
        try:
            transport.write(data)
        except OSError as exc:  # pragma: no cover - asyncio reports most errors via connection_lost
            raise TransportError(self.endpoint, "io", str(exc)) from exc

    async def receive(self, timeout: float) -> bytes:
        """Bytes received so far, or the first to arrive within ``timeout``; ``b""`` if none."""
        if self._protocol is None:
            raise TransportError(self.endpoint, "not_open")
        return await self._inbox.take(timeout)

    async def close(self) -> None:
        """Close the socket (idempotent)."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


class SerialTransport:
    """A serial port (RS-485 adapter, or a pty in tests) driven by pyserial, without threads.

    The port is opened non-blocking and read with ``loop.add_reader`` on its file descriptor;
    writes go straight to the fd (``add_writer`` when the kernel buffer is full).
    """

    def __init__(self, device: str, line: LineSettings | None = None, exclusive: bool = True) -> None:
        self.device = device
        self.line = line or LineSettings()
        self.exclusive = exclusive
        self._port: serial.Serial | None = None
        self._inbox = _Inbox(device)

    @property
    def endpoint(self) -> str:
        """The device path."""
        return self.device

    async def open(self) -> None:
        """Open the device with the line settings; TransportError(``connect``) on failure."""
        line = self.line
        self._inbox = _Inbox(self.device)
        try:
            port = serial.Serial(
                self.device,
                baudrate=line.baud,
                bytesize=line.data_bits,
                parity=line.parity,
                stopbits=line.stop_bits,
                timeout=0,
                write_timeout=0,
                exclusive=self.exclusive,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(self.device, "connect", str(exc)) from exc
        os.set_blocking(port.fileno(), False)
        self._port = port
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable)

    def _readable(self) -> None:
        if self._port is None:
            return
        try:
            data = os.read(self._port.fileno(), 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._stop_reading()
            self._inbox.fail(TransportError(self.device, "io", str(exc)))
            return
        if data:
            self._inbox.put(data)
        else:  # end of file: the device went away
            self._stop_reading()
            self._inbox.fail(TransportError(self.device, "closed", "end of file"))

    def _stop_reading(self) -> None:
        if self._port is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._port.fileno())

    async def send(self, data: bytes) -> None:
        """Write all of ``data``, waiting for the fd to become writable when the buffer is full."""
        if self._port is None:
            raise TransportError(self.device, "not_open")
        if self._inbox.error is not None:
            raise self._inbox.error
        fd = self._port.fileno()
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(fd, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(fd)
                continue
            except OSError as exc:
                raise TransportError(self.device, "io", str(exc)) from exc
            view = view[written:]

    async def receive(self, timeout: float) -> bytes:
        """Bytes received so far, or the first to arrive within ``timeout``; ``b""`` if none."""
        if self._port is None:
            raise TransportError(self.device, "not_open")
        return await self._inbox.take(timeout)

    async def close(self) -> None:
        """Stop reading and close the device (idempotent)."""
        if self._port is None:
            return
        self._stop_reading()
        self._port.close()
        self._port = None
