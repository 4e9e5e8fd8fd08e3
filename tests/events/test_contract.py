"""Every event type travels through the real broker and comes back equal, to a consumer group."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from libs.events import CATALOGUE, REGISTRY, Codec, Event, ReadingRecorded, new_event_id, pack_readings
from libs.stack.broker import ensure_topics, partition_counts
from tests.broker.kafka_helpers import group_consumer, take
from tests.events.strategies import sample

pytestmark = pytest.mark.slow


async def test_every_event_type_round_trips_through_the_broker(bootstrap: str) -> None:
    ensure_topics(bootstrap, CATALOGUE)
    codec = Codec()
    run = uuid.uuid4().hex[:8]
    events = [
        sample(cls).model_copy(update={"project_id": run, "event_id": new_event_id()})
        for cls in REGISTRY.types()
    ]
    counts = partition_counts(bootstrap)
    readings = [
        sample(ReadingRecorded).model_copy(
            update={"project_id": run, "subject_id": f"m{i}", "meter_id": f"m{i}", "event_id": new_event_id()}
        )
        for i in range(40)
    ]
    packed = pack_readings(readings, counts["mf.readings"], max_per_message=7, codec=codec)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(e.TOPIC, codec.encode(e), key=e.key)
        for m in packed:
            await producer.send_and_wait("mf.readings", m.value, key=m.key, partition=m.partition)
    finally:
        await producer.stop()

    topics = sorted({e.TOPIC for e in events})
    async with group_consumer(bootstrap, f"contract-{run}", *topics) as consumer:
        records: list[Event] = []
        while len(records) < len(events) + len(readings):
            for record in await take(consumer, 1):
                records += [e for e in codec.decode(record.value) if e.project_id == run]
    by_id = {e.event_id: e for e in records}
    for e in [*events, *readings]:
        assert by_id[e.event_id] == e, e.TYPE
    assert len(records) == len(events) + len(readings)  # nothing twice
