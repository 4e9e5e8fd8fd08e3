"""The bus engine: one worker per bus, all buses at once, one transaction at a time per bus.

A scheduler task runs :func:`services.acquisition.schedule.plan` and hands due jobs to the
worker of their bus. A worker takes everything queued as one *round*: it picks the route
(primary, or the alternate concentrator :func:`commstatus.route_for` chose), runs the round's
jobs through the protocol drivers on its :class:`libs.protocols.transaction.Bus`, and publishes
every result through the outbox as it goes (``ReadingRecorded`` / ``ReadingFailed``). A dead
meter costs only its own timeout and retries. A transport error closes the link; the worker
reconnects with capped exponential backoff and counts the concentrator's uplink as failed.

The bus lock is taken per transaction, so a meter's own reads could interleave with a command
to it. A per-meter lock (:meth:`BusWorker.meter_lock`) prevents that: a scheduled read holds it
from before its first transaction until its event is in the sink, and so does a command (a
clear's final read, clear, read-back and ``MeterReplaced``); a round polls the bus's other
meters first while one is held. Every reading carries ``registers_since``, the ``replaced_at`` of
the meter's latest clear (:class:`LocalState` keeps it across restarts).

Comm status is folded per concentrator round: the results of a concentrator's buses are merged
until each of them has reported once (or one reports twice), then :func:`commstatus.fold` turns
them into MeterOnline / MeterLostContact / Concentrator* / RouteSwitched events. While a
concentrator is failed over, its workers probe the primary route once per round, which is what
lets the fold switch back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from libs.events.acquisition import ReadingFailed, ReadingRecorded, Route
from libs.events.base import Event, event_id_for, utcnow
from libs.protocols.drivers import MeterRead, run_plan
from libs.protocols.drivers.dlt645 import Dlt645Driver
from libs.protocols.transaction import DEFAULT_TIMING, BadReply, NoReply, Priority, Timing, TransactionRecord
from libs.protocols.transaction import Bus as TxBus
from libs.protocols.transport import LineSettings, SerialTransport, TcpTransport, Transport, TransportError
from services.acquisition.commstatus import CommConfig, CommState, PollRound, fold
from services.acquisition.meters import make_driver, read_frozen, read_quantities
from services.acquisition.registry import Bus, Concentrator, Meter, Registry, SerialEndpoint, TcpEndpoint
from services.acquisition.schedule import JobKind, Schedule, plan
from services.acquisition.state import LocalState

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where events go: :class:`libs.stack.outbox.Outbox` (``put`` waits when it is full)."""

    async def put(self, events: list[Event]) -> None: ...


@dataclass(frozen=True)
class Job:
    """One thing to do on a bus: a meter's read (or frozen read), or a broadcast time sync."""

    kind: JobKind
    meter_id: str | None
    at: datetime  # the slot that fell due (part of the reading's event id)


@dataclass
class EngineConfig:
    plans: Mapping[str, tuple[Schedule, ...]]
    comm: CommConfig = field(default_factory=CommConfig)
    timing: Mapping[str, Timing] = field(default_factory=dict)  # per protocol, over DEFAULT_TIMING
    reconnect_max: float = 30.0
    read_at_start: bool = True  # read every meter once at start, whatever the schedule says


def open_transport(endpoint: TcpEndpoint | SerialEndpoint, line: LineSettings) -> Transport:
    """The byte transport for a bus endpoint."""
    if isinstance(endpoint, TcpEndpoint):
        return TcpTransport(endpoint.host, endpoint.port, line, connect_timeout=3.0)
    return SerialTransport(endpoint.device, line)


@dataclass
class _Link:
    """One route onto a bus: its transport and transaction layer (stats survive reconnects)."""

    transport: Transport
    bus: TxBus
    open: bool = False
    seen: int = 0  # transaction records already harvested for metrics


