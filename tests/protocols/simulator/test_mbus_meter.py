"""EN 13757-3 M-Bus meters (sites/mbus.toml, 2400 8E1) over TCP pass-through and a pty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

import libs.protocols.simulator as simulator
from libs.protocols import mbus
from libs.protocols.errors import FrameError
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.runtime import Site
from libs.protocols.simulator.site import load_site

from .conftest import TcpClient, pty_ask

SITE_FILE = Path(simulator.__file__).with_name("sites") / "mbus.toml"


@pytest.fixture
async def mbus_site(clock: ManualClock) -> AsyncIterator[Site]:
    s = Site(load_site(SITE_FILE), clock=clock, seed=1)
    await s.start(pty=True)
    try:
        yield s
    finally:
        await s.stop()


def req_ud2(address: int, fcb: bool = False) -> bytes:
    return mbus.encode(mbus.request_ud2(address, fcb))


async def listen(client: TcpClient, seconds: float) -> bytes:
    """Every byte that arrives within ``seconds``."""
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            data += await asyncio.wait_for(client.reader.read(256), left)
        except TimeoutError:
            break
    return data


def record_values(frame: mbus.MBusFrame) -> dict[str, object]:
    return {r.name: r.value for r in frame.records}


async def test_req_ud2_answers_rsp_ud_with_water_records(mbus_site: Site, clock: ManualClock) -> None:
    client = await TcpClient.connect(mbus_site, "mbus-b1")
    reply, _ = await client.ask(req_ud2(1), mbus.decode)
    assert (reply.kind, reply.control, reply.address, reply.ci) == ("long", mbus.RSP_UD, 1, 0x72)
    header = reply.header
    assert (header.ident, header.manufacturer, header.medium, header.status) == ("12345601", "MFW", 0x07, 0)
    values = record_values(reply)
    assert values["volume"] == Decimal("35.200")
    assert values["volume_flow"] > 0
    assert values["fabrication_no"] == 12345601
    assert values["date_time"] == "2026-01-01T16:00"  # 08:00Z at UTC+8
    assert mbus.describe(reply)["header"]["medium"] == "water"
    clock.advance(hours=3)
    later, _ = await client.ask(req_ud2(1, fcb=True), mbus.decode)
    assert record_values(later)["volume"] > Decimal("35.200")
    assert record_values(later)["date_time"] == "2026-01-01T19:00"
    await client.close()


async def test_heat_meter_records(mbus_site: Site) -> None:
    client = await TcpClient.connect(mbus_site, "mbus-b1")
    reply, _ = await client.ask(req_ud2(3), mbus.decode)
    await client.close()
    assert reply.header.medium == 0x04
    assert reply.header.manufacturer == "MFH"
    values = record_values(reply)
    assert values["energy"] == Decimal("4210000")  # Wh: VIF 06 is kWh
    assert values["volume"] == Decimal("180.997")  # 4210 kWh at 23.26 kWh/m³
    assert values["flow_temperature"] == Decimal("60.0")
    assert values["return_temperature"] == Decimal("40.0")
    assert values["power"] > 0


async def test_fcb_repeat_and_snd_nke(mbus_site: Site) -> None:
    client = await TcpClient.connect(mbus_site, "mbus-b1")
    ack, _ = await client.ask(mbus.encode(mbus.snd_nke(2)), mbus.decode)
    assert ack.kind == "ack"
    first, _ = await client.ask(req_ud2(2, fcb=True), mbus.decode)
    second, _ = await client.ask(req_ud2(2, fcb=False), mbus.decode)
    assert second.header.access_no == first.header.access_no + 1
    # Same FCB again: the master lost the reply; the meter repeats the same telegram.
    again, _ = await client.ask(req_ud2(2, fcb=False), mbus.decode)
    assert again == second
    assert again.header.access_no == second.header.access_no
    await client.close()


async def test_broadcasts_and_collisions(mbus_site: Site) -> None:
    client = await TcpClient.connect(mbus_site, "mbus-b1")
    assert await client.silent(mbus.encode(mbus.snd_nke(mbus.BROADCAST)), wait=0.3)
    assert await client.silent(req_ud2(42), wait=0.3)  # nobody has address 42
    # FE on a shared bus: every meter answers at once and the master hears the wired AND.
    client.writer.write(req_ud2(mbus.BROADCAST_REPLY))
    garbled = await listen(client, 0.7)
    assert mbus_site.bus("mbus-b1").collisions == 1
    with pytest.raises(FrameError):
        mbus.decode(garbled)
    await client.close()
    # FE on a point-to-point line reaches its one meter whatever its primary address.
    p2p = await TcpClient.connect(mbus_site, "mbus-p2p")
    reply, _ = await p2p.ask(req_ud2(mbus.BROADCAST_REPLY), mbus.decode)
    assert (reply.address, reply.header.ident) == (0, "32345600")
    await p2p.close()


async def test_set_primary_address(mbus_site: Site) -> None:
    client = await TcpClient.connect(mbus_site, "mbus-b1")
    ack, _ = await client.ask(mbus.encode(mbus.set_primary_address(2, 7)), mbus.decode)
    assert ack.kind == "ack"
    assert await client.silent(req_ud2(2), wait=0.3)
    reply, _ = await client.ask(req_ud2(7), mbus.decode)
    assert (reply.address, reply.header.ident) == (7, "12345602")
    await client.close()


async def test_read_over_pty(mbus_site: Site) -> None:
    path = mbus_site.ptys["mbus-b1"].path
    reply = await asyncio.to_thread(pty_ask, path, req_ud2(4), mbus.decode, (2400, "E"))
    assert reply is not None
    assert reply.header.ident == "22345604"
    assert record_values(reply)["energy"] == Decimal("1880000")


def test_site_file_and_address_validation() -> None:
    site = load_site(SITE_FILE)
    buses = [bus for conc in site.concentrators for bus in conc.buses]
    assert {bus.link.label() for bus in buses} == {"2400 8E1"}
    data = site.model_dump(mode="json")
    data["concentrators"][0]["buses"][0]["meters"][0]["address"] = "251"
    with pytest.raises(ValueError, match="primary address"):
        type(site).model_validate(data)
