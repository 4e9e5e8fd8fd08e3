"""Partitioned stream processors on faust-streaming, with state rebuilt from our own snapshots.

A processor is a pure fold (the service's domain) behind two small interfaces:

- :class:`Handler` — ``handle(batch) -> outputs``: gets decoded events grouped per input record,
  returns messages to produce. Outputs carry deterministic event ids (derived from their cause),
  so a replay re-produces the *same* events and downstream consumers drop them by id.
- :class:`PartitionState` — ``restore / snapshot / forget`` of the state of one *group* of input
  partitions. By default a group is a partition number (co-partitioned input topics share it:
  partition p of every input topic); ``group_of=lambda topic, partition: 0`` makes one global
  state over every partition of every input (a processor that must see all keys, run as a
  single replica).

Recovery does not use Faust tables, changelogs, compaction or transactions, none of which the
embedded broker does correctly (shared/BROKER-NOTES.md). Instead:

1. after a batch is processed its outputs are sent; every ``snapshot_every`` seconds (and on
   revocation / shutdown) the producer is flushed, then each partition's state is written to
   ``<dir>/<partition>.snap`` atomically together with the next input offset per topic
   (by a forked child, whose memory is the state at the fork; where the platform cannot fork,
   :mod:`libs.stack.snapshot`: a copy taken on the loop, pickled in pieces in a thread);
2. when a partition is assigned, its snapshot is restored, and the processor itself enforces
   that each input partition is applied contiguously from the snapshot's offset (0 without a
   snapshot: the state is rebuilt from the event log itself). Records below that offset are
   skipped; if a record arrives beyond it (Faust resumed from a group commit made after the
   snapshot), the missing range is read directly from the broker with a private aiokafka
   consumer and applied first. It never depends on where Faust's own recovery decided to seek;
3. events between the snapshot and a crash are processed again: the fold is idempotent (it
   remembers applied event ids) and its outputs are identical, so the effect is exactly once.

A bad input never stops the processor: a record that does not decode, and each fact whose fold
raises (a handler catches around its per-fact fold and lists it in ``rejected``, see
:class:`~libs.stack.deadletter.Rejected`), are parked on mf.dead-letter (:mod:`libs.stack.deadletter`)
and counted; the fold goes on with every other fact. If ``handle()`` itself raises, every record of
that slice is parked with the reason and the processor goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from faust.types import TP

from libs.events.base import Event
from libs.events.codec import Codec, EventDecodeError
from libs.stack.broker import high_watermarks
from libs.stack.deadletter import Parking, Rejected
from libs.stack.runtime import HttpServer
from libs.stack.snapshot import Blob, ChunkedPickle, Loaded, SnapshotRejected, Snapshots, load_chunked

log = logging.getLogger(__name__)
SLICE_EVENTS = 2_000  # decoded events handed to the handler at a time (see Processor._apply)


@dataclass(frozen=True)
class Inbound:
    """One input record with the events decoded from it (several for a packed batch)."""

    group: int  # the state group the record belongs to
    topic: str
    partition: int
    offset: int
    key: bytes | None
    events: list[Event]


@dataclass(frozen=True)
class Msg:
    """A raw input record, from Faust's stream or read directly from the broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Outbound:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


class Handler(Protocol):
    """The service's fold over a batch of input records.

    A handler may also have ``rejected: list[Rejected]``: facts whose fold raised, which it
    caught (:func:`~libs.stack.deadletter.reject`) and went on; the processor drains the list after
    each ``handle()`` and dead-letters them."""

    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Apply the batch to the state; return what to produce."""
        ...


FORK = hasattr(os, "fork") and os.environ.get("MF_SNAPSHOT_FORK", "1") != "0"
WRITE_TIMEOUT_S = 600.0  # a snapshot writer child still running then is killed


def _exit_code(pid: int) -> int | None:
    """The exit code of child ``pid`` if it has ended (and is reaped now), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped by someone else: its file was renamed into place or not
        return 0
    return os.waitstatus_to_exitcode(status) if done else None


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # at once: a killed child ends


