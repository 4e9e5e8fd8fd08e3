"""A half-duplex bus: bytes in from a concentrator, at most one meter's reply out.

Every request reaches every meter on the bus; only the addressed meter answers, a broadcast
makes all meters act and none answer, and a frame addressed to no one gets silence. Frames
are found with the bus protocol's codec ``decode`` on an accumulating buffer per endpoint:
framing is length-driven, so silence never ends a frame. One transaction at a time: the
request is clocked onto the bus, the meter waits its response delay, then its reply goes out
one character time per byte (2400 8E1: 11 bits = 4.583 ms per byte).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from libs.protocols.errors import FrameError

from .faults import Chunk, LinkFault
from .site import Link, MeterModel
from .state import MeterState

log = logging.getLogger(__name__)

Write = Callable[[bytes], Awaitable[None]]


class SimMeter(Protocol):
    """A meter as the bus sees it: state plus the protocol handling of its requests."""

    state: MeterState
    model: MeterModel

    def handle(self, frame: Any) -> bytes | None:
        """Act on a decoded request; return the wire reply, or None to stay silent."""
        ...


async def write_paced(write: Write, data: bytes, char_time: float) -> None:
    """Write ``data`` so byte *i* is out no earlier than ``(i + 1) * char_time`` from now."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while sent < len(data):
        now = loop.time()
        due = min(len(data), int((now - start) / char_time))  # bytes fully clocked out by now
        if due > sent:
            await write(data[sent:due])
            sent = due
            continue
        await asyncio.sleep(start + (sent + 1) * char_time - now)


@dataclass
class Endpoint:
    """One client connection onto the bus (a TCP socket or a pty) with its receive buffer."""

    name: str
    write: Write
    buffer: bytearray = field(default_factory=bytearray)
    baud: Callable[[], int | None] = lambda: None  # line speed the client talks at, if known
    via: str = ""  # the alternate concentrator this endpoint belongs to ("" = the bus's own)


def collide(replies: list[bytes]) -> bytes:
    """What the master receives when several slaves send at once: the wired AND of their bytes.

    On RS-485 and on M-Bus (EN 13757-2: a slave signals a space by drawing more current) a
    space (0) from any sender wins over a mark (1); an idle line is all marks (FF).
    """
    size = max(len(r) for r in replies)
    out = bytearray(b"\xff" * size)
    for reply in replies:
        for i, byte in enumerate(reply):
            out[i] &= byte
    return bytes(out)


class Bus:
    """Meters sharing one RS-485 / M-Bus segment, speaking one protocol."""

    def __init__(
        self,
        name: str,
        protocol: str,
        link: Link,
        codec: ModuleType,
        concentrator: str = "",
        seed: int | None = None,
    ) -> None:
        self.name = name
        self.protocol = protocol
        self.link = link
        self.codec = codec
        # Meters know they only ever hear requests; codecs that can tell say so (Modbus-RTU,
        # which has no direction bit, offers decode_request).
        self.decode: Callable[[bytes], tuple[int, Any]] = getattr(codec, "decode_request", codec.decode)
        self.concentrator = concentrator
        self.meters: list[SimMeter] = []
        self.offline: set[str] = set()  # addresses of meters that stay silent
        self.dead = False  # the concentrator is dead: nothing on this bus answers
        self.alternate_dead = False  # the alternate concentrator (if any) is dead
        self.link_fault: LinkFault | None = None
        self.transactions = 0
        self.codec_faults = 0  # decode raised something other than FrameError
        self.collisions = 0  # transactions where more than one meter answered
        self._lock = asyncio.Lock()
        self._random = random.Random(seed)

    def meter(self, address: str) -> SimMeter:
        """The meter with this address; KeyError otherwise."""
        for meter in self.meters:
            if meter.state.address == address:
                return meter
        raise KeyError(f"bus {self.name}: no meter {address}")

    async def feed(self, endpoint: Endpoint, data: bytes) -> None:
        """Take bytes from an endpoint; run a transaction for every whole frame found."""
        endpoint.buffer += data
        while endpoint.buffer:
            try:
                consumed, frame = self.decode(bytes(endpoint.buffer))
            except FrameError as exc:
                # A real meter ignores a bad frame; drop one byte and look for the next start.
                log.debug("bus %s: bad frame (%s), resyncing", self.name, exc)
                del endpoint.buffer[:1]
                continue
            except Exception:
                # The simulator is the codecs' conformance peer: say so loudly, keep the bus up.
                log.exception("bus %s: %s decode raised instead of FrameError", self.name, self.protocol)
                self.codec_faults += 1
                del endpoint.buffer[:1]
                continue
            if frame is None:
                del endpoint.buffer[:consumed]
                return
            del endpoint.buffer[:consumed]
            await self.transact(endpoint.write, frame, consumed, endpoint.baud(), via=endpoint.via)

    def _hears(self, meter: SimMeter, baud: int | None) -> bool:
        """A meter switched to another line speed (DL/T 645 17H) hears only noise."""
        mine = meter.state.baud or self.link.baud
        return mine == (baud or self.link.baud)

    async def transact(
        self, write: Write, frame: Any, request_len: int, baud: int | None = None, via: str = ""
    ) -> None:
        """Clock the request onto the bus, let the meters act, send the one reply back.

        ``baud`` is the line speed the request was sent at (a pty client's setting), when
        the endpoint knows it; the bus's configured speed otherwise. ``via`` names the alternate
        concentrator the request came through: then the alternate's health counts, not the
        bus's own concentrator's. Meters that answer at once
        (a broadcast-with-reply, a wildcard) collide: see :func:`collide`.
        """
        async with self._lock:
            self.transactions += 1
            await asyncio.sleep(request_len * self.link.char_time)
            if self.alternate_dead if via else self.dead:
                return
            replies: list[tuple[SimMeter, bytes]] = []
            for meter in self.meters:
                if meter.state.address in self.offline or not self._hears(meter, baud):
                    continue
                try:
                    out = meter.handle(frame)
                except Exception:  # a meter bug must not kill the bus
                    log.exception("bus %s: meter %s failed", self.name, meter.state.address)
                    continue
                if out:
                    replies.append((meter, out))
            if not replies:
                return
            answering, reply = replies[0]
            if len(replies) > 1:
                reply = collide([out for _, out in replies])
                self.collisions += 1
            low, high = answering.model.response_delay_ms
            await asyncio.sleep(self._random.uniform(low, high) / 1000)
            for chunk in self._manipulate(reply):
                if chunk.pause:
                    await asyncio.sleep(chunk.pause)
                await write_paced(write, chunk.data, self.link.char_time)

    def _manipulate(self, reply: bytes) -> list[Chunk]:
        fault = self.link_fault
        if fault is None or not fault.use():
            if fault is not None:
                self.link_fault = None
            return [Chunk(0.0, reply)]
        return fault.apply(reply)