class BusWorker:
    """Polls one bus: rounds of jobs, over the primary route or an alternate concentrator."""

    def __init__(self, engine: Engine, concentrator: Concentrator, bus: Bus) -> None:
        self.engine = engine
        self.concentrator = concentrator
        self.bus = bus
        self.line = LineSettings(bus.baud, bus.data_bits, bus.parity, bus.stop_bits)
        base = engine.config.timing.get(bus.protocol) or DEFAULT_TIMING.get(bus.protocol, Timing())
        # the bus's configured response timeout caps the protocol's allowed response delay
        self.timing = base.with_(response_delay=min(base.response_delay, bus.response_timeout_ms / 1000))
        self.drivers: dict[str, Any] = {m.id: make_driver(m) for m in bus.meters}
        self.meters: dict[str, Meter] = {m.id: m for m in bus.meters}
        self.quantities = {m.id: read_quantities(m, self.drivers[m.id]) for m in bus.meters}
        self.decode = next(iter(self.drivers.values())).decode if self.drivers else None
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.links: dict[str | None, _Link] = {}  # via (None = primary) → link
        self.backoff = 0.0
        self.rounds = 0
        self.current_via: str | None = None
        self._meter_locks: dict[str, asyncio.Lock] = {}

    def meter_lock(self, meter_id: str) -> asyncio.Lock:
        """One meter's exclusion, held from a read's (or command's) first transaction until its
        events are in the sink, so a poll never falls between a clear's reads (see the module
        docstring). Not re-entrant: :meth:`read` leaves it to its caller."""
        lock = self._meter_locks.get(meter_id)
        if lock is None:
            lock = self._meter_locks[meter_id] = asyncio.Lock()
        return lock

    # -- links --------------------------------------------------------------------------
    def _endpoint(self, via: str | None) -> TcpEndpoint | SerialEndpoint | None:
        if via is None:
            return self.bus.transport
        return next((r.transport for r in self.bus.alternate_routes if r.concentrator_id == via), None)

    def route(self) -> tuple[str | None, Route]:
        """The route to use now: the alternate the comm status chose, if this bus has one."""
        state = self.engine.comm.routes.get(self.concentrator.id)
        via = state.via if state is not None else None
        if via is not None and self._endpoint(via) is None:
            via = None  # failed over, but this bus has no path through that concentrator
        return via, Route(
            concentrator_id=self.concentrator.id,
            bus_id=self.bus.id,
            via=(via,) if via else (),
            failover=via is not None,
        )

    async def link(self, via: str | None) -> TxBus:
        """The transaction layer of a route, connected; TransportError when it cannot be."""
        link = self.links.get(via)
        if link is None:
            endpoint = self._endpoint(via)
            assert endpoint is not None and self.decode is not None
            transport = open_transport(endpoint, self.line)
            name = self.bus.id if via is None else f"{self.bus.id}@{via}"
            link = self.links[via] = _Link(
                transport, TxBus(transport, self.decode, timing=self.timing, name=name)
            )
        if not link.open:
            await link.transport.open()
            link.open = True
        return link.bus

    async def drop(self, via: str | None) -> None:
        """Close a route's transport after an error; the next use reconnects."""
        link = self.links.get(via)
        if link is not None and link.open:
            link.open = False
            with contextlib.suppress(Exception):
                await link.transport.close()

    def harvest(self) -> list[TransactionRecord]:
        """Transaction records not yet seen (for the latency histogram)."""
        out: list[TransactionRecord] = []
        for link in self.links.values():
            fresh = link.bus.stats.transactions - link.seen
            if fresh > 0:
                out.extend(list(link.bus.records)[-min(fresh, len(link.bus.records)) :])
                link.seen = link.bus.stats.transactions
        return out

    # -- rounds -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Take queued jobs as rounds until ``stop``; the current transaction always finishes."""
        try:
            while not stop.is_set():
                try:
                    first = await asyncio.wait_for(self.queue.get(), 0.5)
                except TimeoutError:
                    continue
                jobs = {(first.kind, first.meter_id): first}
                while not self.queue.empty():
                    job = self.queue.get_nowait()
                    jobs[(job.kind, job.meter_id)] = job  # a later slot replaces a queued one
                await self.run_round(list(jobs.values()), stop)
        finally:
            for via in list(self.links):
                await self.drop(via)

    async def run_round(self, jobs: list[Job], stop: asyncio.Event | None = None) -> dict[str, bool]:
        """Run one round of jobs (time sync first); returns meter id → answered."""
        jobs = sorted(jobs, key=lambda j: j.kind != JobKind.TIME_SYNC)
        via, route = self.route()
        self.current_via = via
        uplinks: dict[str, bool] = {}
        if via is not None:
            uplinks[self.concentrator.id] = await self.probe_primary()
        reads: dict[str, bool] = {}
        try:
            bus = await self.link(via)
        except TransportError as exc:
            log.warning("bus %s: cannot connect via %s: %s", self.bus.id, via or "primary", exc)
            uplinks[via or self.concentrator.id] = False
            await self._fail_all(jobs, route, "transport", str(exc), reads)
            await self._report(reads, uplinks)
            await self._backoff(stop)
            return reads
        self.backoff = 0.0
        pending, deferred = collections.deque(jobs), set[Job]()
        while pending:
            if stop is not None and stop.is_set():
                break
            job = pending.popleft()
            if job.meter_id is not None and self.meter_lock(job.meter_id).locked() and job not in deferred:
                # its meter is busy with a command (a clear, say): poll the others first
                deferred.add(job)
                pending.append(job)
                continue
            try:
                await self._run_job(bus, job, route, reads)
            except TransportError as exc:
                log.warning("bus %s: link lost via %s: %s", self.bus.id, via or "primary", exc)
                await self.drop(via)
                uplinks[via or self.concentrator.id] = False
                await self._fail_all([job, *pending], route, "transport", str(exc), reads)
                break
        self.engine.state.save()
        await self._report(reads, uplinks)
        self.rounds += 1
        return reads

    async def _backoff(self, stop: asyncio.Event | None) -> None:
        self.backoff = min(self.engine.config.reconnect_max, max(0.5, self.backoff * 2))
        if stop is None:
            await asyncio.sleep(self.backoff)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self.backoff)

    async def _report(self, reads: dict[str, bool], uplinks: dict[str, bool]) -> None:
        events = self.engine.report(self, reads, uplinks)
        if events:
            await self.engine.sink.put(events)

    async def _fail_all(
        self, jobs: list[Job], route: Route, reason: str, detail: str, reads: dict[str, bool]
    ) -> None:
        events: list[Event] = []
        for job in jobs:
            if job.meter_id is not None and job.kind == JobKind.READ:
                reads[job.meter_id] = False
                events.append(self.failed(job.meter_id, job.at, route, reason, detail, 1))
        if events:
            await self.engine.sink.put(events)

    async def _run_job(self, bus: TxBus, job: Job, route: Route, reads: dict[str, bool]) -> None:
        if job.kind == JobKind.TIME_SYNC:
            driver = next((d for d in self.drivers.values() if isinstance(d, Dlt645Driver)), None)
            if driver is not None:
                await driver.sync_time(bus, utcnow())
            return
        assert job.meter_id is not None
        meter = self.meters[job.meter_id]
        event: ReadingRecorded | ReadingFailed
        async with self.meter_lock(meter.id):  # until the event is in the sink: see meter_lock
            try:
                if job.kind == JobKind.READ:
                    event = await self.read(bus, meter, route, job.at)
                else:
                    frozen = await read_frozen(
                        bus, self.drivers[meter.id], meter.address, job.kind == JobKind.FROZEN_MONTHLY
                    )
                    if frozen is None:
                        return
                    event = self.recorded(meter, frozen[0], route, job.at, frozen=frozen[1])
            except (NoReply, BadReply) as exc:
                reason = "timeout" if isinstance(exc, NoReply) else "bad_reply"
                event = self.failed(meter.id, job.at, route, reason, str(exc), exc.attempts)
            if job.kind == JobKind.READ:
                reads[meter.id] = isinstance(event, ReadingRecorded)
            await self.engine.sink.put([event])

    async def read(
        self,
        bus: TxBus,
        meter: Meter,
        route: Route,
        at: datetime,
        priority: Priority = Priority.ROUTINE,
        causation: Event | None = None,
    ) -> ReadingRecorded:
        """Read a meter's configured quantities; NoReply / BadReply / TransportError propagate.

        The caller holds :meth:`meter_lock` until the reading is in the sink."""
        driver = self.drivers[meter.id]
        result = await run_plan(bus, driver.plan(meter.address, self.quantities[meter.id]), priority)
        if result.errors:
            log.debug("meter %s refused %s", meter.id, result.errors)
        return self.recorded(meter, result, route, at, causation=causation)

    def recorded(
        self,
        meter: Meter,
        result: MeterRead,
        route: Route,
        at: datetime,
        frozen: str | None = None,
        causation: Event | None = None,
    ) -> ReadingRecorded:
        project_id = self.engine.project_of(meter.id)
        if causation is not None:
            event_id = event_id_for(project_id, meter.id, "reading", getattr(causation, "command_id", ""))
        else:
            event_id = event_id_for(project_id, meter.id, "reading", frozen or "live", at.isoformat())
        received_at = utcnow()
        return ReadingRecorded(
            event_id=event_id,
            project_id=project_id,
            subject_id=meter.id,
            sequence=self.engine.state.next_sequence(meter.id),
            time=received_at,
            causation_id=causation.event_id if causation else None,
            correlation_id=causation.correlation_id if causation else None,
            meter_id=meter.id,
            registers=result.registers,
            instant=result.instant,
            meter_time=result.meter_time,
            received_at=received_at,
            route=route,
            relay=result.relay,
            valve=result.valve,
            remaining_fen=result.remaining_fen,
            purchase_count=result.purchase_count,
            frozen=frozen,
            registers_since=self.engine.state.registers_since(meter.id),
        )

    def failed(
        self, meter_id: str, at: datetime, route: Route, reason: str, detail: str, attempts: int
    ) -> ReadingFailed:
        project_id = self.engine.project_of(meter_id)
        return ReadingFailed(
            event_id=event_id_for(project_id, meter_id, "read_failed", at.isoformat(), utcnow().isoformat()),
            project_id=project_id,
            subject_id=meter_id,
            meter_id=meter_id,
            reason=reason,
            detail=detail[:500],
            attempts=max(1, attempts),
            route=route,
        )

    async def probe_primary(self) -> bool:
        """While failed over: does the primary route answer one request now (no retries)?"""
        meter = next(iter(self.meters.values()), None)
        if meter is None:
            return False
        try:
            bus = await self.link(None)
            request = self.drivers[meter.id].plan(meter.address, self.quantities[meter.id][:1] or None)[0]
            await bus.transact(
                request.wire,
                reply_size=request.reply_size,
                accept=request.accept,
                timing=self.timing.with_(retries=0),
            )
            return True
        except TransportError:
            await self.drop(None)
            return False
        except (NoReply, BadReply):
            return False