def _read_snapshot(snapshots: Snapshots, partition: int) -> tuple[dict[str, int], Blob] | None:
    """(offsets, snapshot) of ``partition`` or None (run in a thread): a chunked snapshot is
    loaded here, :class:`Loaded`; any other (a plain pickle, a state's own bytes, or one the
    load refuses) is left to the state's restore as its bytes."""
    found = snapshots.read(partition)
    if found is None:
        return None
    offsets, blob = found
    try:
        return offsets, Loaded(load_chunked(blob))
    except SnapshotRejected:
        return offsets, blob


def one_group(topic: str, partition: int) -> int:
    """``group_of`` for global mode: every input partition feeds the one state (a processor that
    joins facts keyed differently — meters, accounts — and runs as a single replica)."""
    return 0


class Ticking(Protocol):
    """A handler with time-driven work (retries, timeouts, schedules): ``Processor(tick_every=…)``."""

    def tick(self, now: float) -> list[Outbound]:
        """Do what is due at ``now`` (epoch seconds); return what to produce."""
        ...


class PartitionState(Protocol):
    """Per-partition state that can be saved and restored."""

    def restore(self, partition: int, blob: Blob | None) -> None:
        """Load the state of ``partition`` (``None``: start empty); raise
        :class:`SnapshotRejected` for a blob it cannot use (read it with
        :func:`~libs.stack.snapshot.load_chunked`, which raises it for an older format). The
        processor reads a chunked snapshot off the loop and passes it :class:`Loaded`; any other
        snapshot comes as its bytes."""
        ...

    def snapshot(self, partition: int) -> bytes | ChunkedPickle:
        """The state of ``partition`` as it is now: bytes (a small state), or a
        :class:`ChunkedPickle` of a copy taken now, which the writer (a forked child, or a
        thread where there is no fork) pickles in pieces so that a large state never holds the
        event loop (the copy must not see later changes; in a child it never does)."""
        ...

    def forget(self, partition: int) -> None:
        """Drop the state of ``partition`` (it moved to another worker)."""
        ...


@dataclass
class ProcessorStats:
    """Counters for metrics and benchmarks."""

    records: int = 0
    events: int = 0
    outputs: int = 0
    batches: int = 0
    snapshots: int = 0
    dead_letters: int = 0
    backfilled: int = 0
    last_batch_at: float = 0.0
    skipped_types: dict[str, int] = field(default_factory=dict)


