"""How a client reaches a bus: TCP pass-through (a DTU / serial server) or a pseudo-terminal.

Both are thin: they move raw bus bytes between the outside and :meth:`Bus.feed` and hand the
bus a ``write`` for the reply. Neither frames nor paces anything; the bus does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import tty
from itertools import count

from .bus import Bus, Endpoint
from .tcpserver import TcpServer

log = logging.getLogger(__name__)
_ids = count(1)
# termios speed constants <-> bits per second, for the line speeds meters use.
_SPEEDS = {
    getattr(termios, f"B{baud}"): baud
    for baud in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
}


class TcpPassThrough(TcpServer):
    """One listening TCP port per bus, like a GPRS/4G DTU passing RS-485 bytes through."""

    def __init__(self, bus: Bus, host: str = "127.0.0.1", port: int = 0, via: str = "") -> None:
        super().__init__(host, port)
        self.bus = bus
        self.via = via  # an alternate concentrator's port onto the bus (cascade), or ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pass bytes between the socket and the bus."""

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        endpoint = Endpoint(f"{self.bus.name}/tcp{next(_ids)}", write, via=self.via)
        while data := await reader.read(4096):
            await self.bus.feed(endpoint, data)

    def describe(self) -> dict[str, object]:
        """The endpoint as printed by the CLI."""
        return {"tcp": f"{self.host}:{self.port}"}


class PtySerial:
    """A pseudo-terminal whose slave end (``/dev/pts/N``) a client opens with pyserial.

    We keep our own handle on the slave open, so the master never sees EIO when a client
    closes it, and set it raw so the line discipline neither echoes nor edits bus bytes.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.path = ""
        self._master = -1
        self._slave = -1
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the pty and start moving bytes."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        # Start at the bus's speed, so a client that never sets one (cat, socat) is heard.
        attrs = termios.tcgetattr(self._slave)
        speed = next((c for c, b in _SPEEDS.items() if b == self.bus.link.baud), attrs[4])
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._master, self._readable)
        self._pump = asyncio.create_task(self._run(), name=f"pty {self.path}")

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no slave open; cannot happen while we hold ours
            return
        if data:
            self._queue.put_nowait(data)

    async def _write(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except BlockingIOError:
            log.debug("pty %s: output buffer full, reply bytes dropped", self.path)

    def baud(self) -> int | None:
        """The line speed the client set on the pty (pyserial ``baudrate``), if a known one."""
        if self._slave < 0:
            return None
        return _SPEEDS.get(termios.tcgetattr(self._slave)[5])

    async def _run(self) -> None:
        endpoint = Endpoint(f"{self.bus.name}/pty", self._write, baud=self.baud)
        while True:
            data = await self._queue.get()
            try:
                await self.bus.feed(endpoint, data)
            except OSError:
                log.exception("pty %s: write failed", self.path)

    async def stop(self) -> None:
        """Close the pty."""
        if self._master < 0:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    def describe(self) -> dict[str, object]:
        """The endpoint as printed by the CLI."""
        return {"pty": self.path}
