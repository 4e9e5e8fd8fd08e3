"""Carrying commands to meters (C1, C6, C7): ``CommandRequested`` in, sent / acknowledged / failed out.

Every instance consumes ``mf.commands`` in a consumer group of its own (each must see every
command) and executes only commands for meters on its buses. A command is skipped when it
expired, or when its ``command_id`` was executed before (redelivery after a crash). Everything a
command yields has an id derived from the command id (:func:`event_id_for`), so even a command
executed twice publishes the same events twice, which consumers deduplicate. The order is: put
the outcome in the outbox, mark the command executed, commit the offset. Control owns retries,
so a failure is final here (``will_retry=False``).

**Clear and initialise** (C5, DL/T 645-2007 meters only; ``unsupported`` for others): the
meter's configured registers are read (the *final* reads; unreadable → ``rejected``, the meter
is not cleared), meter clear 1AH is sent with the meter's password and the command's
``params["operator_code"]`` (8 hex digits) or the meter's, and the registers are read again
(the *initial* reads). Once the meter has acknowledged the clear a ``MeterReplaced`` with
``reason="cleared"`` (same address) is always published — billing charges up to the final reads
and restarts at the initial ones, so the drop to zero is never charged as a rollover — whatever
became of the read-back: when it fails the initial reads are the zeros the acknowledged clear
left and the command fails ``no_reply`` / ``bad_reply`` / ``transport`` (control retries; a second
clear repeats the accounting from zero); when a register reads back at or above
``CLEARED_BELOW`` the command fails ``not_confirmed``. A refused clear (DAH, e.g. a wrong
password) fails ``rejected`` and publishes nothing else. ``replaced_at`` is the initial read's
meter clock when the meter's clock is among its quantities (billing times its readings by it),
else when the read-back arrived (without a read-back: the final read's clock plus the time
since). No poll of the meter runs from the final read until the ``MeterReplaced`` is in the
outbox (:meth:`BusWorker.meter_lock`), so each of its readings is published wholly before or
wholly after the clear, in that order; and every reading taken after it carries
``registers_since`` equal to its ``replaced_at`` (kept in :class:`LocalState`), by which billing
knows to wait for a ``MeterReplaced`` that travels on another topic. *Initialise* is the same
meter clear: DL/T 645-2007 has no other plain initialisation, and 1AH already clears the event
records an event clear 1BH would; the prepaid wallet (balance, purchase count) is ESAM-secured
on real meters and not touched.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from libs.events.acquisition import MeterReplaced, Rate, ReplacementReason, SwitchState
from libs.events.base import Event, event_id_for, utcnow
from libs.events.codec import Codec, EventDecodeError
from libs.events.control import (
    Action,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    CommandSent,
)
from libs.events.topics import COMMANDS
from libs.protocols import dlt645
from libs.protocols.drivers import CommandRejected, run_plan
from libs.protocols.drivers.cjt188 import Cjt188Driver
from libs.protocols.drivers.dlt645 import Dlt645Driver
from libs.protocols.drivers.modbus_rtu import ModbusRtuDriver
from libs.protocols.transaction import BadReply, NoReply, Priority
from libs.protocols.transaction import Bus as TxBus
from libs.protocols.transport import TransportError
from services.acquisition.engine import BusWorker, Engine
from services.acquisition.meters import relay_action
from services.acquisition.registry import Meter
from services.acquisition.state import LocalState

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0  # how long stopping the consumer may take (see CommandConsumer.run)
_RELAY = {Action.TRIP: False, Action.CLOSE: True}
_DLT645_ACTIONS = {
    Action.KEEP_POWER_ON: dlt645.RelayAction.KEEP_POWER,
    Action.KEEP_POWER_OFF: dlt645.RelayAction.KEEP_POWER_RELEASE,
    Action.ALARM_ON: dlt645.RelayAction.ALARM,
    Action.ALARM_OFF: dlt645.RelayAction.ALARM_RELEASE,
}
_CLEARS = {Action.CLEAR: "cleared", Action.INITIALISE: "initialised"}
# Params of a parameter download that are not parameters: control's retry markers ride along.
_NOT_PARAMETERS = ("operation", "effective_from", "retry_of", "attempt", "batch_id")
# A register reading back at or above this after a clear was not cleared: below it is what the
# meter can count between the clear and the read-back (a second or two, even at 200 kW).
CLEARED_BELOW = Decimal(1)


class Unsupported(Exception):
    """The meter's protocol has no such command."""


