"""Faults on demand: offline meter, dead concentrator, link manipulation, rollover, replacement."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from libs.protocols import cjt188, dlt645
from libs.protocols.errors import FrameError
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.faults import LinkFault
from libs.protocols.simulator.runtime import Site

from .conftest import TcpClient
from .test_cjt188_meter import read as water_read
from .test_dlt645_meter import A1, A2, read, value


async def test_offline_meter_is_silent_and_comes_back(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    site.set_offline(f"e/{A1}")
    assert await client.silent(read(A1, "00010000"))
    assert (await value(client, A2, "00010000"))["forward_active_energy_total"] == Decimal("100.00")
    site.set_offline(f"e/{A1}", False)
    assert (await value(client, A1, "00010000"))["forward_active_energy_total"] == Decimal("100.00")
    await client.close()


async def test_dead_concentrator_silences_all_its_buses(site: Site) -> None:
    site.set_dead("c1")
    electric = await TcpClient.connect(site, "e")
    water = await TcpClient.connect(site, "w")
    assert await electric.silent(read(A1, "00010000"))
    reply, _ = await water.ask(water_read("00000000000001"), cjt188.decode)  # c2 still alive
    assert reply.di == cjt188.DI_METERING
    site.set_dead("c1", False)
    assert (await value(electric, A1, "00010000"))["forward_active_energy_total"] == Decimal("100.00")
    await electric.close()
    await water.close()


async def read_raw(client: TcpClient, request: bytes, size_hint: int, wait: float = 2.0) -> bytes:
    client.writer.write(request)
    await client.writer.drain()
    buf = b""
    async with asyncio.timeout(wait):
        while len(buf) < size_hint:
            buf += await client.reader.read(256)
    return buf


async def test_corrupted_byte_fails_the_clients_checksum(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    clean = dlt645.encode(dlt645.read_reply(A1, "00010000", Decimal("100.00")), preamble=4)
    site.set_link_fault("e", LinkFault("corrupt", index=-3, mask=0x10, count=1))
    wire = await read_raw(client, read(A1, "00010000"), len(clean))
    assert len(wire) == len(clean)
    assert wire != clean
    with pytest.raises(FrameError) as caught:
        dlt645.decode(wire)
    assert caught.value.fault == "checksum"
    # count=1: the next reply is clean again
    assert (await value(client, A1, "00010000"))["forward_active_energy_total"] == Decimal("100.00")
    await client.close()


async def test_split_and_delayed_replies_still_decode(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    site.set_link_fault("e", LinkFault("split", index=6, seconds=0.3))
    start = time.monotonic()
    assert (await value(client, A1, "00010000"))["forward_active_energy_total"] == Decimal("100.00")
    assert time.monotonic() - start >= 0.3
    site.set_link_fault("e", LinkFault("delay", seconds=0.25))
    start = time.monotonic()
    await value(client, A1, "00010000")
    assert time.monotonic() - start >= 0.25
    site.set_link_fault("e", LinkFault("drop"))
    assert await client.silent(read(A1, "00010000"))
    site.set_link_fault("e", None)
    await value(client, A1, "00010000")
    await client.close()


async def test_register_rollover_wraps_to_zero(site: Site, clock: ManualClock) -> None:
    client = await TcpClient.connect(site, "e")
    site.rollover(f"e/{A1}", 999999.9)
    assert (await value(client, A1, "00010000"))["forward_active_energy_total"] == Decimal("999999.90")
    clock.advance(hours=2)  # 2 kW-class meter: well over 0.1 kWh
    wrapped = (await value(client, A1, "00010000"))["forward_active_energy_total"]
    assert Decimal("0") <= wrapped < Decimal("10")
    await client.close()


async def test_replaced_meter_restarts_its_registers(site: Site, clock: ManualClock) -> None:
    client = await TcpClient.connect(site, "e")
    clock.advance(hours=1)
    assert (await value(client, A2, "00010000"))["forward_active_energy_total"] > Decimal("100")
    site.replace(f"e/{A2}", new_address="000000000009")
    assert await client.silent(read(A2, "00010000"))
    assert (await value(client, "000000000009", "00010000"))["forward_active_energy_total"] == Decimal("0.00")
    assert (await value(client, "000000000009", "03330201"))["purchase_count"] == 0
    clock.advance(hours=1)
    assert (await value(client, "000000000009", "00010000"))["forward_active_energy_total"] > Decimal("0")
    await client.close()


def test_link_fault_shapes() -> None:
    data = bytes(range(10))
    assert LinkFault("corrupt", index=0, mask=0xFF).apply(data)[0].data[0] == 0xFF
    split = LinkFault("split", index=4, seconds=0.1).apply(data)
    assert [c.data for c in split] == [data[:4], data[4:]]
    assert split[1].pause == 0.1
    assert LinkFault("drop").apply(data) == []
    once = LinkFault("delay", count=1)
    assert once.use()
    assert not once.use()
