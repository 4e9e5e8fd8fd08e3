"""The simulated DL/T 645-2007 meter carries out meter clear 1AH like a real one: over the wire,
at line speed, with the model's password; what the clear zeroes and what it keeps."""

from __future__ import annotations

from decimal import Decimal

from libs.protocols import dlt645
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.runtime import Site

from .conftest import FAST, TcpClient

A1, A2 = "000000000001", "000000000002"
PASSWORD = "00123456"  # the test model's


async def read(client: TcpClient, address: str, di: str) -> dlt645.Frame:
    reply, _ = await client.ask(dlt645.encode(dlt645.read(address, di), preamble=4), dlt645.decode)
    return reply


async def test_clear_zeroes_energy_and_freezes_and_keeps_wallet_relay_and_settings(
    site: Site, clock: ManualClock
) -> None:
    meter = site.meter(f"e/{A1}")
    state = meter.state
    clock.advance(days=2)  # past two midnights: daily freezes exist
    state.freeze_now()
    state.recharge(50.0)
    state.settings["alarm_amount_1_limit"] = Decimal("25.00")
    before = (state.balance, state.purchases, dict(state.tariff_prices))
    assert state.total > 100 and state.frozen_daily and state.frozen_instant
    client = await TcpClient.connect(site, "e")
    request = dlt645.encode(dlt645.meter_clear(A1, PASSWORD, "00000042"), preamble=4)
    reply, elapsed = await client.ask(request, dlt645.decode)
    assert (reply.control, reply.data) == (0x9A, b"")
    reply_len = len(dlt645.encode(reply, preamble=4))
    floor = (len(request) + reply_len) * site.bus("e").link.char_time + FAST[0] / 1000
    assert floor <= elapsed < floor + 0.5  # request and reply clocked at 2400 8E1, then the delay
    assert (state.total, state.reactive, set(state.rates.values())) == (0.0, 0.0, {0.0})
    assert not state.frozen_daily and not state.frozen_monthly and not state.frozen_instant
    assert state.clear_count == 1
    assert (state.balance, state.purchases, state.tariff_prices) == before  # 1AH names no wallet
    assert state.relay_closed and state.settings["alarm_amount_1_limit"] == Decimal("25.00")
    energy = dlt645.values(await read(client, A1, "0001FF00"))
    assert {value for value, _unit in energy.values()} == {Decimal("0.00")}
    daily = await read(client, A1, "05060101")
    assert daily.error and daily.error_code == 0x02  # no freezes left to read
    clock.advance(hours=1)  # counting starts again from zero
    energy = dlt645.values(await read(client, A1, "00010000"))
    assert Decimal(0) < energy["forward_active_energy_total"][0] < Decimal(5)
    await client.close()


async def test_wrong_password_is_refused_with_dah_and_clears_nothing(site: Site) -> None:
    state = site.meter(f"e/{A2}").state
    total = state.total
    client = await TcpClient.connect(site, "e")
    reply, _ = await client.ask(dlt645.encode(dlt645.meter_clear(A2, "02000000")), dlt645.decode)
    assert (reply.control, reply.error_code) == (0xDA, 0x04)  # ERR bit 2: password wrong
    short = dlt645.Frame(A2, dlt645.Function.EVENT_CLEAR, bytes(12))  # 1BH: no event records kept
    refused, _ = await client.ask(dlt645.encode(short), dlt645.decode)
    assert (refused.control, refused.error_code) == (0xDB, 0x01)
    await client.close()
    assert state.total >= total and state.clear_count == 0
