"""The transaction layer against the simulator: serialisation, priority, timeouts, retries, timing."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from libs.protocols import dlt645
from libs.protocols.simulator import LinkFault
from libs.protocols.simulator.runtime import Site
from libs.protocols.transaction import (
    BadReply,
    Bus,
    NoReply,
    Priority,
    PriorityLock,
    Timing,
)
from tests.protocols.drivers.sites import DELAY_MS, E8E1, FAST, open_bus, running_site


def read_0001ff00(address: str) -> bytes:
    return dlt645.encode(dlt645.read(address, "0001FF00"))


def for_meter(address: str) -> Callable[[Any], bool]:
    return lambda f: f.reply and f.address == address


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with running_site() as s:
        yield s


async def test_reply_decoded_and_counted(site: Site) -> None:
    async with open_bus(site, "e", dlt645.decode) as bus:
        frame = await bus.transact(read_0001ff00("000000000001"), reply_size=40)
        assert frame.address == "000000000001" and frame.di == "0001FF00"
        assert bus.stats.transactions == bus.stats.replies == 1
        assert bus.stats.bytes_sent == 16 and bus.stats.bytes_received == 40  # 4 FE + 36
        assert bus.stats.busy_seconds > 0


async def test_concurrent_callers_are_serialised(site: Site) -> None:
    addresses = ["000000000001", "000000000002", "000000000003"] * 2
    async with open_bus(site, "e", dlt645.decode) as bus:
        frames = await asyncio.gather(
            *(bus.transact(read_0001ff00(a), accept=for_meter(a)) for a in addresses)
        )
    assert [f.address for f in frames] == addresses  # nobody got another's reply
    spans = sorted((r.started, r.ended) for r in bus.records)
    assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(spans))
    assert bus.stats.retries == 0


async def test_command_queued_behind_reads_goes_first(site: Site) -> None:
    done: list[str] = []
    async with open_bus(site, "e", dlt645.decode) as bus:

        async def run(label: str, address: str, priority: Priority) -> None:
            await bus.transact(read_0001ff00(address), accept=for_meter(address), priority=priority)
            done.append(label)

        first = asyncio.create_task(run("read-1", "000000000001", Priority.ROUTINE))
        await asyncio.sleep(0.01)  # read-1 holds the bus
        queued = [asyncio.create_task(run(f"read-{i}", f"00000000000{i}", Priority.ROUTINE)) for i in (2, 3)]
        await asyncio.sleep(0.01)
        assert bus.queued == 2
        command = asyncio.create_task(run("command", "000000000001", Priority.COMMAND))
        await asyncio.gather(first, *queued, command)
    assert done == ["read-1", "command", "read-2", "read-3"]


async def test_offline_meter_times_out_bounded_and_next_meter_answers(site: Site) -> None:
    site.set_offline("e/000000000002")
    timing = FAST.with_(retries=1)
    async with open_bus(site, "e", dlt645.decode, timing=timing) as bus:
        request = read_0001ff00("000000000002")
        limit = 2 * bus.timeout_for(len(request), 40) + timing.backoff + 0.15
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(NoReply) as info:
            await bus.transact(request, reply_size=40)
        elapsed = loop.time() - start
        assert info.value.attempts == 2
        assert elapsed <= limit, (elapsed, limit)
        print(f"offline meter: NoReply after {elapsed:.3f} s (bound {limit:.3f} s)")
        frame = await bus.transact(read_0001ff00("000000000003"), reply_size=40)
        assert frame.address == "000000000003"
        assert bus.stats.timeouts == 2 and bus.stats.failures == 1 and bus.stats.retries == 1


async def test_corrupted_reply_is_retried_then_succeeds(site: Site) -> None:
    site.set_link_fault("e", LinkFault("corrupt", index=-2, count=1))  # checksum byte
    async with open_bus(site, "e", dlt645.decode) as bus:
        frame = await bus.transact(read_0001ff00("000000000001"), reply_size=40)
    assert frame.di == "0001FF00"
    assert bus.stats.bad_frames == 1 and bus.stats.retries == 1 and bus.stats.failures == 0
    assert bus.records[-1].attempts == 2


async def test_always_corrupted_reply_raises_bad_reply_with_attempts(site: Site) -> None:
    site.set_link_fault("e", LinkFault("corrupt", index=-2))
    async with open_bus(site, "e", dlt645.decode) as bus:
        with pytest.raises(BadReply) as info:
            await bus.transact(read_0001ff00("000000000001"), reply_size=40)
    assert info.value.attempts == FAST.retries + 1
    assert info.value.error.fault == "checksum"


async def test_split_reply_waits_for_the_rest(site: Site) -> None:
    site.set_link_fault("e", LinkFault("split", index=10, seconds=0.08, count=1))
    async with open_bus(site, "e", dlt645.decode) as bus:
        frame = await bus.transact(read_0001ff00("000000000001"), reply_size=40)
    assert frame.di == "0001FF00" and bus.stats.retries == 0


async def test_stale_input_is_discarded_before_sending(site: Site) -> None:
    site.set_link_fault("e", LinkFault("delay", seconds=0.5, count=1))
    async with open_bus(site, "e", dlt645.decode, timing=FAST.with_(retries=0)) as bus:
        with pytest.raises(NoReply):
            await bus.transact(read_0001ff00("000000000001"), reply_size=40)
        await asyncio.sleep(0.5)  # the late reply arrives meanwhile
        frame = await bus.transact(dlt645.encode(dlt645.read("000000000002", "0001FF00")), reply_size=40)
    assert frame.address == "000000000002"
    assert bus.stats.bytes_discarded == 40


async def test_broadcast_waits_line_time_and_returns_none(site: Site) -> None:
    async with open_bus(site, "e", dlt645.decode) as bus:
        request = dlt645.encode(dlt645.broadcast_time(site.meter("e/000000000001").state.meter_time()))
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await bus.transact(request, expect_reply=False) is None
        assert loop.time() - start >= E8E1.wire_time(len(request))
        assert bus.stats.broadcasts == 1


async def test_bus_efficiency_close_to_the_physical_minimum(site: Site) -> None:
    n = 20
    async with open_bus(site, "e", dlt645.decode, timing=Timing(response_delay=0.1, slack=0.05)) as bus:
        request = read_0001ff00("000000000001")
        await bus.transact(request, reply_size=40)  # warm up the connection
        loop = asyncio.get_running_loop()
        sent, received = bus.stats.bytes_sent, bus.stats.bytes_received
        start = loop.time()
        for _ in range(n):
            await bus.transact(request, reply_size=40)
        elapsed = loop.time() - start
        wire = (bus.stats.bytes_sent - sent) + (bus.stats.bytes_received - received)
    minimum = wire * E8E1.char_time + n * DELAY_MS / 1000
    ratio = elapsed / minimum
    print(
        f"bus efficiency: {n} transactions at 2400 8E1 in {elapsed:.3f} s, physical minimum "
        f"{minimum:.3f} s, ratio {ratio:.3f}"
    )
    assert ratio <= 1.15


async def test_priority_lock_cancelled_waiter_leaves_queue() -> None:
    lock = PriorityLock()
    await lock.acquire()
    waiter = asyncio.create_task(lock.acquire(Priority.COMMAND))
    other = asyncio.create_task(lock.acquire(Priority.ROUTINE))
    await asyncio.sleep(0)
    assert lock.waiting == 2
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    lock.release()
    await other  # the routine waiter gets it, not the cancelled command
    assert lock.locked()
    lock.release()
    assert not lock.locked()


def test_timeout_derivation() -> None:
    from libs.protocols.transport import TcpTransport

    bus = Bus(TcpTransport("127.0.0.1", 1, E8E1), dlt645.decode, timing=Timing(response_delay=0.5, slack=0.1))
    assert bus.timeout_for(16, 40) == pytest.approx(56 * 11 / 2400 + 0.6)
