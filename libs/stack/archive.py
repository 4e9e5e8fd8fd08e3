"""The event-log archive: every message of the catalogue topics, copied durably into ClickHouse,
and replayed into an empty broker on the next start (MISSION.md F5).

The embedded Tansu keeps its log in memory only, so this is what makes ``make run`` durable; on
a production cluster the same two operations are the backup and the disaster-recovery path.

- :class:`Archiver` reads the topics by manual assignment (no consumer group needed) from the
  archive's own high-water mark per partition: the archive is its own checkpoint, so a crash
  between insert and anything else re-reads at most one batch, and the ReplacingMergeTree key
  ``(topic, partition, offset)`` collapses the repeat.
- :func:`restore` writes each archived partition back, in offset order, into the same partition
  of an empty topic, and checks that every message lands at its archived offset, so consumers'
  offsets, partitions and per-key order are exactly as before the stop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from clickhouse_connect.driver.client import Client

from libs.events.topics import BY_NAME, Topic
from libs.stack.broker import ensure_topics, high_watermarks, partition_counts

log = logging.getLogger(__name__)

TABLE = "mf_event_log"
COLUMNS = ["topic", "partition", "offset", "key", "value", "timestamp", "type"]
_TYPE = re.compile(rb'^\{"type":"([^"]{1,100})"')


class ArchiveError(Exception):
    """The archive and the broker disagree in a way that would lose or duplicate events."""


def archived_next_offsets(client: Client) -> dict[TopicPartition, int]:
    """Per archived partition, the offset after the last one archived."""
    rows = client.query(
        f"SELECT topic, partition, max(offset) FROM {TABLE} GROUP BY topic, partition"
    ).result_rows
    return {TopicPartition(t, int(p)): int(m) + 1 for t, p, m in rows}


def archived_counts(client: Client) -> dict[TopicPartition, int]:
    """Per archived partition, the number of distinct messages archived."""
    rows = client.query(
        f"SELECT topic, partition, count() FROM {TABLE} FINAL GROUP BY topic, partition"
    ).result_rows
    return {TopicPartition(t, int(p)): int(c) for t, p, c in rows}


def _row(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes, ts_ms: int
) -> list[object]:
    match = _TYPE.match(value or b"")
    type_name = match.group(1).decode() if match else ""
    return [topic, partition, offset, key, value or b"", datetime.fromtimestamp(ts_ms / 1000, UTC), type_name]


@dataclass
class Archiver:
    """Copies new messages of ``topics`` into the archive in batches (about once a second)."""

    bootstrap: str
    client: Client
    topics: Sequence[str]
    max_batch: int = 5000
    flush_seconds: float = 1.0
    archived: int = 0
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Assign every partition and seek to the archive's high-water mark; refuse when the
        broker holds fewer messages than the archive (it lost data and needs a restore)."""
        counts = await asyncio.to_thread(partition_counts, self.bootstrap, self.topics)
        tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        archived = await asyncio.to_thread(archived_next_offsets, self.client)
        marks = await high_watermarks(self.bootstrap, tps)
        behind = [
            f"{tp.topic}[{tp.partition}] broker {marks[tp]} < archive {archived[tp]}"
            for tp in tps
            if marks[tp] < archived.get(tp, 0)
        ]
        if behind:
            raise ArchiveError("broker is missing archived messages (restore first): " + "; ".join(behind))
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        self._consumer.assign(tps)
        for tp in tps:
            self.positions[tp] = archived.get(tp, 0)
            self._consumer.seek(tp, self.positions[tp])

    async def run(self, stop: asyncio.Event) -> None:
        """Archive until ``stop`` is set, then drain up to the high-water marks of that moment."""
        assert self._consumer is not None, "start() first"
        pending: list[list[object]] = []
        last_flush = time.monotonic()
        try:
            while not stop.is_set():
                pending += await self._fetch()
                if len(pending) >= self.max_batch or time.monotonic() - last_flush >= self.flush_seconds:
                    await self._flush(pending)
                    pending, last_flush = [], time.monotonic()
            marks = await high_watermarks(self.bootstrap, list(self.positions))
            while any(self.positions[tp] < marks[tp] for tp in marks):
                pending += await self._fetch()
                if len(pending) >= self.max_batch:
                    await self._flush(pending)
                    pending = []
            await self._flush(pending)
        finally:
            await self._consumer.stop()

    async def _fetch(self) -> list[list[object]]:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=200, max_records=self.max_batch)
        rows = []
        for tp, messages in batches.items():
            for m in messages:
                rows.append(_row(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp))
            if messages:
                self.positions[tp] = messages[-1].offset + 1
        return rows

    async def _flush(self, rows: list[list[object]]) -> None:
        if rows:
            await asyncio.to_thread(self.client.insert, TABLE, rows, column_names=COLUMNS)
            self.archived += len(rows)


@dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore` did, per partition."""

    restored: dict[str, int]  # "topic[p]" -> messages written
    already_present: tuple[str, ...]


async def restore(bootstrap: str, client: Client, chunk: int = 20000) -> RestoreReport:
    """Write every archived partition back into an empty broker, in offset order."""
    nexts = await asyncio.to_thread(archived_next_offsets, client)
    counts = await asyncio.to_thread(archived_counts, client)
    if not nexts:
        return RestoreReport({}, ())
    by_topic: dict[str, int] = {}
    for tp in nexts:
        by_topic[tp.topic] = max(by_topic.get(tp.topic, 0), tp.partition + 1)
    topics = [
        BY_NAME.get(name) or Topic(name, n, "?", "restored from the archive") for name, n in by_topic.items()
    ]
    await asyncio.to_thread(ensure_topics, bootstrap, topics)
    marks = await high_watermarks(bootstrap, list(nexts))
    todo, present = [], []
    for tp, nxt in sorted(nexts.items()):
        if marks[tp] == nxt:
            present.append(f"{tp.topic}[{tp.partition}]")
        elif marks[tp] != 0:
            raise ArchiveError(
                f"{tp.topic}[{tp.partition}] holds {marks[tp]} messages, archive {nxt}: not empty"
            )
        elif counts[tp] != nxt:
            raise ArchiveError(
                f"archive of {tp.topic}[{tp.partition}] has gaps ({counts[tp]} messages up to {nxt})"
            )
        else:
            todo.append(tp)
    restored: dict[str, int] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for tp in todo:
            restored[f"{tp.topic}[{tp.partition}]"] = await _restore_partition(client, producer, tp, chunk)
    finally:
        await producer.stop()
    return RestoreReport(restored, tuple(present))


async def _restore_partition(
    client: Client, producer: AIOKafkaProducer, tp: TopicPartition, chunk: int
) -> int:
    written, low = 0, 0
    while True:
        result = await asyncio.to_thread(
            client.query,
            f"SELECT offset, key, value, toUnixTimestamp64Milli(timestamp) FROM {TABLE} FINAL "
            "WHERE topic = {t:String} AND partition = {p:UInt16} AND offset >= {lo:UInt64} "
            "ORDER BY offset LIMIT {n:UInt32}",
            parameters={"t": tp.topic, "p": tp.partition, "lo": low, "n": chunk},
            column_formats={"key": "bytes", "value": "bytes"},
        )
        rows = result.result_rows
        if not rows:
            return written
        futures = [
            await producer.send(tp.topic, value=value, key=key, partition=tp.partition, timestamp_ms=int(ts))
            for _, key, value, ts in rows
        ]
        metas = await asyncio.gather(*futures)
        for (offset, *_), meta in zip(rows, metas, strict=True):
            if meta.offset != offset:
                raise ArchiveError(
                    f"{tp.topic}[{tp.partition}]: archived offset {offset} restored at {meta.offset}"
                )
        written += len(rows)
        low = int(rows[-1][0]) + 1