class CommandExecutor:
    """Executes one ``CommandRequested`` on the bus of its meter and publishes the outcome."""

    def __init__(self, engine: Engine, state: LocalState, max_age: timedelta = timedelta(minutes=10)) -> None:
        self.engine = engine
        self.state = state
        self.max_age = max_age
        self.executed = 0
        self.skipped = 0

    def _common(self, cmd: CommandRequested, step: str) -> dict[str, Any]:
        return {
            "event_id": event_id_for(cmd.project_id, cmd.command_id, step),
            "project_id": cmd.project_id,
            "subject_id": cmd.meter_id,
            "causation_id": cmd.event_id,
            "correlation_id": cmd.correlation_id or cmd.command_id,
            "command_id": cmd.command_id,
            "meter_id": cmd.meter_id,
        }

    async def handle(self, cmd: CommandRequested) -> list[Event]:
        """Execute ``cmd`` if it is ours, current and new; returns the events published."""
        worker = self.engine.worker_of(cmd.meter_id)
        if worker is None or self.engine.project_of(cmd.meter_id) != cmd.project_id:
            return []  # another instance's meter, or another project's meter of the same id
        now = utcnow()
        expired = cmd.expires_at is not None and cmd.expires_at <= now
        too_old = cmd.expires_at is None and now - cmd.time > self.max_age
        if expired or too_old or self.state.executed(cmd.command_id):
            self.skipped += 1
            log.info("command %s skipped (%s)", cmd.command_id, "expired" if expired or too_old else "done")
            return []
        sent = CommandSent(**self._common(cmd, "sent:1"), attempt=1)
        await self.engine.sink.put([sent])
        events: list[Event] = []
        # No poll of this meter from the first transaction until the outcome is in the sink: a
        # poll's reading lands wholly before or wholly after a clear (and its MeterReplaced).
        async with worker.meter_lock(cmd.meter_id):
            try:
                events = await self._execute(worker, cmd)
            except (NoReply, BadReply, TransportError, CommandRejected, Unsupported) as exc:
                reason = {
                    NoReply: "no_reply",
                    BadReply: "bad_reply",
                    CommandRejected: "rejected",
                    Unsupported: "unsupported",
                }.get(type(exc), "transport")
                if isinstance(exc, TransportError):
                    await worker.drop(worker.current_via)
                events = [
                    CommandFailed(
                        **self._common(cmd, "failed:1"),
                        attempt=1,
                        reason=f"{reason}: {exc}"[:500],
                        will_retry=False,
                    )
                ]
            await self.engine.sink.put(events)
            self._restarted(events)
        self.state.mark_executed(cmd.command_id)
        self.executed += 1
        return [sent, *events]

    async def _execute(self, worker: BusWorker, cmd: CommandRequested) -> list[Event]:
        via, route = worker.route()
        bus = await worker.link(via)
        meter = worker.meters[cmd.meter_id]
        driver = worker.drivers[cmd.meter_id]
        address = meter.address
        confirmed: str | None = None
        if cmd.action == Action.READ:
            reading = await worker.read(bus, meter, route, cmd.time, Priority.COMMAND, causation=cmd)
            worker.engine.state.save()
            ack = CommandAcknowledged(**self._common(cmd, "acknowledged"), confirmed_state="read")
            return [reading, ack]
        if cmd.action in _RELAY:
            close = _RELAY[cmd.action]
            if not isinstance(driver, Dlt645Driver | ModbusRtuDriver):
                raise Unsupported(f"{meter.protocol} meters have no relay")
            await driver.relay(bus, address, close)
            state = await driver.relay_state(bus, address, Priority.COMMAND)
            confirmed = state.value
            expected = SwitchState.CLOSED if close else SwitchState.OPEN
            if state != expected:
                return [self._not_confirmed(cmd, f"relay is {state.value}, expected {expected.value}")]
        elif cmd.action in (Action.VALVE_OPEN, Action.VALVE_CLOSE):
            if not isinstance(driver, Cjt188Driver):
                raise Unsupported(f"{meter.protocol} meters have no valve")
            opening = cmd.action == Action.VALVE_OPEN
            await driver.valve(bus, address, opening)
            state = await driver.valve_state(bus, address, Priority.COMMAND)
            confirmed = state.value
            expected = SwitchState.OPEN if opening else SwitchState.CLOSED
            if state != expected:
                return [self._not_confirmed(cmd, f"valve is {state.value}, expected {expected.value}")]
        elif cmd.action in _DLT645_ACTIONS:
            driver = _dlt645_2007(driver, cmd.action.value, meter.protocol)
            ack = await relay_action(bus, driver, address, _DLT645_ACTIONS[cmd.action])
            if ack.error:
                raise CommandRejected(cmd.action.value, f"error code {ack.error_code}", ack)
            confirmed = (await driver.relay_state(bus, address, Priority.COMMAND)).value
        elif cmd.action in _CLEARS:
            return await self._clear(worker, bus, cmd)
        elif cmd.action == Action.TIME_SYNC:
            confirmed = await self._time_sync(bus, driver)
        elif cmd.action == Action.SET_PARAMETER and cmd.params.get("operation") == "parameters":
            # Control's parameter download (C8): prices and alarm limits, written and read back.
            driver = _dlt645_2007(driver, "parameter download", meter.protocol)
            params = {k: v for k, v in cmd.params.items() if k not in _NOT_PARAMETERS}
            if not params:  # e.g. a batch issue_prices to a meter with no prices: nothing was set
                raise Unsupported("no parameters to download")
            try:
                written = await driver.write_parameters(bus, address, params)
            except ValueError as exc:
                raise Unsupported(str(exc)) from None
            confirmed = ",".join(f"{di}={value}" for di, value in written.items())
        else:
            raise Unsupported(f"action {cmd.action.value} is not carried by acquisition")
        return [CommandAcknowledged(**self._common(cmd, "acknowledged"), confirmed_state=confirmed)]

    async def _clear(self, worker: BusWorker, bus: TxBus, cmd: CommandRequested) -> list[Event]:
        """Meter clear 1AH between two register reads (see the module docstring)."""
        meter = worker.meters[cmd.meter_id]
        driver = _dlt645_2007(worker.drivers[cmd.meter_id], cmd.action.value, meter.protocol)
        operator = cmd.params.get("operator_code") or driver.operator
        try:  # the codes are checked before anything goes out
            dlt645.meter_clear(meter.address.zfill(12), driver.password, operator)
        except ValueError as exc:  # FrameError: not 8 hex digits
            raise Unsupported(f"operator_code: {exc}") from None
        configured = worker.quantities[meter.id]
        wanted = [q for q in configured if q in driver.edition.registers] or ["active_import_kwh"]
        wanted += ["meter_time"] if "meter_time" in configured else []
        final = await run_plan(bus, driver.plan(meter.address, wanted), Priority.COMMAND)
        read_at = utcnow()
        if not final.registers:
            raise CommandRejected(
                "meter clear", f"registers unreadable before the clear {final.errors}", None
            )
        await driver.clear(bus, meter.address, operator)
        zeros = {name: dict.fromkeys(rates, Decimal(0)) for name, rates in final.registers.items()}
        try:
            initial = await run_plan(bus, driver.plan(meter.address, wanted), Priority.COMMAND)
        except (NoReply, BadReply, TransportError):
            # Cleared but not read back: billing must restart anyway, from the zeros it left,
            # at the clear's time on the clock the final read was timed by.
            now = utcnow()
            at = now if final.meter_time is None else final.meter_time + (now - read_at)
            cleared: list[Event] = [self._cleared(cmd, meter, final.registers, zeros, at)]
            await self.engine.sink.put(cleared)
            self._restarted(cleared)
            raise
        registers = {**zeros, **initial.registers}  # a register not read back: the clear's zero
        replaced = self._cleared(cmd, meter, final.registers, registers, initial.meter_time or utcnow())
        left = [f"{name} not read" for name in zeros if name not in initial.registers] + [
            f"{name}.{rate.value}={value}"
            for name, rates in initial.registers.items()
            for rate, value in rates.items()
            if value >= CLEARED_BELOW
        ]
        if left:
            return [replaced, self._not_confirmed(cmd, f"after the clear: {', '.join(left)}")]
        confirmed = _CLEARS[cmd.action]
        return [replaced, CommandAcknowledged(**self._common(cmd, "acknowledged"), confirmed_state=confirmed)]

    def _cleared(
        self,
        cmd: CommandRequested,
        meter: Meter,
        final: dict[str, dict[Rate, Decimal]],
        initial: dict[str, dict[Rate, Decimal]],
        at: datetime,
    ) -> MeterReplaced:
        """The clear's ``MeterReplaced`` (see :meth:`_restarted`)."""
        return MeterReplaced(
            event_id=event_id_for(cmd.project_id, cmd.command_id, "cleared"),
            project_id=cmd.project_id,
            subject_id=cmd.meter_id,
            causation_id=cmd.event_id,
            correlation_id=cmd.correlation_id or cmd.command_id,
            meter_id=cmd.meter_id,
            old_address=meter.address,
            new_address=meter.address,
            final_registers=final,
            initial_registers=initial,
            replaced_at=at,
            reason=ReplacementReason.CLEARED,
        )

    def _restarted(self, published: list[Event]) -> None:
        """From now on the readings of a meter whose ``MeterReplaced`` is in the outbox count from
        its ``replaced_at`` (exactly: billing matches it). Called with the meter lock still held,
        so no reading of the meter is under way, and only once the fact is in the outbox: a
        ``registers_since`` naming a replacement never published would hold the meter's readings
        in billing for good, where a crash between the two only loses the name (billing then
        orders the two facts by time, as for readings of before ``registers_since``)."""
        for fact in published:
            if isinstance(fact, MeterReplaced):
                self.engine.state.set_registers_since(fact.meter_id, fact.replaced_at)
                self.engine.state.save()

    async def _time_sync(self, bus: TxBus, driver: Any) -> str:
        if not isinstance(driver, Dlt645Driver):
            raise Unsupported("time sync needs DL/T 645")
        await driver.sync_time(bus, utcnow())
        return "broadcast"

    def _not_confirmed(self, cmd: CommandRequested, detail: str) -> CommandFailed:
        return CommandFailed(
            **self._common(cmd, "failed:1"), attempt=1, reason=f"not_confirmed: {detail}", will_retry=False
        )


