"""Topic creation from the catalogue, end offsets and consumer-group lag on the real broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from libs.events.topics import CATALOGUE, Topic
from libs.stack.broker import (
    BrokerError,
    check_reachable,
    ensure_topics,
    free_port,
    group_offsets,
    high_watermarks,
    partition_counts,
)
from libs.stack.status import broker_report
from tests.broker.kafka_helpers import group_consumer, producer, send_all, take


def test_topic_creation_is_idempotent_and_reports_mismatches(bootstrap: str, topic_name: str) -> None:
    first = ensure_topics(bootstrap, [*CATALOGUE, Topic(topic_name, 2, "k", "t")])
    again = ensure_topics(bootstrap, [*CATALOGUE, Topic(topic_name, 2, "k", "t")])
    assert again.created == ()
    assert set(again.existing) == {t.name for t in CATALOGUE} | {topic_name}
    assert topic_name in first.created
    counts = partition_counts(bootstrap)
    assert all(counts[t.name] == t.partitions for t in CATALOGUE)
    differs = ensure_topics(bootstrap, [Topic(topic_name, 5, "k", "t")])
    assert differs.mismatched == (topic_name,)
    assert partition_counts(bootstrap, [topic_name]) == {topic_name: 2}  # left as it was


def test_unreachable_broker_is_named() -> None:
    port = free_port()
    with pytest.raises(BrokerError, match=f"127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}", timeout=1)


@pytest.mark.slow
async def test_status_reports_message_counts_and_group_lag(bootstrap: str, topic_name: str) -> None:
    ensure_topics(bootstrap, [Topic(topic_name, 2, "k", "t")])
    async with producer(bootstrap) as p:
        await send_all(p, topic_name, [(None, b"a")] * 30, partition=0)
        await send_all(p, topic_name, [(None, b"b")] * 12, partition=1)
    tp0, tp1 = TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)
    assert await high_watermarks(bootstrap, [tp0, tp1]) == {tp0: 30, tp1: 12}
    group = f"lag-{topic_name}"
    async with group_consumer(bootstrap, group, topic_name) as c:
        await take(c, 42)
        await c.commit({tp0: 20, tp1: 12})
    assert group_offsets(bootstrap)[group] == {tp0: 20, tp1: 12}
    report = await asyncio.to_thread(broker_report, bootstrap)
    assert report["topics"][topic_name] == {"partitions": 2, "messages": 42}
    assert report["groups"][group]["lag"] == 10
    assert report["groups"][group]["partitions"] == {f"{topic_name}[0]": 10, f"{topic_name}[1]": 0}