@dataclass
class _Pending:
    buses: set[str] = field(default_factory=set)
    reads: dict[str, bool] = field(default_factory=dict)
    uplinks: dict[str, bool] = field(default_factory=dict)


class Engine:
    """Every bus worker, the scheduler and the comm-status fold."""

    def __init__(
        self,
        registry: Registry,
        sink: Sink,
        config: EngineConfig,
        state: LocalState | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = registry
        self.sink = sink
        self.config = config
        self.state = state or LocalState()
        self.clock = clock
        self.comm = CommState()
        self.workers: dict[str, BusWorker] = {}
        self._projects = {loc.meter.id: loc.project_id for loc in registry.all_meters()}
        self._pending: dict[str, _Pending] = {}
        for project in registry.projects:
            for c in project.concentrators:
                for bus in c.buses:
                    if bus.meters:
                        self.workers[bus.id] = BusWorker(self, c, bus)
        self.started = False

    def project_of(self, meter_id: str) -> str:
        return self._projects[meter_id]

    def worker_of(self, meter_id: str) -> BusWorker | None:
        """The worker polling a meter; None for a meter this instance does not know."""
        try:
            return self.workers.get(self.registry.locate(meter_id).bus_id)
        except KeyError:
            return None

    def enqueue_all(self, kind: JobKind = JobKind.READ) -> None:
        """Queue a job of ``kind`` for every meter (the start-up read)."""
        now = self.clock()
        for worker in self.workers.values():
            for meter_id in worker.meters:
                worker.queue.put_nowait(Job(kind, meter_id, now))

    # -- comm status --------------------------------------------------------------------
    def report(self, worker: BusWorker, reads: dict[str, bool], uplinks: dict[str, bool]) -> list[Event]:
        """Merge one bus round into its concentrator's round; fold when the round is complete."""
        cid = worker.concentrator.id
        events: list[Event] = []
        pending = self._pending.setdefault(cid, _Pending())
        if worker.bus.id in pending.buses:  # this bus is a round ahead: close the open round first
            events += self._fold(cid)
            pending = self._pending.setdefault(cid, _Pending())
        pending.buses.add(worker.bus.id)
        pending.reads.update(reads)
        for key, ok in uplinks.items():
            pending.uplinks[key] = pending.uplinks.get(key, True) and ok
        polled = {b.id for b in worker.concentrator.buses if b.id in self.workers}
        if pending.buses >= polled:
            events += self._fold(cid)
        return events

    def _fold(self, concentrator_id: str) -> list[Event]:
        pending = self._pending.pop(concentrator_id, None)
        if pending is None or not (pending.reads or pending.uplinks):
            return []
        poll = PollRound(at=self.clock(), reads=pending.reads, uplinks=pending.uplinks)
        self.comm, events = fold(self.comm, self.registry, poll, self.config.comm)
        for event in events:
            log.info("%s %s", type(event).__name__, event.subject_id)
        return events

    # -- running ------------------------------------------------------------------------
    async def schedule(self, stop: asyncio.Event) -> None:
        """Hand due jobs to the workers of their buses until ``stop``."""
        since = self.clock()
        while not stop.is_set():
            now = self.clock()
            result = plan(self.registry, self.config.plans, since, now)
            since = now
            for due in result.due:
                worker = self.workers.get(due.bus_id)
                if worker is not None:
                    worker.queue.put_nowait(Job(due.kind, due.meter_id, due.at))
            wake = (result.wake_at - self.clock()).total_seconds() if result.wake_at else 60.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(max(wake, 0.01), 60.0))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every bus until ``stop``; returns once every worker finished its transaction."""
        if self.config.read_at_start:
            self.enqueue_all()
        self.started = True
        tasks = [asyncio.create_task(w.run(stop), name=f"bus {b}") for b, w in self.workers.items()]
        tasks.append(asyncio.create_task(self.schedule(stop), name="scheduler"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.state.save()
