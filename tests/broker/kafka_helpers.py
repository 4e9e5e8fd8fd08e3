"""Small async helpers over aiokafka shared by the broker and contract tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

SESSION_TIMEOUT_MS = 10_000  # the embedded broker holds a join for half of it (BROKER-NOTES.md)


@asynccontextmanager
async def producer(bootstrap: str, **kwargs: Any) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **kwargs)
    try:  # stop() also when start() failed half way, so no connection is left to the GC
        await p.start()
        yield p
    finally:
        await p.stop()


@asynccontextmanager
async def group_consumer(
    bootstrap: str, group: str, *topics: str, **kwargs: Any
) -> AsyncIterator[AIOKafkaConsumer]:
    options: dict[str, Any] = {
        "group_id": group,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": 1000,
    }
    options.update(kwargs)
    c = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **options)
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


async def send_all(
    p: AIOKafkaProducer, topic: str, items: Sequence[tuple[bytes | None, bytes]], **kw: Any
) -> list[Any]:
    """Send without awaiting each one, then wait for every acknowledgement."""
    futures = [await p.send(topic, key=k, value=v, **kw) for k, v in items]
    return list(await asyncio.gather(*futures))


async def take(c: AIOKafkaConsumer, n: int, within: float = 30.0) -> list[Any]:
    """Exactly the next ``n`` records (fails the test on timeout)."""
    out: list[Any] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            batch = await c.getmany(timeout_ms=500, max_records=n - len(out))
            for records in batch.values():
                out.extend(records)
    return out


async def drain(c: AIOKafkaConsumer, quiet: float = 1.5) -> list[Any]:
    """Every record until nothing arrives for ``quiet`` seconds."""
    out: list[Any] = []
    while True:
        batch = await c.getmany(timeout_ms=int(quiet * 1000))
        if not batch:
            return out
        for records in batch.values():
            out.extend(records)
