"""The DL/T 645-2007 driver's meter clear 1AH against the simulator, over TCP and over a pty."""

from __future__ import annotations

from decimal import Decimal

import pytest

from libs.events.acquisition import Rate
from libs.protocols.drivers import CommandRejected, driver_for, read_meter
from libs.protocols.simulator.runtime import Site

from .sites import PASSWORD, open_bus


@pytest.mark.parametrize("via", ["tcp", "pty"])
async def test_clear_is_acknowledged_and_the_registers_read_back_zero(site: Site, via: str) -> None:
    driver = driver_for("dlt645-2007", password=PASSWORD)
    state = site.meter("e/000000000003").state
    async with open_bus(site, "e", driver.decode, via) as bus:
        before = await read_meter(bus, driver, "000000000003", ["active_import_kwh"])
        assert before.registers["active_import_kwh"][Rate.TOTAL] == Decimal("300.00")
        ack = await driver.clear(bus, "000000000003", operator="00000042")
        assert (ack.control, ack.error) == (0x9A, False)
        after = await read_meter(bus, driver, "000000000003", ["active_import_kwh", "purchase_count"])
    assert set(after.registers["active_import_kwh"].values()) == {Decimal("0.00")}
    assert after.purchase_count == 3  # the wallet is not the clear's
    assert state.clear_count == 1


async def test_clear_refused_for_a_wrong_password_and_checked_before_sending(site: Site) -> None:
    wrong = driver_for("dlt645-2007", password="02000000")
    async with open_bus(site, "e", wrong.decode) as bus:
        with pytest.raises(CommandRejected, match="unauthorised"):
            await wrong.clear(bus, "000000000001")
        with pytest.raises(ValueError, match="operator must be 8 hex digits"):
            await wrong.clear(bus, "000000000001", operator="op-1")
    assert site.meter("e/000000000001").state.total >= 100.0
    with pytest.raises(NotImplementedError):
        await driver_for("dlt645-1997").clear(bus, "000000000097")
