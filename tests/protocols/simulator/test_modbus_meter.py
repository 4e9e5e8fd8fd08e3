"""Modbus-RTU prepaid meters over TCP pass-through and a pty, read with the model's register map."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from libs.protocols import modbus
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.runtime import Site

from .conftest import TcpClient, pty_ask

MODEL = modbus.load_model("single_phase_prepaid")


async def read_all(client: TcpClient, unit: int) -> dict[str, Decimal]:
    values: dict[str, Decimal] = {}
    for block, request in modbus.read_requests(MODEL, unit):
        reply, _ = await client.ask(modbus.encode(request), modbus.decode_response)
        values |= modbus.decode_values(block, reply)
    return values


async def test_read_the_models_registers(site: Site) -> None:
    client = await TcpClient.connect(site, "m")
    values = await read_all(client, 2)
    await client.close()
    assert values["active_energy_total"] == Decimal("50.00")
    assert Decimal(210) < values["voltage"] < Decimal(230)
    assert values["remaining_amount"] == Decimal("100.00")
    assert values["purchase_count"] == 0
    assert values["relay_state"] == 1
    assert values["active_power"] > 0


async def test_relay_coil_trips_and_energy_stops(site: Site, clock: ManualClock) -> None:
    client = await TcpClient.connect(site, "m")
    clock.advance(hours=3)
    before = (await read_all(client, 1))["active_energy_total"]
    assert before > Decimal("50.00")
    trip = modbus.encode(modbus.relay_command(MODEL, 1, close=False))
    echo, _ = await client.ask(trip, modbus.decode_response)
    assert echo.function == 5
    clock.advance(hours=3)
    after = await read_all(client, 1)
    assert after["active_energy_total"] == before
    assert after["relay_state"] == 0
    assert after["active_power"] == 0
    await client.close()


async def test_prepaid_balance_runs_down_and_trips_on_arrears(site: Site, clock: ManualClock) -> None:
    meter = site.meter("m/3").state
    meter.balance = 0.5
    clock.advance(hours=12)
    client = await TcpClient.connect(site, "m")
    values = await read_all(client, 3)
    assert values["relay_state"] == 0
    assert values["remaining_amount"] <= 0
    site.meter("m/3").state.recharge(50)
    values = await read_all(client, 3)
    assert values["relay_state"] == 1
    assert values["purchase_count"] == 1
    await client.close()


async def test_unmapped_register_and_unknown_unit(site: Site) -> None:
    client = await TcpClient.connect(site, "m")
    reply, _ = await client.ask(modbus.encode(modbus.read_request(1, 3, 100, 2)), modbus.decode_response)
    assert reply.exception_code == 2
    assert await client.silent(modbus.encode(modbus.read_request(42, 3, 0, 2)))
    await client.close()


async def test_broadcast_write_acts_without_reply(site: Site) -> None:
    client = await TcpClient.connect(site, "m")
    assert await client.silent(modbus.encode(modbus.relay_command(MODEL, 0, close=False)))
    assert not any(m.state.relay_closed for m in site.bus("m").meters)
    await client.close()


async def test_read_over_pty(site: Site) -> None:
    request = modbus.encode(modbus.read_request(1, 3, 0, 2))
    path = site.ptys["m"].path
    reply = await asyncio.to_thread(pty_ask, path, request, modbus.decode_response, (9600, "N"))
    assert reply is not None
    assert reply.registers == (0, 5000)  # 50.00 kWh at scale 0.01, uint32 high word first
