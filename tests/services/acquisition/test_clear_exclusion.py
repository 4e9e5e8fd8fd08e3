"""A clear of a meter that is being polled as fast as the bus allows: no poll of that meter falls
between the clear's final read, clear, read-back and ``MeterReplaced``, and in the order
acquisition publishes, every reading before the ``MeterReplaced`` is of the old registers and
every one after it of the cleared ones, carrying ``registers_since`` = its ``replaced_at``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from libs.events.acquisition import MeterReplaced, Rate, ReadingRecorded
from libs.events.base import Event, utcnow
from libs.events.control import Action, CommandAcknowledged, CommandRequested, CommandSent
from services.acquisition.engine import Job, Sink
from services.acquisition.schedule import JobKind

from .helpers import E1, Collector, engine_config, running_service, running_site

pytestmark = pytest.mark.slow


class Recording:
    """The engine's sink, noting the order events go into the outbox (the order published)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.events: list[Event] = []

    async def put(self, events: list[Event]) -> None:
        await self.sink.put(events)
        self.events.extend(events)  # no await since the put: the order of the puts

    def of(self, kind: type[Event]) -> Sequence[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def total(reading: ReadingRecorded) -> float:
    return float(reading.registers["active_import_kwh"][Rate.TOTAL])


async def test_a_poll_of_the_meter_never_straddles_its_clear(bootstrap: str, tmp_path: Path) -> None:
    config = replace(engine_config(), plans={"default": ()}, read_at_start=False)  # the polls are ours
    async with running_site() as site, running_service(site, bootstrap, tmp_path, config) as run:
        seen = Collector(bootstrap, run.project_id).start()
        engine = run.service.engine
        sink = Recording(engine.sink)
        engine.sink = sink
        worker = engine.workers["e"]
        done = asyncio.Event()

        async def poll_e1() -> None:  # one scheduled read of E1 after another, as fast as the bus goes
            while not done.is_set():
                await worker.run_round([Job(JobKind.READ, E1, utcnow())], done)

        def e1_readings() -> list[tuple[int, ReadingRecorded]]:
            return [
                (n, e)
                for n, e in enumerate(sink.events)
                if isinstance(e, ReadingRecorded) and e.meter_id == E1 and e.frozen is None
            ]

        poller = asyncio.create_task(poll_e1())
        try:
            await seen.wait_for(e1_readings)
            clear = CommandRequested(
                project_id=run.project_id, subject_id=E1, command_id="clear", meter_id=E1,
                action=Action.CLEAR, requested_by="op-1", reason="move-in",
            )  # fmt: skip
            outcome = await run.service.executor.handle(clear)  # as the command consumer does
            assert [type(e) for e in outcome] == [CommandSent, MeterReplaced, CommandAcknowledged]
            replaced = outcome[1]
            assert isinstance(replaced, MeterReplaced)
            at = sink.events.index(replaced)
            await seen.wait_for(lambda: [n for n, _ in e1_readings() if n > at])
        finally:
            done.set()
            await poller
        final = float(replaced.final_registers["active_import_kwh"][Rate.TOTAL])
        assert final == 100.0 and site.meter(E1).state.clear_count == 1
        before = [r for n, r in e1_readings() if n < at]
        after = [r for n, r in e1_readings() if n > at]
        assert before and after
        # Without the meter lock a poll reads the registers before the clear and the rest after
        # it: published after the MeterReplaced (or timed after it), billing sees a false drop.
        since = replaced.replaced_at
        assert [(total(r), r.time) for r in before if total(r) < final or r.time > since] == []
        assert all(r.registers_since is None for r in before)  # read before the clear: none yet
        assert [(total(r), r.registers_since) for r in after if total(r) >= final] == []
        assert all(r.registers_since == since for r in after)
        # and so they arrive, for billing to match against the MeterReplaced on the other topic
        await seen.wait_for(
            lambda: [r for r in seen.of(ReadingRecorded, meter_id=E1) if r.registers_since == since]
        )
        await seen.close()
