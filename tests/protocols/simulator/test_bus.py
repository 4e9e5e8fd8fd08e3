"""Bus behaviour, protocol aside: byte timing, half-duplex addressing, pacing of writes."""

from __future__ import annotations

import asyncio
import time

from libs.protocols import cjt188
from libs.protocols.simulator.bus import write_paced
from libs.protocols.simulator.runtime import Site
from libs.protocols.simulator.site import Link

from .conftest import FAST, TcpClient, pty_ask
from .test_cjt188_meter import read


def test_char_time_of_common_links() -> None:
    assert abs(Link(baud=2400, parity="E").char_time - 11 / 2400) < 1e-12  # 4.583 ms
    assert Link(baud=9600, parity="N").bits_per_char == 10
    assert Link(baud=1200, parity="N", stop_bits=2).bits_per_char == 11


async def test_write_paced_takes_one_char_time_per_byte() -> None:
    stamps: list[tuple[float, int]] = []

    async def write(data: bytes) -> None:
        stamps.append((time.monotonic(), len(data)))

    start = time.monotonic()
    await write_paced(write, bytes(20), 11 / 2400)
    assert sum(n for _, n in stamps) == 20
    assert stamps[-1][0] - start >= 20 * 11 / 2400
    for (at, _), i in zip(stamps, range(len(stamps)), strict=True):
        sent_before = sum(n for _, n in stamps[: i + 1])
        assert at - start >= sent_before * 11 / 2400 - 1e-9


async def test_reply_takes_its_bytes_times_char_time_plus_delay(site: Site) -> None:
    request = read("00000000000001")
    char = site.bus("w").link.char_time
    client = await TcpClient.connect(site, "w")
    reply, elapsed = await client.ask(request, cjt188.decode)
    await client.close()
    reply_len = len(cjt188.encode(reply, preamble=2))
    floor = (len(request) + reply_len) * char + FAST[0] / 1000
    assert elapsed >= floor
    assert elapsed < floor + 0.5  # generous upward slack for a loaded CI machine


async def test_only_the_addressed_meter_answers(site: Site) -> None:
    client = await TcpClient.connect(site, "w")
    # Back-to-back requests to two meters: two replies, in order, each from its meter.
    client.writer.write(read("00000000000002", ser=1) + read("00000000000001", ser=2))
    await client.writer.drain()
    first = await asyncio.wait_for(client._read(cjt188.decode), 2)
    second = await asyncio.wait_for(client._read(cjt188.decode), 2)
    assert [(cjt188.address_display(f.address), f.ser) for f in (first, second)] == [
        ("00000000000002", 1),
        ("00000000000001", 2),
    ]
    assert site.bus("w").transactions == 2
    await client.close()


async def test_unknown_address_gets_silence(site: Site) -> None:
    client = await TcpClient.connect(site, "w")
    assert await client.silent(read("99000000000042"))
    await client.close()


async def test_request_split_across_writes_is_one_frame(site: Site) -> None:
    client = await TcpClient.connect(site, "w")
    request = read("00000000000001")
    client.writer.write(b"\x00\x13" + request[:5])  # garbage, then a partial frame
    await client.writer.drain()
    await asyncio.sleep(0.3)  # silence does not end a frame
    reply, _ = await client.ask(request[5:], cjt188.decode)
    assert cjt188.address_display(reply.address) == "00000000000001"
    await client.close()


async def test_garbage_does_not_kill_the_bus(site: Site) -> None:
    client = await TcpClient.connect(site, "w")
    # Line noise, then a whole frame with a wrong checksum: both are skipped, never answered.
    junk = bytes([0x00, 0xFF, 0x13, 0x37, 0xFE, 0x16]) * 5
    client.writer.write(junk + b"\x68\x10" + bytes(7) + b"\x01\x03\x1f\x90\x00\x00\x16")
    await client.writer.drain()
    reply, _ = await client.ask(read("00000000000001"), cjt188.decode, wait=3)
    assert cjt188.address_display(reply.address) == "00000000000001"
    assert site.bus("w").codec_faults == 0
    await client.close()


async def test_pty_reply_is_paced_at_the_line_rate(site: Site) -> None:
    request = read("00000000000002")
    path = site.ptys["w"].path

    def timed() -> tuple[object, float]:
        start = time.monotonic()
        frame = pty_ask(path, request, cjt188.decode, (2400, "E"))
        return frame, time.monotonic() - start

    frame, elapsed = await asyncio.to_thread(timed)
    assert frame is not None
    reply_len = len(cjt188.encode(frame, preamble=2))  # type: ignore[arg-type]
    assert elapsed >= (len(request) + reply_len) * (11 / 2400) + FAST[0] / 1000
