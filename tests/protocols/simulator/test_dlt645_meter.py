"""DL/T 645-2007 meters over TCP pass-through and a pty: reads, relay control, time sync."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

from libs.protocols import dlt645
from libs.protocols.dlt645 import RelayAction
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.runtime import Site

from .conftest import TcpClient, pty_ask

A1, A2 = "000000000001", "000000000002"
PASSWORD = "00123456"  # the test model's


def read(address: str, di: str) -> bytes:
    return dlt645.encode(dlt645.read(address, di), preamble=4)


def relay(
    address: str, action: RelayAction, password: str = PASSWORD, until: datetime = datetime(2026, 1, 2)
) -> bytes:
    return dlt645.encode(dlt645.relay_control(address, action, until, password=password))


async def value(client: TcpClient, address: str, di: str) -> dict:
    reply, _ = await client.ask(read(address, di), dlt645.decode)
    assert reply.reply, reply
    assert not reply.error, reply
    return {k: v for k, (v, _unit) in dlt645.values(reply).items()}


async def test_read_energy_and_instant_values(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    assert (await value(client, A1, "00010000")) == {"forward_active_energy_total": Decimal("100.00")}
    block = await value(client, A1, "0001FF00")
    rates = [block[f"forward_active_energy_{r}"] for r in ("sharp", "peak", "flat", "valley")]
    assert abs(sum(rates) - block["forward_active_energy_total"]) < Decimal("0.05")
    volts = await value(client, A2, "02010100")
    assert Decimal(210) < volts["voltage_a"] < Decimal(230)
    assert Decimal("49.9") < (await value(client, A2, "02800002"))["frequency"] < Decimal("50.1")
    assert (await value(client, A1, "04000102"))["meter_time"] == "16:00:00"
    assert (await value(client, A1, "00900200"))["remaining_amount"] == Decimal("100.00")
    status = await value(client, A1, "04000503")
    assert status["relay_open"] is False
    assert status["meter_type"] == "money-prepaid"
    await client.close()


async def test_energy_advances_with_the_clock_and_relay_trip_stops_it(site: Site, clock: ManualClock) -> None:
    client = await TcpClient.connect(site, "e")
    clock.advance(hours=1)
    first = (await value(client, A2, "00010000"))["forward_active_energy_total"]
    assert first > Decimal("100.00")
    ack, _ = await client.ask(relay(A2, RelayAction.TRIP), dlt645.decode)
    assert ack.control == 0x9C
    assert not ack.error
    assert (await value(client, A2, "04000503"))["relay_open"] is True
    clock.advance(hours=6)
    assert (await value(client, A2, "00010000"))["forward_active_energy_total"] == first
    assert (await value(client, A2, "02020100"))["current_a"] == Decimal("0.000")
    await client.ask(relay(A2, RelayAction.CLOSE_ALLOWED), dlt645.decode)
    clock.advance(hours=1)
    assert (await value(client, A2, "00010000"))["forward_active_energy_total"] > first
    await client.close()


async def test_relay_refuses_wrong_password_and_expired_commands(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    bad, _ = await client.ask(relay(A1, RelayAction.TRIP, password="02000000"), dlt645.decode)
    assert bad.error
    assert bad.error_code == 0x04
    late, _ = await client.ask(relay(A1, RelayAction.TRIP, until=datetime(2025, 12, 31)), dlt645.decode)
    assert late.error
    assert site.meter(f"e/{A1}").state.relay_closed
    await client.ask(relay(A1, RelayAction.KEEP_POWER), dlt645.decode)
    blocked, _ = await client.ask(relay(A1, RelayAction.TRIP), dlt645.decode)
    assert blocked.error
    assert site.meter(f"e/{A1}").state.relay_closed
    await client.close()


async def test_broadcast_time_sync_sets_every_clock_silently(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    site.drift(f"e/{A1}", offset_s=-300)
    assert (await value(client, A1, "04000102"))["meter_time"] == "15:55:00"
    sync = dlt645.encode(dlt645.broadcast_time(datetime(2026, 1, 1, 16, 0, 30)))
    assert await client.silent(sync)
    for address in (A1, A2):
        assert (await value(client, address, "04000102"))["meter_time"] == "16:00:30"
    await client.close()


async def test_clock_drift_and_daily_freeze(site: Site, clock: ManualClock) -> None:
    site.drift(f"e/{A1}", ppm=100)
    clock.advance(timedelta(days=2).total_seconds())  # two local midnights pass
    client = await TcpClient.connect(site, "e")
    # 100 ppm over two days is 17.28 s fast
    assert (await value(client, A1, "04000102"))["meter_time"] == "16:00:17"
    frozen = await value(client, A1, "05060101")
    stamp = await value(client, A1, "05060001")
    assert stamp["daily_frozen_time"].startswith("2026-01-03 00:00")
    total = (await value(client, A1, "00010000"))["forward_active_energy_total"]
    assert Decimal("100") < frozen["daily_frozen_forward_active_energy_total"] < total
    await client.close()


async def test_unknown_di_gets_an_error_reply(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    reply, _ = await client.ask(read(A1, "0001FF0C"), dlt645.decode)  # no 12th settlement yet
    assert reply.error
    assert reply.error_code == 0x02
    await client.close()


async def test_read_over_pty(site: Site) -> None:
    reply = await asyncio.to_thread(
        pty_ask, site.ptys["e"].path, read(A1, "00010000"), dlt645.decode, (2400, "E")
    )
    assert reply is not None
    assert dlt645.values(reply)["forward_active_energy_total"][0] == Decimal("100.00")


async def test_dlt645_1997_meter_reads_and_time_sync(site: Site) -> None:
    from libs.protocols import dlt645_1997

    client = await TcpClient.connect(site, "e97")
    request = dlt645_1997.encode(dlt645_1997.read("000000000097", "9010"))
    reply, _ = await client.ask(request, dlt645_1997.decode)
    assert dlt645_1997.values(reply)["forward_active_energy_total"][0] == Decimal("42.00")
    sync = dlt645_1997.encode(dlt645_1997.broadcast_time(datetime(2026, 1, 1, 12, 0, 0)))
    assert await client.silent(sync)
    reply, _ = await client.ask(
        dlt645_1997.encode(dlt645_1997.read("000000000097", "C011")), dlt645_1997.decode
    )
    assert dlt645_1997.values(reply)["meter_time"][0] == "12:00:00"
    await client.close()
