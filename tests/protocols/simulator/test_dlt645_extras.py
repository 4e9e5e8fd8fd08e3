"""DL/T 645-2007 meter extras: follow-up frames 12H, write 14H, freeze 16H, baud change 17H."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import serial

from libs.protocols import catalogue, dlt645
from libs.protocols.dlt645 import Frame
from libs.protocols.simulator import control
from libs.protocols.simulator.runtime import Site

from .conftest import TcpClient, pty_ask

A1, A2, A3 = "000000000001", "000000000002", "000000000003"
PASSWORD = "00123456"  # the test model's


async def ask(client: TcpClient, frame: Frame) -> Frame:
    reply, _ = await client.ask(dlt645.encode(frame, preamble=4), dlt645.decode)
    assert reply.reply
    return reply


def write(address: str, di: str, value: object, password: str = PASSWORD) -> Frame:
    return dlt645.write(address, di, catalogue.encode_data(di, value), password=password)


async def test_long_reply_comes_in_follow_up_frames(site: Site) -> None:
    meter = site.meter(f"e/{A3}")
    meter.model = meter.model.model_copy(update={"max_reply_data": 16})  # a small-frame model
    client = await TcpClient.connect(site, "e")
    first = await ask(client, dlt645.read(A3, "0001FF00"))
    assert (first.control, first.more, len(first.data)) == (0xB1, True, 16)
    assert "part" in dlt645.values(first)
    follow = await ask(client, dlt645.read_follow(A3, "0001FF00", 1))
    assert (follow.control, follow.more, follow.data[-1]) == (0x92, False, 1)
    block = dlt645.join_parts([first, follow])
    rates = [block[f"forward_active_energy_{r}"][0] for r in ("sharp", "peak", "flat", "valley")]
    assert abs(sum(rates) - block["forward_active_energy_total"][0]) < Decimal("0.05")
    beyond = await ask(client, dlt645.read_follow(A3, "0001FF00", 2))
    assert beyond.error and beyond.error_code == 0x02
    whole = await ask(client, dlt645.read(A1, "0001FF00"))  # a 200-byte model: one frame
    assert not whole.more and dlt645.values(whole) == block
    await client.close()


async def test_write_prices_and_limits_with_password(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    ok = await ask(client, write(A1, "04050102", Decimal("1.2345")))
    assert (ok.control, ok.data) == (0x94, b"")
    prices = dlt645.values(await ask(client, dlt645.read(A1, "040501FF")))
    assert prices["tariff_price_peak"] == (Decimal("1.2345"), "yuan/kWh")
    assert prices["tariff_price_valley"][0] == Decimal("0.6000")  # the site price
    assert site.meter(f"e/{A1}").state.tariff_prices == {"peak": 1.2345}
    await ask(client, write(A1, "04001001", Decimal("50.00")))
    limit = dlt645.values(await ask(client, dlt645.read(A1, "04001001")))
    assert limit["alarm_amount_1_limit"][0] == Decimal("50.00")
    await client.close()
    # The refusals straight at the meter (same codec path, no wire time).
    meter = site.meter(f"e/{A1}")
    refusals = {
        "wrong password": (write(A1, "04001002", Decimal(1), password="02000000"), 0x04),
        "unknown DI": (dlt645.write(A1, "04009999", b"\x00\x00\x00\x00", password=PASSWORD), 0x02),
        "read-only DI": (write(A1, "00010000", Decimal(0)), 0x04),
        "not BCD": (dlt645.write(A1, "04001002", b"\xaa\x00\x00\x00", password=PASSWORD), 0x01),
    }
    for why, (request, code) in refusals.items():
        _, heard = dlt645.decode(dlt645.encode(request))
        _, reply = dlt645.decode(meter.handle(heard) or b"")
        assert reply is not None and (reply.control, reply.error_code) == (0xD4, code), why
    assert site.meter(f"e/{A1}").state.settings == {
        "tariff_price_peak": Decimal("1.2345"),
        "alarm_amount_1_limit": Decimal("50.00"),
    }


async def test_freeze_now_addressed_and_broadcast(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    ack = await ask(client, dlt645.freeze(A1))
    assert (ack.control, ack.error) == (0x96, False)
    frozen = dlt645.values(await ask(client, dlt645.read(A1, "05010101")))
    assert frozen["instant_frozen_forward_active_energy_total"][0] == Decimal("100.00")
    stamp = dlt645.values(await ask(client, dlt645.read(A1, "05010001")))
    assert stamp["instant_frozen_time"][0] == "2026-01-01 16:00"
    assert await client.silent(dlt645.encode(dlt645.freeze(dlt645.BROADCAST)), wait=0.3)
    assert [len(m.state.frozen_instant) for m in site.bus("e").meters] == [2, 1, 1]
    await client.close()


async def test_baud_change_replies_then_listens_at_the_new_speed(site: Site) -> None:
    client = await TcpClient.connect(site, "e")
    refused = await ask(client, Frame(A3, dlt645.Function.CHANGE_BAUD, b"\x03"))  # two bits: no speed
    assert refused.error and refused.error_code == 0x08
    reply = await ask(client, dlt645.change_baud(A3, 9600))
    assert (reply.control, dlt645.requested_baud(reply)) == (0x97, 9600)
    assert await client.silent(dlt645.encode(dlt645.read(A3, "00010000")), wait=0.3)
    # The concentrator follows: at 9600 only meter 3 hears it.
    assert control.apply(site, {"op": "line", "bus": "e", "baud": 9600}) == {"ok": True}
    assert not (await ask(client, dlt645.read(A3, "00010000"))).error
    assert await client.silent(dlt645.encode(dlt645.read(A1, "00010000")), wait=0.3)
    site.set_line_speed("e", 2400)
    await client.close()
    # A pty client is heard at the speed it sets with pyserial.
    path = site.ptys["e"].path
    read3 = dlt645.encode(dlt645.read(A3, "00010000"))
    assert await asyncio.to_thread(pty_ask, path, read3, dlt645.decode, (9600, "E"), 0.5) is not None
    slow = await asyncio.to_thread(
        pty_session, path, 2400, [read3, dlt645.encode(dlt645.read(A1, "00010000"))]
    )
    assert slow[0] is None and slow[1] is not None


def pty_session(path: str, baud: int, requests: list[bytes]) -> list[Frame | None]:
    """One pyserial session (reopening a pty at an unchanged speed fails in pyserial)."""
    replies: list[Frame | None] = []
    with serial.Serial(path, baudrate=baud, parity="E", timeout=0.05) as port:
        for request in requests:
            port.write(request)
            buf, frame, deadline = b"", None, time.monotonic() + 0.35
            while frame is None and time.monotonic() < deadline:
                buf += port.read(64)
                consumed, frame = dlt645.decode(buf)
                buf = buf[consumed:]
            replies.append(frame)
    return replies
