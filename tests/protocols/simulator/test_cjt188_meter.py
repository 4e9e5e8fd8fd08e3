"""CJ/T 188 water meters over TCP pass-through and over a pty: 901F reads, valve, DI quirk."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from libs.protocols import cjt188
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.runtime import Site

from .conftest import TcpClient, pty_ask


def read(address: str, order: cjt188.DiOrder = "standard", ser: int = 7) -> bytes:
    frame = cjt188.build_read(cjt188.address_from_display(address), 0x10, ser=ser, di_order=order)
    return cjt188.encode(frame, preamble=2)


def valve(address: str, open_valve: bool) -> bytes:
    frame = cjt188.build_valve(cjt188.address_from_display(address), 0x10, open_valve)
    return cjt188.encode(frame)


def flow(reply: cjt188.Cjt188Frame) -> Decimal:
    return Decimal(cjt188.metering_values(reply)["cumulative_flow"]["value"])


async def test_read_901f_over_tcp(site: Site) -> None:
    client = await TcpClient.connect(site, "w")
    reply, _ = await client.ask(read("00000000000001"), cjt188.decode)
    await client.close()
    assert reply.control == 0x81
    assert reply.di == cjt188.DI_METERING
    assert reply.ser == 7
    assert cjt188.address_display(reply.address) == "00000000000001"
    values = cjt188.metering_values(reply)
    assert values["cumulative_flow"] == {"value": "12.50", "unit": "m3"}
    assert values["valve"]["value"] == "open"
    assert values["meter_time"]["value"] == "2026-01-01T16:00:00"  # 08:00Z in UTC+8


async def test_valve_close_stops_the_volume(site: Site, clock: ManualClock) -> None:
    client = await TcpClient.connect(site, "w")
    clock.advance(hours=2)
    before = flow((await client.ask(read("00000000000002"), cjt188.decode))[0])
    assert before > Decimal("7.00")
    ack, _ = await client.ask(valve("00000000000002", open_valve=False), cjt188.decode)
    assert ack.control == 0x84
    assert ack.di == cjt188.DI_VALVE
    clock.advance(hours=5)
    reply, _ = await client.ask(read("00000000000002"), cjt188.decode)
    assert flow(reply) == before
    assert cjt188.metering_values(reply)["valve"]["value"] == "closed"
    await client.ask(valve("00000000000002", open_valve=True), cjt188.decode)
    clock.advance(hours=1)
    assert flow((await client.ask(read("00000000000002"), cjt188.decode))[0]) > before
    await client.close()


async def test_reversed_di_model(site: Site) -> None:
    client = await TcpClient.connect(site, "w")
    reply, _ = await client.ask(read("00000000000003", order="swapped"), cjt188.decode)
    assert reply.di_order == "swapped"
    assert flow(reply) == Decimal("3.00")
    # The standard order reaches this meter as an unknown identifier: abnormal reply.
    refused, _ = await client.ask(read("00000000000003"), cjt188.decode)
    assert refused.control & cjt188.ABNORMAL
    assert refused.di is None
    await client.close()


async def test_read_over_pty(site: Site) -> None:
    path = site.ptys["w"].path
    assert path.startswith("/dev/pts/")
    reply = await asyncio.to_thread(pty_ask, path, read("00000000000001"), cjt188.decode, (2400, "E"))
    assert reply is not None
    assert flow(reply) == Decimal("12.50")


async def test_broadcast_valve_acts_silently(site: Site) -> None:
    client = await TcpClient.connect(site, "w")
    frame = cjt188.build_valve(cjt188.BROADCAST, 0x10, open_valve=False)
    assert await client.silent(cjt188.encode(frame))
    states = [m.state.relay_closed for m in site.bus("w").meters if not m.model.reversed_di]
    assert states == [False, False]
    await client.close()


async def test_time_write_and_read_address(site: Site) -> None:
    client = await TcpClient.connect(site, "w")
    address = cjt188.address_from_display("00000000000001")
    write = cjt188.build_time_write(address, 0x10, datetime(2026, 1, 1, 12, 30, 0), ser=3)
    ack, _ = await client.ask(cjt188.encode(write), cjt188.decode)
    assert (ack.control, ack.di, ack.ser) == (0x84, cjt188.DI_TIME, 3)
    reply, _ = await client.ask(read("00000000000001"), cjt188.decode)
    assert cjt188.metering_values(reply)["meter_time"]["value"] == "2026-01-01T12:30:00"
    bad = replace(write, data=bytes.fromhex("00 00 25 01 01 26 20"))  # 25 o'clock
    refused, _ = await client.ask(cjt188.encode(bad), cjt188.decode)
    assert refused.control & cjt188.ABNORMAL
    # Read address is for a point-to-point line: leave one meter talking.
    site.set_offline("w/00000000000001")
    site.set_offline("w/00000000000003")
    found, _ = await client.ask(cjt188.encode(cjt188.build_read_address(ser=5)), cjt188.decode)
    assert (found.control, found.di, found.ser) == (0x83, cjt188.DI_ADDRESS, 5)
    assert cjt188.address_display(found.address) == "00000000000002"
    await client.close()
