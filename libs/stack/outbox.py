"""A durable, bounded outbox between a producer of events and Kafka.

Field services must not lose a reading because the broker is unreachable (MISSION.md A2,
issue: "nothing is dropped silently; backpressure slows polling rather than losing data").
Events are first written to a local SQLite file (or memory), then a delivery task sends them in
order and deletes only what the broker acknowledged:

- broker down → rows stay; delivery retries with capped exponential backoff;
- outbox full → :meth:`Outbox.put` waits (backpressure), it never drops;
- readings (``ReadingRecorded``) are packed per partition into batched messages at delivery
  time, so a backlog drains at batch speed;
- a crash between the broker's ack and the delete can resend a message once: consumers are
  idempotent by event id (at-least-once by design, see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from libs.events.acquisition import ReadingRecorded
from libs.events.base import Event
from libs.events.codec import Codec, partition_for
from libs.stack.broker import partition_counts

log = logging.getLogger(__name__)

_SCHEMA = """CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL,
    packable INTEGER NOT NULL)"""


@dataclass
class OutboxStats:
    """Counters for metrics and tests."""

    queued: int = 0
    delivered: int = 0
    messages_sent: int = 0
    failures: int = 0


class Outbox:
    """Durable queue of events waiting for Kafka; one delivery task drains it."""

    def __init__(
        self,
        bootstrap: str,
        path: Path | None = None,
        capacity: int = 1_000_000,
        batch_rows: int = 5000,
        max_backoff: float = 10.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.capacity = capacity
        self.batch_rows = batch_rows
        self.max_backoff = max_backoff
        self.codec = Codec()
        self.stats = OutboxStats()
        self.db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_SCHEMA)
        self.db.commit()
        self._changed = asyncio.Event()
        self._space = asyncio.Condition()
        self._partitions: dict[str, int] = {}
        self._count = int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def __len__(self) -> int:
        return self._count  # kept in step with the table, so the hot path never counts rows

    async def put(self, events: Sequence[Event]) -> None:
        """Queue events durably; waits while the outbox is full (backpressure)."""
        async with self._space:
            await self._space.wait_for(lambda: len(self) + len(events) <= max(self.capacity, len(events)))
            rows = []
            for e in events:
                if isinstance(e, ReadingRecorded):
                    rows.append((e.TOPIC, e.key, e.model_dump_json().encode(), 1))
                else:
                    rows.append((e.TOPIC, e.key, self.codec.encode(e), 0))
            self.db.executemany("INSERT INTO outbox (topic, key, value, packable) VALUES (?, ?, ?, ?)", rows)
            self.db.commit()
            self._count += len(rows)
        self.stats.queued += len(events)
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set and the outbox is empty (or stop is set while the broker is down)."""
        backoff = 0.2
        producer: AIOKafkaProducer | None = None
        try:
            while True:
                if len(self) == 0:
                    if stop.is_set():
                        return
                    self._changed.clear()
                    waiter = asyncio.create_task(self._changed.wait())
                    stopper = asyncio.create_task(stop.wait())
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    stopper.cancel()
                    continue
                try:
                    if producer is None:
                        producer = await self._producer()
                    await self._deliver_some(producer)
                    backoff = 0.2
                except (KafkaError, OSError, TimeoutError) as exc:
                    self.stats.failures += 1
                    log.warning(
                        "outbox delivery failed (%d queued), retrying in %.1fs: %r", len(self), backoff, exc
                    )
                    if producer is not None:
                        await _quietly_stop(producer)
                        producer = None
                    if stop.is_set():
                        return
                    with contextlib.suppress(TimeoutError):  # backoff, cut short by stop
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        finally:
            if producer is not None:
                await _quietly_stop(producer)

    async def _producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            linger_ms=5,
            request_timeout_ms=5000,
            max_request_size=8 << 20,
            acks="all",
        )
        try:
            await asyncio.wait_for(producer.start(), 10)
        except BaseException:
            await _quietly_stop(producer)
            raise
        return producer

    async def _deliver_some(self, producer: AIOKafkaProducer) -> None:
        rows = self.db.execute(
            "SELECT id, topic, key, value, packable FROM outbox ORDER BY id LIMIT ?", (self.batch_rows,)
        ).fetchall()
        sends: list[tuple[list[int], asyncio.Future[object]]] = []
        packs: dict[tuple[str, int], list[tuple[int, bytes, bytes]]] = {}

        async def flush(target: tuple[str, int]) -> None:
            items = packs.pop(target, [])
            for start in range(0, len(items), 500):
                chunk = items[start : start + 500]
                value = self.codec.encode_batch_items([v for _, _, v in chunk])
                future = await producer.send(target[0], value, key=chunk[0][1], partition=target[1])
                sends.append(([i for i, _, _ in chunk], future))

        # Rows go out in id order per partition: a pending pack is flushed before any other
        # message for the same partition, so per-meter order survives packing.
        for row_id, topic, key, value, packable in rows:
            target = (topic, partition_for(key, await self._partition_count(topic)))
            if packable:
                packs.setdefault(target, []).append((row_id, key, value))
            else:
                await flush(target)
                sends.append(([row_id], await producer.send(topic, value, key=key, partition=target[1])))
        for target in list(packs):
            await flush(target)
        delivered: list[int] = []
        error: BaseException | None = None
        for ids, future in sends:
            try:
                await future
                delivered += ids
                self.stats.messages_sent += 1
            except (KafkaError, OSError, TimeoutError) as exc:
                error = exc
        if delivered:
            self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in delivered])
            self.db.commit()
            self._count -= len(delivered)
            self.stats.delivered += len(delivered)
            async with self._space:
                self._space.notify_all()
        if error is not None:
            raise error

    async def _partition_count(self, topic: str) -> int:
        if topic not in self._partitions:
            counts = await asyncio.to_thread(partition_counts, self.bootstrap, [topic])
            if topic not in counts:
                raise KafkaError(f"topic {topic} does not exist")
            self._partitions[topic] = counts[topic]
        return self._partitions[topic]


async def _quietly_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception as exc:  # a producer that never connected may fail to stop; nothing to flush
        log.debug("producer stop: %r", exc)
