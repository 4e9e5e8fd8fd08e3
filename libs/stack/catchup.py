"""Whether a restored processor state has applied its input log up to where it ended at restore.

A state restored from a snapshot (or rebuilt from nothing) first re-reads records it had, or
partly had: what it decides from them is history, not news. Control holds the commands such
records cause and billing holds its allowance grants until the replay is over, then act once on
the state the whole log gives. :class:`CatchUp` is that bookkeeping: the next offset applied per
``topic:partition`` (kept in the state's snapshot), the inputs' end offsets read once at restore
(in a task: the read must not hold the rebalance), and the replay's end — every partition
applied up to those offsets, or, when they cannot be read or a last record never arrives (the
embedded broker under-reports end offsets: shared/BROKER-NOTES.md), no historic record for
``quiet_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.stack.broker import high_watermarks, partition_counts

log = logging.getLogger(__name__)
EndOffsets = Callable[[], Awaitable[dict[str, int]]]  # "topic:partition" → end offset


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """The end offset of every partition of ``topics`` (fetch high-watermarks: right on Tansu too)."""
    counts = await asyncio.to_thread(partition_counts, bootstrap, topics)
    tps = [TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0))]
    marks = await high_watermarks(bootstrap, tps)
    return {f"{tp.topic}:{tp.partition}": end for tp, end in marks.items()}


class CatchUp:
    """The replay tracker of one processor state (see the module docstring)."""

    def __init__(self, name: str, end_offsets: EndOffsets | None, quiet_s: float) -> None:
        """``end_offsets`` reads the inputs' end offsets; None: input is never a replay."""
        self.name, self.end_offsets, self.quiet_s = name, end_offsets, quiet_s
        self.positions: dict[str, int] = {}  # "topic:partition" → next offset to apply
        self.replaying = False
        self.ends: dict[str, int] | None = None  # end offsets at restore (None: being read)
        self.last_historic = 0.0  # monotonic time of the latest historic record
        self.generation = 0  # of restores: an end-offset read of an earlier one is dropped
        self._tasks: set[asyncio.Future[None]] = set()

    def reset(self) -> None:
        """The state was dropped (a rebalance took its partitions): nothing applied, no replay."""
        self.positions, self.replaying, self.ends = {}, False, None

    def begin(self, positions: dict[str, int]) -> None:
        """A restore: ``positions`` from the snapshot (empty for a rebuild); the replay starts."""
        self.positions = positions
        self.generation += 1
        self.ends = None
        if self.end_offsets is None:
            self.replaying = False
            return
        self.replaying, self.last_historic = True, time.monotonic()
        task = asyncio.ensure_future(self._read_ends(self.end_offsets, self.generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_ends(self, end_offsets: EndOffsets, generation: int) -> None:
        try:
            ends = await end_offsets()
        except Exception:  # the quiet period still ends the replay
            log.exception("%s: reading the end offsets failed", self.name)
            return
        if generation == self.generation:
            self.ends = ends

    def note(self, topic: str, partition: int, offset: int) -> bool:
        """Record that the record at ``offset`` is applied; return whether it is historic (read
        again in the replay)."""
        key = f"{topic}:{partition}"
        historic = self.replaying and (self.ends is None or offset < self.ends.get(key, 0))
        if historic:
            self.last_historic = time.monotonic()
        self.positions[key] = offset + 1
        return historic

    def finished(self) -> bool:
        """Whether the replay has just ended (every partition applied to its end at restore, or
        quiet for ``quiet_s``); True once, then False until the next :meth:`begin`."""
        if not self.replaying:
            return False
        ends = self.ends
        done = ends is not None and all(self.positions.get(k, 0) >= e for k, e in ends.items())
        if not done and time.monotonic() - self.last_historic < self.quiet_s:
            return False
        self.replaying = False
        return True


async def committed_offsets(bootstrap: str, group: str, topics: Sequence[str]) -> dict[str, int]:
    """The offsets ``group`` has committed on every partition of ``topics`` (0 where none): read
    with a consumer's ``committed()``, which does not join the group (the embedded broker's admin
    offset listing fails: shared/BROKER-NOTES.md)."""
    counts = await asyncio.to_thread(partition_counts, bootstrap, topics)
    tps = [TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0))]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {f"{tp.topic}:{tp.partition}": (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def passed_by(bootstrap: str, group: str, topics: Sequence[str], timeout_s: float) -> bool:
    """Wait until ``group`` has committed past the end every partition of ``topics`` has now
    (every record there consumed and acknowledged), for at most ``timeout_s``; whether it did.

    A processor fed by another stage (billing's books, fed by its router) reads its own input's
    end only once the stage before it is past the end of *its* input: what that stage had yet to
    pass on would otherwise be taken for news."""
    ends = await end_offsets(bootstrap, topics)
    deadline = time.monotonic() + timeout_s
    while True:
        committed = await committed_offsets(bootstrap, group, topics)
        if all(committed.get(k, 0) >= end for k, end in ends.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.2)
