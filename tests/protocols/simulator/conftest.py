"""Fixtures: a small test site on a manual clock, served on free TCP ports and real ptys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import serial

from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.runtime import Site
from libs.protocols.simulator.site import (
    BusConfig,
    ConcentratorConfig,
    Link,
    MeterConfig,
    MeterModel,
    SiteConfig,
)

FAST = (5.0, 10.0)  # response delay of test models, ms
Decode = Callable[[bytes], tuple[int, Any]]


def site_config() -> SiteConfig:
    """Two concentrators; every protocol whose codec exists gets a bus of three meters."""
    e8e1, n81 = Link(baud=2400, parity="E"), Link(baud=9600, parity="N")
    models = {
        "e2007": MeterModel(
            protocol="dlt645-2007", prepaid=True, response_delay_ms=FAST, password="00123456"
        ),
        "e1997": MeterModel(protocol="dlt645-1997", response_delay_ms=FAST),
        "water": MeterModel(protocol="cjt188", kind="water", response_delay_ms=FAST),
        "water-rev": MeterModel(protocol="cjt188", kind="water", reversed_di=True, response_delay_ms=FAST),
        "mb": MeterModel(
            protocol="modbus-rtu", prepaid=True, modbus_map="single_phase_prepaid", response_delay_ms=FAST
        ),
    }
    return SiteConfig(
        name="test",
        models=models,
        concentrators=[
            ConcentratorConfig(
                name="c1",
                buses=[
                    BusConfig(
                        name="e",
                        protocol="dlt645-2007",
                        link=e8e1,
                        meters=[
                            MeterConfig(
                                address=f"00000000000{i}", model="e2007", energy_kwh=100.0, peak_kw=2.0
                            )
                            for i in (1, 2, 3)
                        ],
                    ),
                    BusConfig(
                        name="m",
                        protocol="modbus-rtu",
                        link=n81,
                        meters=[MeterConfig(address=str(i), model="mb", energy_kwh=50.0) for i in (1, 2, 3)],
                    ),
                ],
            ),
            ConcentratorConfig(
                name="c2",
                buses=[
                    BusConfig(
                        name="e97",
                        protocol="dlt645-1997",
                        link=e8e1,
                        meters=[MeterConfig(address="000000000097", model="e1997", energy_kwh=42.0)],
                    ),
                    BusConfig(
                        name="w",
                        protocol="cjt188",
                        link=e8e1,
                        meters=[
                            MeterConfig(
                                address="00000000000001", model="water", energy_kwh=12.5, peak_kw=0.3
                            ),
                            MeterConfig(address="00000000000002", model="water", energy_kwh=7.0, peak_kw=0.3),
                            MeterConfig(
                                address="00000000000003", model="water-rev", energy_kwh=3.0, peak_kw=0.3
                            ),
                        ],
                    ),
                ],
            ),
        ],
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def site(clock: ManualClock) -> AsyncIterator[Site]:
    s = Site(site_config(), clock=clock, seed=1)
    await s.start(pty=True)
    try:
        yield s
    finally:
        await s.stop()


class TcpClient:
    """A platform-side client of one bus over TCP pass-through."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, site: Site, bus: str) -> TcpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.tcp[bus].port)
        return cls(reader, writer)

    async def ask(self, request: bytes, decode: Decode, wait: float = 2.0) -> tuple[Any, float]:
        """Send a request, return (reply frame, seconds from send to whole reply)."""
        start = time.monotonic()
        self.writer.write(request)
        await self.writer.drain()
        return await asyncio.wait_for(self._read(decode), wait), time.monotonic() - start

    async def _read(self, decode: Decode) -> Any:
        buf = b""
        while True:
            chunk = await self.reader.read(256)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
            consumed, frame = decode(buf)
            buf = buf[consumed:]
            if frame is not None:
                return frame

    async def silent(self, request: bytes, wait: float = 0.4) -> bool:
        """Send a request; True when nothing at all comes back within ``wait`` seconds."""
        self.writer.write(request)
        await self.writer.drain()
        try:
            data = await asyncio.wait_for(self.reader.read(256), wait)
        except TimeoutError:
            return True
        return not data

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def pty_ask(path: str, request: bytes, decode: Decode, link: tuple[int, str], timeout: float = 2.0) -> Any:
    """Blocking pyserial transaction on a pty slave (run it in a thread)."""
    with serial.Serial(path, baudrate=link[0], parity=link[1], timeout=0.05) as port:
        port.reset_input_buffer()
        port.write(request)
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            buf += port.read(64)
            if buf:
                consumed, frame = decode(buf)
                buf = buf[consumed:]
                if frame is not None:
                    return frame
        return None
