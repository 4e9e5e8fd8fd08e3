"""Broker helpers of the notify tests: produce facts, read a topic to its end, wait for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import Codec, Event
from libs.stack.broker import high_watermarks

CODEC = Codec()


async def produce(bootstrap: str, events: Iterable[Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(event.TOPIC, CODEC.encode(event), key=event.key)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str) -> list[tuple[dict[str, bytes], Event]]:
    """Every event on ``topic`` with its record headers, in partition order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[dict[str, bytes], Event]] = []
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        marks = await high_watermarks(bootstrap, tps)
        for tp in tps:
            while await consumer.position(tp) < marks[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    headers = {k: bytes(v) for k, v in record.headers}
                    out += [(headers, e) for e in CODEC.decode(record.value)]
    finally:
        await consumer.stop()
    return out


async def eventually(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.05)
