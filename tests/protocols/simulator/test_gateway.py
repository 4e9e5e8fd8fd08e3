"""Modbus-TCP gateway in front of the Modbus-RTU bus: pymodbus's own TCP client, raw MBAP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from pymodbus.client import AsyncModbusTcpClient

from libs.protocols import modbus
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.faults import LinkFault
from libs.protocols.simulator.runtime import Site

from .conftest import site_config

MODEL = modbus.load_model("single_phase_prepaid")


@pytest.fixture
async def gw_site(clock: ManualClock) -> AsyncIterator[Site]:
    config = site_config()
    (bus,) = [b for c in config.concentrators for b in c.buses if b.protocol == "modbus-rtu"]
    bus.modbus_tcp = True
    s = Site(config, clock=clock, seed=1)
    await s.start()
    s.gateways["m"].timeout = 0.3
    try:
        yield s
    finally:
        await s.stop()


async def mbap(site: Site, *adus: modbus.TcpAdu, wait: float = 2.0) -> list[modbus.TcpAdu]:
    """Send ADUs back to back on one connection; one answer each, or those within ``wait``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", site.gateways["m"].port)
    writer.write(b"".join(modbus.encode_tcp(a) for a in adus))
    await writer.drain()
    buf, out = b"", []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while len(out) < len(adus) and (left := deadline - loop.time()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(256), left)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
        while (found := modbus.decode_tcp(buf))[1] is not None:
            buf = buf[found[0] :]
            out.append(found[1])
    writer.close()
    await writer.wait_closed()
    return out


async def test_pymodbus_tcp_client_reads_through_the_gateway(gw_site: Site) -> None:
    assert gw_site.endpoints()[1]["modbus_tcp"] == f"127.0.0.1:{gw_site.gateways['m'].port}"
    client = AsyncModbusTcpClient("127.0.0.1", port=gw_site.gateways["m"].port, timeout=2, retries=0)
    await client.connect()
    try:
        values: dict[str, Decimal] = {}
        for block in modbus.plan_reads(MODEL):
            read = client.read_holding_registers if block.function == 3 else client.read_input_registers
            response = await read(block.start, count=block.count, device_id=2)
            assert not response.isError()
            rtu = modbus.read_response(2, block.function, list(response.registers))
            values |= modbus.decode_values(block, rtu)
        assert values["active_energy_total"] == Decimal("50.00")
        assert values["relay_state"] == 1
        trip = await client.write_coil(MODEL.relay["register"], False, device_id=2)
        assert not trip.isError()
        assert not gw_site.meter("m/2").state.relay_closed
    finally:
        client.close()


async def test_transaction_ids_exceptions_and_broadcast(gw_site: Site) -> None:
    read = modbus.read_request(1, 3, 0, 2)
    unmapped = modbus.read_request(1, 3, 100, 2)
    nobody = modbus.read_request(42, 3, 0, 2)
    answers = await mbap(
        gw_site,
        modbus.TcpAdu(0x1234, 1, read.pdu),
        modbus.TcpAdu(7, 1, unmapped.pdu),
        modbus.TcpAdu(8, 42, nobody.pdu),
    )
    assert [(a.transaction, a.unit) for a in answers] == [(0x1234, 1), (7, 1), (8, 42)]
    assert answers[0].pdu == bytes.fromhex("03 04 00 00 13 88")  # 50.00 kWh at scale 0.01
    assert answers[1].pdu == bytes.fromhex("83 02")  # the meter's exception, passed through
    assert answers[2].pdu == bytes.fromhex("83 0B")  # gateway: target device failed to respond
    trip = modbus.relay_command(MODEL, 0, close=False)
    assert await mbap(gw_site, modbus.TcpAdu(9, 0, trip.pdu), wait=0.4) == []
    assert not any(m.state.relay_closed for m in gw_site.bus("m").meters)


async def test_corrupted_rtu_reply_becomes_gateway_exception(gw_site: Site) -> None:
    gw_site.set_link_fault("m", LinkFault("corrupt", count=1))
    read = modbus.read_request(3, 3, 0, 2)
    first, second = await mbap(gw_site, modbus.TcpAdu(1, 3, read.pdu), modbus.TcpAdu(2, 3, read.pdu))
    assert first.pdu == bytes.fromhex("83 0B")
    assert second.pdu[:2] == bytes.fromhex("03 04")


def test_mbap_codec() -> None:
    wire = bytes.fromhex("00 01 00 00 00 06 11 03 00 6B 00 03")  # Modbus TCP spec example
    consumed, adu = modbus.decode_tcp(wire + b"\x00\x02")
    assert (consumed, adu) == (12, modbus.TcpAdu(1, 0x11, bytes.fromhex("03 00 6B 00 03")))
    assert modbus.encode_tcp(adu) == wire
    assert modbus.decode_tcp(wire[:-1]) == (0, None)
    assert modbus.rtu_from_tcp(adu) == bytes.fromhex("11 03 00 6B 00 03 76 87")
    with pytest.raises(modbus.FrameError):
        modbus.decode_tcp(bytes.fromhex("00 01 00 01 00 06 11 03 00 6B 00 03"))
    with pytest.raises(modbus.FrameError):
        modbus.decode_tcp(bytes.fromhex("00 01 00 00 01 00 11"))
