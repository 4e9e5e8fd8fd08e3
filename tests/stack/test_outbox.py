"""The outbox through a real broker: an outage loses nothing, duplicates nothing, keeps order."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.events import CATALOGUE, Codec, Event, ReadingFailed, ReadingRecorded, Route, utcnow
from libs.stack.broker import EmbeddedBroker, ensure_topics
from libs.stack.outbox import Outbox

ROUTE = Route(concentrator_id="c1", bus_id="b1")


def _events(start: int, n: int) -> list[Event]:
    out: list[Event] = []
    for i in range(start, start + n):
        meter = f"m{i % 7}"
        if i % 10 == 9:
            out.append(
                ReadingFailed(
                    project_id="p",
                    subject_id=meter,
                    meter_id=meter,
                    sequence=i,
                    reason="timeout",
                    attempts=3,
                    route=ROUTE,
                )
            )
        else:
            out.append(
                ReadingRecorded(
                    project_id="p",
                    subject_id=meter,
                    meter_id=meter,
                    sequence=i,
                    registers={"active_import_kwh": {"total": Decimal(i)}},
                    received_at=utcnow(),
                    route=ROUTE,
                )
            )
    return out


async def _read_readings_topic(bootstrap: str) -> list[Event]:
    codec = Codec()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition("mf.readings", p) for p in range(12)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    out: list[Event] = []
    try:
        quiet = 0
        while quiet < 4:
            batch = await consumer.getmany(timeout_ms=300)
            quiet = 0 if batch else quiet + 1
            for records in batch.values():
                for r in records:
                    out += codec.decode(r.value)
    finally:
        await consumer.stop()
    return out


async def _until(predicate, within: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_broker_outage_is_buffered_on_disk_and_delivered_once_in_order(tmp_path: Path) -> None:
    broker = EmbeddedBroker().start()
    ensure_topics(broker.bootstrap, CATALOGUE)
    outbox = Outbox(broker.bootstrap, tmp_path / "outbox.db")
    stop = asyncio.Event()
    runner = asyncio.create_task(outbox.run(stop))
    sent = _events(0, 300)
    await outbox.put(sent)
    await _until(lambda: outbox.stats.delivered == 300)
    before = await _read_readings_topic(broker.bootstrap)

    broker.stop()  # outage: the memory-only broker loses everything; what it had is in `before`
    during = _events(300, 700)
    await outbox.put(during)
    await _until(lambda: outbox.stats.failures >= 1)  # delivery noticed the outage…
    assert len(outbox) == 700  # …and kept everything

    revived = EmbeddedBroker(port=broker.port).start()
    try:
        ensure_topics(revived.bootstrap, CATALOGUE)
        await _until(lambda: len(outbox) == 0)
        after = await _read_readings_topic(revived.bootstrap)
        stop.set()
        await runner
    finally:
        revived.stop()

    assert sorted(e.event_id for e in before) == sorted(e.event_id for e in sent)
    assert sorted(e.event_id for e in after) == sorted(e.event_id for e in during)  # all, once
    for meter in {f"m{i}" for i in range(7)}:  # per-meter order kept through packing
        seqs = [e.sequence for e in after if e.subject_id == meter]
        assert seqs == sorted(seqs)
    assert outbox.stats.messages_sent < 300 + 700  # readings travelled packed


async def test_a_full_outbox_applies_backpressure_instead_of_dropping(tmp_path: Path) -> None:
    outbox = Outbox("127.0.0.1:1", tmp_path / "o.db", capacity=50)
    await outbox.put(_events(0, 50))
    blocked = asyncio.create_task(outbox.put(_events(50, 1)))
    await asyncio.sleep(0.3)
    assert not blocked.done() and len(outbox) == 50
    blocked.cancel()


async def test_the_outbox_survives_a_restart_of_its_process(tmp_path: Path) -> None:
    first = Outbox("127.0.0.1:1", tmp_path / "o.db")
    await first.put(_events(0, 20))
    first.db.close()
    assert len(Outbox("127.0.0.1:1", tmp_path / "o.db")) == 20
