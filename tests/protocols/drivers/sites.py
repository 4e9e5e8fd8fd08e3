"""A small simulated site on a manual clock for transaction and driver tests.

One bus per protocol, fast meters (10 ms response delay) so the suite stays quick, and helpers
that open a :class:`Bus` over TCP pass-through or over the bus's pty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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
from libs.protocols.transaction import Bus, Timing
from libs.protocols.transport import LineSettings, SerialTransport, TcpTransport

DELAY_MS = 10.0
FAST = Timing(response_delay=0.1, byte_gap=0.1, slack=0.05, retries=2, backoff=0.01)
E8E1 = LineSettings(2400, 8, "E", 1)
N81 = LineSettings(9600, 8, "N", 1)
PASSWORD = "00123456"


def site_config() -> SiteConfig:
    e8e1, n81 = Link(baud=2400, parity="E"), Link(baud=9600, parity="N")
    fixed = (DELAY_MS, DELAY_MS)
    models = {
        "e2007": MeterModel(protocol="dlt645-2007", prepaid=True, response_delay_ms=fixed, password=PASSWORD),
        "e1997": MeterModel(protocol="dlt645-1997", response_delay_ms=fixed),
        "water": MeterModel(protocol="cjt188", kind="water", response_delay_ms=fixed),
        "water-rev": MeterModel(protocol="cjt188", kind="water", reversed_di=True, response_delay_ms=fixed),
        "mb": MeterModel(
            protocol="modbus-rtu", prepaid=True, modbus_map="single_phase_prepaid", response_delay_ms=fixed
        ),
        "dtsd": MeterModel(
            protocol="modbus-rtu", modbus_map="three_phase_multifunction", response_delay_ms=fixed
        ),
    }
    meters_e = [
        MeterConfig(address=f"00000000000{i}", model="e2007", energy_kwh=100.0 * i, peak_kw=2.0, purchases=i)
        for i in (1, 2, 3)
    ]
    water = [
        MeterConfig(address="00000000000001", model="water", energy_kwh=12.5, peak_kw=0.3),
        MeterConfig(address="00000000000003", model="water-rev", energy_kwh=3.0, peak_kw=0.3),
    ]
    return SiteConfig(
        name="drivers",
        models=models,
        concentrators=[
            ConcentratorConfig(
                name="c1",
                buses=[
                    BusConfig(name="e", protocol="dlt645-2007", link=e8e1, meters=meters_e),
                    BusConfig(
                        name="m",
                        protocol="modbus-rtu",
                        link=n81,
                        meters=[
                            MeterConfig(address="1", model="mb", energy_kwh=50.0, balance=12.34, purchases=4),
                            MeterConfig(address="2", model="dtsd", energy_kwh=777.0, peak_kw=9.0),
                        ],
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
                    BusConfig(name="w", protocol="cjt188", link=e8e1, meters=water),
                ],
            ),
        ],
    )


LINES = {"e": E8E1, "m": N81, "e97": E8E1, "w": E8E1}


@asynccontextmanager
async def running_site(clock: ManualClock | None = None) -> AsyncIterator[Site]:
    site = Site(site_config(), clock=clock or ManualClock(), seed=1)
    await site.start(pty=True)
    try:
        yield site
    finally:
        await site.stop()


@asynccontextmanager
async def open_bus(
    site: Site, name: str, decode: Any, via: str = "tcp", timing: Timing = FAST
) -> AsyncIterator[Bus]:
    """A transaction-layer bus onto simulated bus ``name`` over ``tcp`` or ``pty``."""
    line = LINES[name]
    transport: TcpTransport | SerialTransport
    if via == "tcp":
        transport = TcpTransport("127.0.0.1", site.tcp[name].port, line)
    else:
        transport = SerialTransport(site.ptys[name].path, line)
    await transport.open()
    try:
        yield Bus(transport, decode, timing=timing, name=name)
    finally:
        await transport.close()
