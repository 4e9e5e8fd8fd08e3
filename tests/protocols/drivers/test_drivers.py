"""Drivers end to end against the simulator, over TCP pass-through and over a pty."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from typing import cast

import pytest

from libs.events.acquisition import Rate, SwitchState
from libs.protocols import mbus
from libs.protocols.drivers import CommandRejected, driver_for, read_meter
from libs.protocols.drivers.base import MeterRead
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.dlt645_meter import Dlt645Meter
from libs.protocols.simulator.runtime import Site
from libs.protocols.transaction import Bus
from libs.protocols.transport import LineSettings, TcpTransport

from .sites import PASSWORD, open_bus

ELECTRIC = ["active_import_kwh", "voltage_a_v", "current_a_a", "power_kw"]


@pytest.mark.parametrize("via", ["tcp", "pty"])
async def test_dlt645_2007_read_matches_meter_state(site: Site, via: str) -> None:
    driver = driver_for("dlt645-2007", password=PASSWORD)
    meter = cast(Dlt645Meter, site.meter("e/000000000002"))
    async with open_bus(site, "e", driver.decode, via) as bus:
        read = await read_meter(
            bus, driver, "000000000002", [*ELECTRIC, "meter_time", "relay", "remaining_fen", "purchase_count"]
        )
    energy = read.registers["active_import_kwh"]
    assert energy[Rate.TOTAL] == meter.quantity("forward_active_energy_total") == Decimal("200.00")
    for rate in ("sharp", "peak", "flat", "valley"):
        assert energy[Rate(rate)] == meter.quantity(f"forward_active_energy_{rate}")
    assert read.instant == {
        "voltage_a_v": meter.quantity("voltage_a", 1),
        "current_a_a": meter.quantity("current_a", 3),
        "power_kw": meter.quantity("active_power_total", 4),
    }
    assert read.meter_time == meter.state.meter_time()
    assert read.relay == SwitchState.CLOSED
    assert read.remaining_fen == 10000 and read.purchase_count == 2
    # energy block, voltage/current/power phase blocks, date, time, status word 3, amount, count
    assert bus.stats.transactions == 9


@pytest.mark.parametrize("via", ["tcp", "pty"])
async def test_modbus_read_matches_meter_state(site: Site, via: str) -> None:
    driver = driver_for("modbus-rtu", model="single_phase_prepaid")
    values = site.meter("m/1").values()  # type: ignore[attr-defined]
    async with open_bus(site, "m", driver.decode, via) as bus:
        read = await read_meter(bus, driver, "1", [*ELECTRIC, "remaining_fen", "purchase_count", "relay"])
        assert bus.stats.transactions == 2  # registers 0-4 and 16-19
    assert read.registers == {"active_import_kwh": {Rate.TOTAL: values["active_energy_total"]}}
    assert read.instant["voltage_a_v"] == values["voltage"]
    assert read.instant["current_a_a"] == values["current"]
    # the map keeps whole watts in an int16: the driver converts to kW
    assert read.instant["power_kw"] == values["active_power"].to_integral_value() / 1000
    assert read.remaining_fen == 1234 and read.purchase_count == 4
    assert read.relay == SwitchState.CLOSED


async def test_modbus_three_phase_tou_model(site: Site) -> None:
    driver = driver_for("modbus-rtu", model="three_phase_multifunction")
    values = site.meter("m/2").values()  # type: ignore[attr-defined]
    async with open_bus(site, "m", driver.decode) as bus:
        read = await read_meter(bus, driver, "2")
    energy = read.registers["active_import_kwh"]
    assert energy[Rate.TOTAL] == values["active_energy_total"] == Decimal("777.00")
    assert energy[Rate.PEAK] == values["active_energy_peak"]
    assert read.instant["voltage_c_v"] == values["voltage_l3"]
    assert read.instant["frequency_hz"] == values["frequency"]


@pytest.mark.parametrize(
    ("via", "address", "order"), [("tcp", "00000000000001", "standard"), ("pty", "00000000000003", "swapped")]
)
async def test_cjt188_read_per_model_di_order(site: Site, via: str, address: str, order: str) -> None:
    driver = driver_for("cjt188", meter_type=0x10, di_order=order)
    state = site.meter(f"w/{address}").state
    async with open_bus(site, "w", driver.decode, via) as bus:
        read = await read_meter(bus, driver, address)
    assert read.registers["volume_m3"][Rate.TOTAL] == Decimal(str(state.total)).quantize(Decimal("0.01"))
    assert read.valve == SwitchState.OPEN
    assert read.meter_time == state.meter_time()
    assert not read.errors


async def test_cjt188_wrong_di_order_is_reported_not_crashed(site: Site) -> None:
    driver = driver_for("cjt188", di_order="standard")
    async with open_bus(site, "w", driver.decode) as bus:
        read = await read_meter(bus, driver, "00000000000003")  # a reversed-DI meter
    assert "901F" in read.errors and not read.registers


async def test_dlt645_1997_read(site: Site) -> None:
    driver = driver_for("dlt645-1997")
    meter = cast(Dlt645Meter, site.meter("e97/000000000097"))
    async with open_bus(site, "e97", driver.decode) as bus:
        read = await read_meter(bus, driver, "000000000097", [*ELECTRIC, "relay", "meter_time"])
    assert read.registers["active_import_kwh"][Rate.TOTAL] == Decimal("42.00")
    assert read.instant["voltage_a_v"] == meter.quantity("voltage_a", 0)
    assert read.relay == SwitchState.CLOSED
    assert read.meter_time == meter.state.meter_time()


async def test_dlt645_relay_trip_acknowledged_and_read_back(site: Site) -> None:
    driver = driver_for("dlt645-2007", password=PASSWORD)
    async with open_bus(site, "e", driver.decode) as bus:
        ack = await driver.relay(bus, "000000000001", close=False)
        assert ack.control == 0x9C and not ack.error
        assert await driver.relay_state(bus, "000000000001") == SwitchState.OPEN
        assert site.meter("e/000000000001").state.relay_closed is False
        await driver.relay(bus, "000000000001", close=True)
        assert await driver.relay_state(bus, "000000000001") == SwitchState.CLOSED


async def test_dlt645_relay_wrong_password_rejected(site: Site) -> None:
    driver = driver_for("dlt645-2007", password="02000000")
    async with open_bus(site, "e", driver.decode) as bus:
        with pytest.raises(CommandRejected, match="unauthorised"):
            await driver.relay(bus, "000000000001", close=False)
    assert site.meter("e/000000000001").state.relay_closed is True


async def test_modbus_relay_trip_confirmed(site: Site) -> None:
    driver = driver_for("modbus-rtu", model="single_phase_prepaid")
    async with open_bus(site, "m", driver.decode, "pty") as bus:
        echo = await driver.relay(bus, "1", close=False)
        assert echo.function == 5 and echo.exception_code is None
        assert await driver.relay_state(bus, "1") == SwitchState.OPEN


async def test_cjt188_valve_close_confirmed(site: Site) -> None:
    driver = driver_for("cjt188")
    async with open_bus(site, "w", driver.decode) as bus:
        ack = await driver.valve(bus, "00000000000001", open_valve=False)
        assert ack.control == 0x84
        assert await driver.valve_state(bus, "00000000000001") == SwitchState.CLOSED
        await driver.valve(bus, "00000000000001", open_valve=True)
        assert await driver.valve_state(bus, "00000000000001") == SwitchState.OPEN


async def test_broadcast_time_sync_sets_every_meter_clock(site: Site, clock: ManualClock) -> None:
    driver = driver_for("dlt645-2007")
    target = clock.now() + timedelta(hours=3, minutes=7)
    async with open_bus(site, "e", driver.decode) as bus:
        await driver.sync_time(bus, target)
        for address in ("000000000001", "000000000003"):
            assert await driver.meter_time(bus, address) == target.replace(microsecond=0)


def test_plans_use_block_reads_and_refuse_unknown_names() -> None:
    plan = driver_for("dlt645-2007").plan("000000000001", ["active_import_kwh", "voltage_a_v", "voltage_b_v"])
    assert [r.label for r in plan] == ["0001FF00", "0201FF00"]
    assert plan[0].reply_size == 4 + 12 + 4 + 20
    with pytest.raises(ValueError, match="unknown quantities"):
        driver_for("dlt645-2007").plan("000000000001", ["kwh"])
    with pytest.raises(ValueError, match="cannot read"):
        driver_for("dlt645-1997").plan("000000000001", ["remaining_fen"])
    with pytest.raises(KeyError, match="known"):
        driver_for("iec62056")


async def test_mbus_req_ud2_over_tcp() -> None:
    """M-Bus is not simulated yet: a one-meter slave built from the codec answers REQ_UD2."""
    header = mbus.MBusHeader("12345678", "ABB", 1, 0x07, 1, 0, 0)
    records = (
        mbus.encode_record(b"\x13", 123456)  # volume, 10^-3 m3
        + mbus.encode_record(b"\x3b", 250)  # volume flow, 10^-3 m3/h
        + mbus.encode_record(b"\x13", 120000, storage=1)  # a stored value: not current
    )
    reply = mbus.encode(mbus.build_rsp_ud(5, header, records))

    finished = asyncio.Event()

    async def slave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        try:
            while data := await reader.read(64):
                buf += data
                consumed, frame = mbus.decode(buf)
                buf = buf[consumed:]
                if frame is not None and frame.address == 5:
                    writer.write(reply)
                    await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()
            finished.set()

    server = await asyncio.start_server(slave, "127.0.0.1", 0)
    transport = TcpTransport("127.0.0.1", server.sockets[0].getsockname()[1], LineSettings(2400, 8, "E", 1))
    await transport.open()
    try:
        driver = driver_for("mbus")
        bus = Bus(transport, driver.decode)
        read: MeterRead = await read_meter(bus, driver, "5")
    finally:
        await transport.close()
        await asyncio.wait_for(finished.wait(), 2)
        server.close()
        await server.wait_closed()
    assert read.registers == {"volume_m3": {Rate.TOTAL: Decimal("123.456")}}
    assert read.instant == {"flow_m3h": Decimal("0.250")}


def test_meter_read_fits_reading_recorded() -> None:
    from libs.events.acquisition import ReadingRecorded, Route

    read = MeterRead(
        registers={"active_import_kwh": {Rate.TOTAL: Decimal("1.5")}}, instant={"power_kw": Decimal(1)}
    )
    event = ReadingRecorded(
        project_id="p1",
        subject_id="m1",
        meter_id="m1",
        registers=read.registers,
        instant=read.instant,
        received_at=datetime.now().astimezone(),
        route=Route(concentrator_id="c1", bus_id="b1"),
    )
    assert event.registers["active_import_kwh"][Rate.TOTAL] == Decimal("1.5")