def _dlt645_2007(driver: Any, what: str, protocol: str) -> Dlt645Driver:
    """``driver`` if it speaks DL/T 645-2007 (the commands beyond reads and relays need it), else
    ``Unsupported``: a typed failure control does not retry."""
    if not isinstance(driver, Dlt645Driver) or driver.protocol != "dlt645-2007":
        raise Unsupported(f"{what} needs DL/T 645-2007, not {protocol}")
    return driver


class CommandConsumer:
    """Reads ``mf.commands`` and hands our meters' commands to the executor.

    Fetching does not wait for execution: each fetched batch runs as a task, so a command for an
    idle bus is not held behind a slow one on another bus (or a retrying meter). One meter's
    commands still run in order (a lock per meter, taken in arrival order), and offsets are
    committed only up to the oldest batch not yet finished — a crash re-delivers the unfinished
    ones, which the executor skips if they had been executed.
    """

    MAX_IN_FLIGHT = 64  # batches; beyond it the consumer waits for the oldest before fetching

    def __init__(self, bootstrap: str, group_id: str, executor: CommandExecutor) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.executor = executor
        self.codec = Codec()
        self.connected = False
        self._meter_locks: dict[str, asyncio.Lock] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; reconnects with backoff while the broker is away."""
        backoff = 0.5
        while not stop.is_set():
            consumer = AIOKafkaConsumer(
                COMMANDS.name,
                bootstrap_servers=self.bootstrap,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=10_000,
                heartbeat_interval_ms=1000,
                fetch_max_wait_ms=20,  # a command should not wait for the broker's fetch timer
            )
            in_flight: collections.deque[tuple[asyncio.Future[None], dict[TopicPartition, int]]] = (
                collections.deque()
            )
            try:
                await consumer.start()
                self.connected = True
                backoff = 0.5
                while not stop.is_set():
                    if len(in_flight) >= self.MAX_IN_FLIGHT:
                        await asyncio.wait([in_flight[0][0]])
                    batch = await consumer.getmany(timeout_ms=100)
                    if batch:
                        commands = []
                        for records in batch.values():
                            for record in records:
                                commands.extend(self._commands(record.value))
                        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                        in_flight.append((asyncio.ensure_future(self.execute(commands)), offsets))
                    done: dict[TopicPartition, int] = {}
                    while in_flight and in_flight[0][0].done():
                        task, offsets = in_flight.popleft()
                        task.result()  # an executor bug surfaces here, before its offsets commit
                        done.update(offsets)
                    if done:
                        await consumer.commit(done)
                if in_flight:  # stopping: let running commands finish and commit them
                    await asyncio.gather(*(task for task, _ in in_flight))
                    await consumer.commit({tp: o for _, offsets in in_flight for tp, o in offsets.items()})
            except (KafkaError, OSError) as exc:
                log.warning("command consumer: %r; reconnecting in %.1fs", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                self.connected = False
                # Bounded: with the broker unreachable aiokafka's stop retries for a long time,
                # and a service must stop within its grace period (the offsets are committed
                # above; anything not committed is redelivered and executed once by command id).
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)

    async def execute(self, commands: list[CommandRequested]) -> None:
        """One meter's commands in order; different meters (and buses) at once."""
        by_meter: dict[str, list[CommandRequested]] = {}
        for command in commands:
            by_meter.setdefault(command.meter_id, []).append(command)

        async def one_meter(meter_id: str, queue: list[CommandRequested]) -> None:
            lock = self._meter_locks.setdefault(meter_id, asyncio.Lock())
            async with lock:
                for command in queue:
                    await self.executor.handle(command)

        await asyncio.gather(*(one_meter(m, q) for m, q in by_meter.items()))

    def _commands(self, value: bytes | None) -> list[CommandRequested]:
        if value is None:
            return []
        try:
            return [e for e in self.codec.decode(value) if isinstance(e, CommandRequested)]
        except EventDecodeError as exc:
            log.warning("undecodable command message skipped: %s", exc)
            return []