class Processor:
    """Wires a handler and its state into a Faust app as one agent over ``topics``."""

    def __init__(
        self,
        app: faust.App,
        bootstrap: str,
        name: str,
        topics: Sequence[str],
        handler: Handler,
        state: PartitionState,
        snapshots: Snapshots,
        batch_size: int = 2000,
        within: float = 0.002,
        snapshot_every: float = 5.0,
        group_of: Callable[[str, int], int] = lambda topic, partition: partition,
        tick_every: float | None = None,
        ignore: frozenset[str] = frozenset(),
        stateless: Callable[[int], bool] | None = None,
    ) -> None:
        """``stateless(group)``: the group keeps no state (a re-key stage's pass-through input): it
        resumes where the consumer group committed, not from a snapshot (a worker without one
        would otherwise read the partition again from offset 0 and write it all out again); the
        producer is flushed before every commit (:func:`_flush_before_commit`), so a committed
        offset never runs ahead of the outputs of what it covers."""
        self.app, self.bootstrap, self.name, self.topics = app, bootstrap, name, tuple(topics)
        self.stateless = stateless or (lambda group: False)
        self._floating: set[int] = set()  # stateless groups owned: they start where Faust resumes
        self.handler, self.state, self.snapshots = handler, state, snapshots
        self.batch_size, self.within, self.snapshot_every = batch_size, within, snapshot_every
        self.group_of = group_of
        self.ignore = ignore  # wire types dropped before validation (e.g. our own outputs)
        self.codec = Codec()
        self.stats = ProcessorStats()
        self.owned: set[int] = set()
        self.next_offsets: dict[int, dict[str, int]] = {}
        self._last_snapshot = time.monotonic()
        self._lock = asyncio.Lock()
        self.parking = Parking(name, self.codec, self.stats)
        self._background: set[asyncio.Future[Any]] = set()
        self._generation = 0
        self.assigned = False  # has had an assignment (possibly of nothing) since it started
        self.catching_up = 0  # assignments whose catch-up from their snapshots is under way
        self._writing: asyncio.Future[None] | None = None
        channel = app.topic(*self.topics, key_serializer="raw", value_serializer="raw")
        app.agent(channel, name=f"{name}-agent")(self._run)
        # Faust's signal stubs do not admit coroutine receivers with keyword arguments; they work.
        if tick_every is not None:
            # A handler's tick runs under the batch lock, so it sees the same state as handle().
            app.timer(tick_every, name=f"{name}-tick")(self._tick)
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]

    @property
    def generation(self) -> int:
        """How many assignments this processor has had (a revoke is followed by a new one)."""
        return self._generation

    def _mine(self, tps: Iterable[TP]) -> dict[int, list[TP]]:
        by_group: dict[int, list[TP]] = {}
        for tp in tps:
            if tp.topic in self.topics:
                by_group.setdefault(self.group_of(tp.topic, tp.partition), []).append(tp)
        return by_group

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        # No collection from the first load until the restored state is frozen: the load
        # allocates millions of objects, and a collection meanwhile (or the first one after it)
        # walks them all holding the GIL (~0.2-0.45 s at 100,000 billing accounts).
        collecting = gc.isenabled()
        gc.disable()
        try:
            await self._assign(assigned)
        finally:
            if collecting:
                gc.enable()

    async def _assign(self, assigned: set[TP]) -> None:
        async with self._lock:
            self._generation += 1
            self.assigned = True
            mine = self._mine(assigned)
            for partition in mine:
                if partition in self.owned:
                    continue
                if self.stateless(partition):
                    self.state.restore(partition, None)
                    self.owned.add(partition)
                    self._floating.add(partition)
                    self.next_offsets[partition] = {}  # from the first record Faust delivers
                    continue
                # read off the loop: a large state takes seconds to load, a stopped loop misses
                # the consumer's heartbeats
                found = await asyncio.to_thread(_read_snapshot, self.snapshots, partition)
                offsets, blob = found if found else ({}, None)
                try:
                    self.state.restore(partition, blob)
                except SnapshotRejected as exc:
                    log.warning(
                        "%s: snapshot of partition %d ignored (%s); rebuilding from the event log",
                        self.name,
                        partition,
                        exc,
                    )
                    found, offsets = None, {}
                    self.state.restore(partition, None)
                self.owned.add(partition)
                self.next_offsets[partition] = dict(offsets)
                log.info(
                    "%s: partition %d restored from %s, applying from %s",
                    self.name,
                    partition,
                    "its snapshot" if found else "nothing (event log replay)",
                    offsets or "offset 0",
                )
            gc.freeze()  # restored state is long-lived: keep it out of every later collection
            tps = [tp for group in mine.values() for tp in group]
            # Catch up from the snapshot to the end of the log now, in a task of its own so the
            # rebalance is not held: Faust resumes at the group's commits, and a partition that
            # gets no new records would otherwise never replay what the snapshot lacks.
            self.catching_up += 1
            task = asyncio.ensure_future(self._catch_up(tps, self._generation))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        async with self._lock:
            lost = [p for p in self._mine(revoked) if p in self.owned]
            kept = [p for p in lost if p not in self._floating]  # stateless ones resume at the commit
            if kept:
                await self._snapshot(kept)
            elif lost:
                await self.app.producer.flush()
            for partition in lost:
                self.state.forget(partition)
                self.owned.discard(partition)
                self._floating.discard(partition)

                self.next_offsets.pop(partition, None)

    async def _on_shutdown(self, sender: Any, **kwargs: Any) -> None:
        async with self._lock:
            await self._snapshot(sorted(self.owned - self._floating))

    async def _snapshot(self, partitions: Sequence[int], wait: bool = True) -> None:
        """Snapshot ``partitions``: state and offsets are taken now, serialised and written
        elsewhere, and awaited only when ``wait`` (revocation, shutdown) — a periodic snapshot
        must hold the next batch neither for pickling a large state (~1–3 s for billing's books
        of 100,000 accounts) nor for an fsync. A periodic one is skipped while the previous one
        is still being written (the next batch tries again).

        Where the platform forks, a child process writes it (:meth:`_fork_write`): its memory is
        the state as it is now, copied on write, so nothing is copied on the loop and the
        pickling takes no time from it. In a thread instead, the pickling held the GIL half the
        time while it ran, and the loop's turns with it: at 20,000 billing accounts the p99 of
        reading → balance latency was ~165 ms with a snapshot every minute, ~57 ms without.
        Elsewhere the thread pickles a :class:`ChunkedPickle` in pieces, as one ``pickle.dumps``
        would hold the GIL, so the loop, for all of it."""
        await self.app.producer.flush()  # outputs of everything in the snapshot are on the broker
        if self._writing is not None and not self._writing.done():
            if not wait:
                return
            await self._writing
        self.stats.snapshots += 1
        self._last_snapshot = time.monotonic()
        if FORK:
            self._writing = asyncio.ensure_future(self._reap(self._fork_write(partitions)))
        else:
            items = self._items(partitions)  # taken now, on the loop; written in the thread
            self._writing = asyncio.ensure_future(asyncio.to_thread(self._write, items))
        if wait:
            await self._writing

    def _fork_write(self, partitions: Sequence[int]) -> int:
        """Fork a child that writes the snapshots of ``partitions`` and exits; its pid. The
        child only pickles and writes files: it runs no loop, touches no connection and leaves
        with ``os._exit`` (no cleanup of the parent's resources, no buffers flushed twice)."""
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            # Not the worker: a signal ends it plainly, and none is passed to the loop's wakeup fd
            # (shared with the parent) by the handlers the child inherited.
            signal.set_wakeup_fd(-1)
            for number in (signal.SIGINT, signal.SIGTERM):
                signal.signal(number, signal.SIG_DFL)
            gc.disable()  # a short-lived copy: nothing to collect
            self._write(self._items(partitions))
            code = 0
        except BaseException:  # reported by the exit code, in the parent's log
            with contextlib.suppress(Exception):
                os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(code)

    async def _reap(self, pid: int) -> None:
        """Wait for the writer child (polling: no thread, no SIGCHLD handler); one that does not
        finish within :data:`WRITE_TIMEOUT_S` is killed (the previous snapshot stays)."""
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while (code := _exit_code(pid)) is None:
            if time.monotonic() > deadline:
                _kill(pid)
                log.error(
                    "%s: snapshot writer %d still busy after %.0f s: killed", self.name, pid, WRITE_TIMEOUT_S
                )
                return
            await asyncio.sleep(0.02)
        if code:
            log.error(
                "%s: snapshot writer %d failed (exit %d); the previous snapshot stays", self.name, pid, code
            )

    def _items(self, partitions: Sequence[int]) -> list[tuple[int, dict[str, int], bytes | ChunkedPickle]]:
        """(partition, next offsets, state) of each partition, as they are now."""
        return [(p, dict(self.next_offsets.get(p, {})), self.state.snapshot(p)) for p in partitions]

    def _write(self, items: Sequence[tuple[int, dict[str, int], bytes | ChunkedPickle]]) -> None:
        for partition, offsets, state in items:
            self.snapshots.write(partition, offsets, state)

    async def _run(self, stream: faust.StreamT) -> None:
        batches = stream.take_events(self.batch_size, within=self.within)  # type: ignore[attr-defined]
        async for events in batches:
            async with self._lock:
                await self._apply(await self._contiguous(events))

    async def _tick(self) -> None:
        tick = getattr(self.handler, "tick", None)
        if tick is None:
            return
        async with self._lock:
            if not self.owned:
                return  # no state yet (or between rebalances): nothing can be due
            try:
                outputs = tick(time.time())
            except Exception:  # a timer that raises must not stop the worker: it runs again
                log.exception("%s: tick failed", self.name)
                return
            await self._send(outputs)

    async def _send(self, outputs: Sequence[Outbound]) -> None:
        for out in outputs:
            await self.app.producer.send(out.topic, out.key, out.value, out.partition, None, None)
        self.stats.outputs += len(outputs)

    async def _apply(self, messages: Sequence[Msg]) -> None:
        """Decode, fold and produce one batch (the caller holds the lock), a slice of about
        :data:`SLICE_EVENTS` decoded events at a time: a batch of packed messages can hold
        hundreds of thousands of events, and holding all of them (and what they cause) alive at
        once made the cyclic GC walk them again and again (measured on the billing fold: ~2x
        slower per reading for one 40,000-reading call than for slices of 500)."""
        start = 0
        while start < len(messages):
            batch, events, first = [], 0, start
            while start < len(messages) and events < SLICE_EVENTS:
                inbound = self._decode(messages[start])
                start += 1
                if inbound is not None:
                    batch.append(inbound)
                    events += len(inbound.events)
            outputs = self._handle(batch, messages[first:start]) if batch else []
            await self.parking.send(self.app.producer)  # before the outputs: a snapshot never
            # passes an input that is neither folded nor parked
            await self._send(outputs)
        self.stats.skipped_types = dict(self.codec.skipped)
        self.stats.batches += 1
        self.stats.last_batch_at = time.time()
        if time.monotonic() - self._last_snapshot >= self.snapshot_every:
            await self._snapshot(sorted(self.owned - self._floating), wait=False)

    async def _catch_up(self, tps: Sequence[TP], generation: int) -> None:
        """Apply every assigned partition from the restored offset to the current end of the log."""
        try:
            marks = await high_watermarks(
                self.bootstrap, [TopicPartition(tp.topic, tp.partition) for tp in tps]
            )
            async with self._lock:
                for tp in tps:
                    group = self.group_of(tp.topic, tp.partition)
                    if generation != self._generation or group not in self.owned:
                        return  # a newer rebalance took over
                    if group in self._floating:
                        continue  # Faust resumes it at the group's commit
                    key = f"{tp.topic}:{tp.partition}"
                    start, end = (
                        self.next_offsets[group].get(key, 0),
                        marks[TopicPartition(tp.topic, tp.partition)],
                    )
                    if start < end:
                        log.info("%s: %s catching up %d..%d from the log", self.name, key, start, end - 1)
                    while start < end:
                        chunk_end = min(end, start + self.batch_size)
                        messages = await self._backfill(tp.topic, tp.partition, start, chunk_end)
                        self.next_offsets[group][key] = chunk_end
                        await self._apply(messages)
                        start = chunk_end
        except Exception:  # the Faust stream still covers new records; the gap check covers old ones
            log.exception("%s: catch-up after assignment failed", self.name)
        finally:
            self.catching_up -= 1

    async def _contiguous(self, events: Sequence[Any]) -> list[Msg]:
        """The records that continue each partition exactly where its state left off."""
        keep: list[Msg] = []
        for ev in events:
            m = ev.message
            group = self.group_of(m.topic, m.partition)
            if group not in self.owned:
                continue  # a late record of a partition given away in a rebalance
            key = f"{m.topic}:{m.partition}"
            if group in self._floating and key not in self.next_offsets[group]:
                self.next_offsets[group][key] = m.offset  # where the group's commit resumed it
            expected = self.next_offsets[group].get(key, 0)
            if m.offset < expected:
                continue  # already in the restored state
            if m.offset > expected:
                log.info(
                    "%s: %s[%d] resumed at %d, state is at %d: reading the gap from the log",
                    self.name,
                    m.topic,
                    m.partition,
                    m.offset,
                    expected,
                )
                keep += await self._backfill(m.topic, m.partition, expected, m.offset)
            self.next_offsets[group][key] = m.offset + 1
            keep.append(Msg(m.topic, m.partition, m.offset, m.key, m.value))
        return keep

    async def _backfill(self, topic: str, partition: int, start: int, end: int) -> list[Msg]:
        """Records [start, end) of one partition, read directly (Faust already skipped them).

        A fresh consumer each time: a gap is rare (a restart), and a reused one may hand back
        records it prefetched for an earlier range.
        """
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
        )
        out: list[Msg] = []
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            empty = 0
            async with asyncio.timeout(300):
                while True:
                    records = (await consumer.getmany(tp, timeout_ms=2000)).get(tp, [])
                    out += [
                        Msg(topic, partition, r.offset, r.key, r.value)
                        for r in records
                        if start <= r.offset < end
                    ]
                    if (records and records[-1].offset >= end - 1) or await consumer.position(tp) >= end:
                        break
                    empty = 0 if records else empty + 1
                    if empty >= 5:
                        raise RuntimeError(
                            f"{topic}[{partition}]: offsets {start}..{end - 1} could not be read"
                        )
        finally:
            await consumer.stop()
        self.stats.backfilled += len(out)
        log.debug(
            "%s: %s[%d] %d..%d read (%d records)", self.name, topic, partition, start, end - 1, len(out)
        )
        return out

    def _decode(self, msg: Msg) -> Inbound | None:
        """One record decoded, or None when it was dead-lettered."""
        self.stats.records += 1
        try:
            decoded = self.codec.decode(msg.value, self.ignore)
        except EventDecodeError as exc:
            self.parking.add(msg, msg.key, msg.value, str(exc), type(exc).__name__)
            return None
        self.stats.events += len(decoded)
        group = self.group_of(msg.topic, msg.partition)
        return Inbound(group, msg.topic, msg.partition, msg.offset, msg.key, decoded)

    def _handle(self, batch: Sequence[Inbound], messages: Sequence[Msg]) -> list[Outbound]:
        """The handler's outputs for ``batch``; its rejected facts dead-lettered. A handler that
        raises outside its per-fact guard costs the slice: every record is parked with the
        reason (its outputs are lost, what it changed in the state before the raise stays)."""
        rejected: list[Rejected] | None = getattr(self.handler, "rejected", None)
        try:
            outputs = self.handler.handle(batch)
        except Exception as exc:
            log.exception("%s: handle() raised: %d records dead-lettered", self.name, len(batch))
            if rejected:
                rejected.clear()  # parked whole below
            reason = f"handle() raised on this slice: {exc!r}"
            parked = {(r.topic, r.partition, r.offset) for r in batch}
            for msg in messages:
                if (msg.topic, msg.partition, msg.offset) in parked:
                    self.parking.add(msg, msg.key, msg.value, reason, type(exc).__name__)
            return []
        if rejected:
            values = {(m.topic, m.partition, m.offset): m.value for m in messages}
            for r in rejected:
                self.parking.reject(r, values)
            rejected.clear()
        return outputs


