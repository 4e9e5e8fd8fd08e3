"""Archive and restore through a real broker and real chDB: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from clickhouse_connect.driver.client import Client

from libs.events.topics import Topic
from libs.stack.archive import ArchiveError, Archiver, archived_counts, restore
from libs.stack.broker import EmbeddedBroker, ensure_topics


async def _produce(bootstrap: str, topic: str, n: int, start: int = 0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=f"k{i % 7}".encode(), value=b'{"type":"t.v1.x","i":%d}' % i)
            for i in range(start, start + n)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple[int, bytes, bytes]]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    out: dict[int, list[tuple[int, bytes, bytes]]] = {p: [] for p in range(partitions)}
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=300)
            idle = 0 if batch else idle + 1
            for tp, messages in batch.items():
                out[tp.partition] += [(m.offset, m.key, m.value) for m in messages]
    finally:
        await consumer.stop()
    return out


async def _archive_everything(bootstrap: str, store: Client, topic: str) -> Archiver:
    archiver = Archiver(bootstrap, store, [topic], max_batch=100, flush_seconds=0.2)
    await archiver.start()
    stop = asyncio.Event()
    stop.set()  # drain to the current end and return
    await archiver.run(stop)
    return archiver


@pytest.mark.slow
async def test_archive_then_restore_into_a_new_broker_keeps_every_message_in_place(
    fresh_broker: EmbeddedBroker, store: Client, topic_name: str
) -> None:
    ensure_topics(fresh_broker.bootstrap, [Topic(topic_name, 3, "k", "test")])
    await _produce(fresh_broker.bootstrap, topic_name, 500)
    before = await _read_all(fresh_broker.bootstrap, topic_name, 3)
    archiver = await _archive_everything(fresh_broker.bootstrap, store, topic_name)
    assert archiver.archived == 500

    # Archiving again from the archive's own mark adds nothing.
    again = await _archive_everything(fresh_broker.bootstrap, store, topic_name)
    assert again.archived == 0
    assert sum(archived_counts(store).values()) == 500

    fresh_broker.stop()
    second = EmbeddedBroker().start()
    try:
        report = await restore(second.bootstrap, store, chunk=64)
        assert sum(report.restored.values()) == 500
        after = await _read_all(second.bootstrap, topic_name, 3)
        assert after == before  # same partitions, offsets, keys, values, order

        # Restoring twice is a no-op, and new messages are archived after the restored ones.
        report2 = await restore(second.bootstrap, store)
        assert report2.restored == {} and len(report2.already_present) == 3
        await _produce(second.bootstrap, topic_name, 50, start=500)
        more = await _archive_everything(second.bootstrap, store, topic_name)
        assert more.archived == 50
        assert sum(archived_counts(store).values()) == 550
    finally:
        second.stop()


@pytest.mark.slow
async def test_archiver_refuses_a_broker_that_lost_archived_messages(
    fresh_broker: EmbeddedBroker, store: Client, topic_name: str
) -> None:
    ensure_topics(fresh_broker.bootstrap, [Topic(topic_name, 1, "k", "test")])
    await _produce(fresh_broker.bootstrap, topic_name, 20)
    await _archive_everything(fresh_broker.bootstrap, store, topic_name)
    fresh_broker.stop()
    empty = EmbeddedBroker().start()
    try:
        ensure_topics(empty.bootstrap, [Topic(topic_name, 1, "k", "test")])
        with pytest.raises(ArchiveError, match="restore first"):
            await Archiver(empty.bootstrap, store, [topic_name]).start()
        await _produce(empty.bootstrap, topic_name, 5)
        with pytest.raises(ArchiveError, match="not empty"):
            await restore(empty.bootstrap, store)
    finally:
        empty.stop()
