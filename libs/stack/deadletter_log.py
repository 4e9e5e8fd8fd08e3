"""mf.dead-letter on the broker: read every dead letter, re-publish some (the I/O of
:mod:`libs.stack.deadletter`, used by `meterflow dead-letter` and `meterflow status`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events.topics import DEAD_LETTER
from libs.stack.broker import high_watermarks
from libs.stack.deadletter import DeadLetter, decode_headers, fold, retry_marker


async def read_letters(bootstrap: str) -> list[DeadLetter]:
    """Every dead letter on mf.dead-letter (one partition), retries folded in."""
    tp = TopicPartition(DEAD_LETTER.name, 0)
    end = (await high_watermarks(bootstrap, [tp]))[tp]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    records: list[tuple[int, bytes | None, bytes | None, dict[str, str]]] = []
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        async with asyncio.timeout(60):
            while end and await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for r in batch.get(tp, []):
                    if r.offset < end:
                        records.append((r.offset, r.key, r.value, decode_headers(r.headers)))
    finally:
        await consumer.stop()
    return fold(records)


async def retry(bootstrap: str, letters: Sequence[DeadLetter]) -> None:
    """Re-publish each letter to its source, then mark it retried on mf.dead-letter."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 << 20)
    await producer.start()
    try:
        for letter in letters:
            assert letter.topic is not None
            await producer.send_and_wait(
                letter.topic, letter.value, key=letter.key, partition=letter.partition
            )
            await producer.send_and_wait(
                DEAD_LETTER.name, b"", key=letter.key, partition=0, headers=retry_marker(letter)
            )
    finally:
        await producer.stop()