FETCH_MAX_WAIT_MS = 10


def _short_fetch_wait() -> None:
    """Make Faust's consumer ask the broker to hold a fetch for at most FETCH_MAX_WAIT_MS.

    Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer
    (faust/transport/drivers/aiokafka.py, ``_create_worker_consumer``) and has no setting for
    it. The embedded broker holds an empty fetch for that long even when a record arrives
    meanwhile, which put ~0.4 s on every processor hop (measured by bench/e2e_latency.py: a
    one-message probe took ~381 ms at 1500 ms, 7 ms at 500 ms, 2 ms at 5 ms). The consumer keeps
    the value in ``_fetch_max_wait_ms`` until ``start()`` builds its fetcher, so it is set there.
    """
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "_meterflow", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    create_worker_consumer._meterflow = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def _flush_before_commit() -> None:
    """Make Faust's consumer flush the producer before it commits offsets.

    A stateless group resumes at the group's committed offset (``Processor(stateless=…)``), so a
    commit must never cover a record whose outputs are still in the producer's buffer: a crash
    then would lose them. Faust commits acknowledged offsets every ``broker_commit_interval``
    (faust/transport/consumer.py, ``Consumer._commit_tps``) and only waits for messages
    *attached* to events, not for those sent directly. Flushing once a commit (every second)
    costs nothing measurable; flushing after every batch instead cost billing ~30 % of its
    throughput (and a bulk import of accounts far more)."""
    from faust.transport.consumer import Consumer

    commit = Consumer._commit_tps
    if getattr(commit, "_meterflow", False):
        return

    async def commit_tps(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        await self.app.producer.flush()
        return await commit(self, tps, start_new_transaction)

    commit_tps._meterflow = True  # type: ignore[attr-defined]
    Consumer._commit_tps = commit_tps  # type: ignore[method-assign]


def serve_http(app: faust.App, web: FastAPI, port: int) -> None:
    """Serve ``web`` (health, metrics, read endpoints) while the Faust app runs; stop with it."""
    server = HttpServer(web, "0.0.0.0", port)

    @app.task
    async def start_http() -> None:
        await server.start()

    async def stop_http(sender: object, **kwargs: object) -> None:
        await server.stop()

    app.on_before_shutdown.connect(stop_http)  # type: ignore[arg-type]


def tune_gc() -> None:
    """Collect young objects less often (threshold 700 → 50,000).

    A processor holds a large, long-lived state and allocates many short-lived objects per
    event; with CPython's default thresholds the collector runs every few hundred events and
    each older-generation pass walks the whole state — measured on the billing fold, decoding
    a packed batch ran ~3× slower and the fold ~1.5× slower than with this threshold.
    """
    gc.set_threshold(50_000, 20, 100)


def make_app(app_id: str, bootstrap: str, datadir: Path, web_port: int, singleton: bool = False) -> faust.App:
    """A Faust app configured for meterflow: raw bytes, no tables, our own offsets recovery.
    ``singleton``: one member of the group gets every partition, the others stand by
    (:mod:`libs.stack.singleton`, for a processor in global mode)."""
    tune_gc()
    _short_fetch_wait()
    _flush_before_commit()
    extra: dict[str, Any] = {}
    if singleton:
        from libs.stack.singleton import SingleActiveAssignor

        extra["PartitionAssignor"] = SingleActiveAssignor
    return faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        datadir=str(datadir),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        web_port=web_port,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        # how long a rebalance waits for members to rejoin (Faust: 60 s). A member stopped or
        # killed mid-rebalance held every other replica that long, each time (seen on the
        # embedded broker with overlapping rolling updates); ours rejoin within seconds (the
        # revocation's snapshot is written by a forked child)
        broker_rebalance_timeout=15,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=8 << 20,
        consumer_max_fetch_size=8
        << 20,  # per partition and fetch: one partition a topic (embedded) needs more than 1 MiB
        producer_linger_ms=1,
        topic_allow_declare=False,
        topic_disable_leader=True,
        **extra,
    )
