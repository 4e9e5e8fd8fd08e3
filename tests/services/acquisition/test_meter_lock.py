"""The per-meter lock without Kafka: a round polls the bus's other meters while one is busy with a
command, and every kind of reading carries the meter's ``registers_since``, also when a clear is
not read back (and the lock is released then)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from libs.events.acquisition import MeterReplaced, ReadingFailed, ReadingRecorded
from libs.events.base import Event, utcnow
from libs.events.control import Action, CommandFailed, CommandRequested
from services.acquisition.commands import CommandExecutor
from services.acquisition.engine import Engine, Job
from services.acquisition.schedule import JobKind
from services.acquisition.simsite import registry_from_lines

from .helpers import E1, engine_config, running_site, site_config

E2, E3 = "e/000000000002", "e/000000000003"


class Memory:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def put(self, events: list[Event]) -> None:
        self.events.extend(events)

    def readings(self) -> list[ReadingRecorded]:
        return [e for e in self.events if isinstance(e, ReadingRecorded)]


def command(action: Action, command_id: str) -> CommandRequested:
    return CommandRequested(
        project_id="demo", subject_id=E1, command_id=command_id, meter_id=E1, action=action,
        requested_by="op-1", reason="test",
    )  # fmt: skip


async def test_a_round_polls_the_other_meters_while_one_is_busy() -> None:
    async with running_site() as site:
        sink = Memory()
        engine = Engine(registry_from_lines(site.endpoints(), site_config()), sink, engine_config())
        worker = engine.workers["e"]
        lock = worker.meter_lock(E1)
        assert worker.meter_lock(E1) is lock and worker.meter_lock(E2) is not lock
        await lock.acquire()  # a command to E1 is under way
        round_ = asyncio.create_task(worker.run_round([Job(JobKind.READ, m, utcnow()) for m in (E1, E2, E3)]))
        async with asyncio.timeout(10):
            while len(sink.readings()) < 2:
                await asyncio.sleep(0.05)
        assert [r.meter_id for r in sink.readings()] == [E2, E3]
        assert not round_.done()  # E1 waits for the command
        lock.release()
        assert await asyncio.wait_for(round_, 10) == {E1: True, E2: True, E3: True}
        assert [r.meter_id for r in sink.readings()] == [E2, E3, E1]
        await worker.drop(None)


async def test_every_reading_carries_registers_since_and_a_silent_clear_sets_it() -> None:
    async with running_site() as site:
        sink = Memory()
        engine = Engine(registry_from_lines(site.endpoints(), site_config()), sink, engine_config())
        executor = CommandExecutor(engine, engine.state)
        worker = engine.workers["e"]
        earlier = datetime(2026, 11, 20, 9, 0, 0, 500_000, tzinfo=UTC)
        engine.state.set_registers_since(E1, earlier)
        now = utcnow()
        await worker.run_round([Job(JobKind.READ, E1, now), Job(JobKind.FROZEN_DAILY, E1, now)])
        async with asyncio.timeout(10):  # a READ command reads under the lock it holds: no deadlock
            await executor.handle(command(Action.READ, "read-1"))
        scheduled, frozen, on_demand = sink.readings()
        assert scheduled.frozen is None and frozen.frozen and on_demand.causation_id is not None
        assert {r.registers_since for r in (scheduled, frozen, on_demand)} == {earlier}

        state = site.meter(E1).state
        clear = state.clear

        def clear_then_fall_silent() -> None:
            clear()
            site.set_offline(E1)

        state.clear = clear_then_fall_silent  # type: ignore[method-assign]
        async with asyncio.timeout(20):
            outcome = await executor.handle(command(Action.CLEAR, "silent"))
        [replaced] = [e for e in sink.events if isinstance(e, MeterReplaced)]  # put by the clear itself
        assert isinstance(outcome[-1], CommandFailed) and outcome[-1].reason.startswith("no_reply")
        assert engine.state.registers_since(E1) == replaced.replaced_at != earlier
        assert not worker.meter_lock(E1).locked()  # released on the failure path too
        site.set_offline(E1, False)
        sink.events.clear()
        async with asyncio.timeout(20):
            await worker.run_round([Job(JobKind.READ, E1, utcnow())])
        assert not [e for e in sink.events if isinstance(e, ReadingFailed)]
        [after] = sink.readings()
        assert after.registers_since == replaced.replaced_at
        await worker.drop(None)
