"""A small simulated site and an in-process acquisition service against a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.events.base import Event
from libs.events.codec import Codec
from libs.events.topics import CATALOGUE, COMM, COMMANDS, READINGS, REGISTRY_TOPIC
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.runtime import Site
from libs.protocols.simulator.site import (
    BusConfig,
    ConcentratorConfig,
    Link,
    MeterConfig,
    MeterModel,
    SiteConfig,
)
from libs.protocols.transaction import Timing
from libs.settings import load
from libs.stack.broker import ensure_topics
from services.acquisition.commstatus import CommConfig
from services.acquisition.engine import EngineConfig
from services.acquisition.registry import Registry
from services.acquisition.schedule import Cron, JobKind, Schedule
from services.acquisition.service import AcquisitionService
from services.acquisition.settings import AcquisitionSettings
from services.acquisition.simsite import registry_from_lines

FAST = Timing(response_delay=0.1, byte_gap=0.1, slack=0.05, retries=2, backoff=0.01)
EVERY_2S = {"default": (Schedule(kind=JobKind.READ, trigger=Cron(expression="* * * * * */2")),)}
E1 = "e/000000000001"


def site_config() -> SiteConfig:
    """c1: DL/T 645 bus "e" (also reachable via c2) and Modbus bus "m"; c2: water bus "w"."""
    delay = (10.0, 10.0)
    models = {
        "e2007": MeterModel(protocol="dlt645-2007", response_delay_ms=delay, password="00123456"),
        "mb": MeterModel(
            protocol="modbus-rtu", prepaid=True, modbus_map="single_phase_prepaid", response_delay_ms=delay
        ),
        "water": MeterModel(protocol="cjt188", kind="water", response_delay_ms=delay),
    }
    e8e1, n81 = Link(baud=2400, parity="E"), Link(baud=9600, parity="N")
    return SiteConfig(
        name="acq-test",
        models=models,
        concentrators=[
            ConcentratorConfig(
                name="c1",
                buses=[
                    BusConfig(
                        name="e",
                        protocol="dlt645-2007",
                        link=e8e1,
                        alternate_concentrator="c2",
                        meters=[
                            MeterConfig(address=f"00000000000{i}", model="e2007", energy_kwh=100.0 * i)
                            for i in (1, 2, 3)
                        ],
                    ),
                    BusConfig(
                        name="m",
                        protocol="modbus-rtu",
                        link=n81,
                        meters=[MeterConfig(address=str(i), model="mb", energy_kwh=50.0 * i) for i in (1, 2)],
                    ),
                ],
            ),
            ConcentratorConfig(
                name="c2",
                buses=[
                    BusConfig(
                        name="w",
                        protocol="cjt188",
                        link=e8e1,
                        meters=[MeterConfig(address="00000000000001", model="water", energy_kwh=12.5)],
                    )
                ],
            ),
        ],
    )


def engine_config(lost_after: int = 2, switch_back_after: int = 2) -> EngineConfig:
    return EngineConfig(
        plans=EVERY_2S,
        comm=CommConfig(lost_after=lost_after, switch_back_after=switch_back_after),
        timing={p: FAST for p in ("dlt645-2007", "modbus-rtu", "cjt188")},
    )


@asynccontextmanager
async def running_site(pty: bool = False) -> AsyncIterator[Site]:
    site = Site(site_config(), clock=ManualClock(), seed=1)
    await site.start(pty=pty)
    try:
        yield site
    finally:
        await site.stop()


@dataclass
class Running:
    site: Site
    service: AcquisitionService
    project_id: str
    stop: asyncio.Event
    task: asyncio.Task[None]


@asynccontextmanager
async def running_service(
    site: Site,
    bootstrap: str,
    tmp_path: Path,
    config: EngineConfig | None = None,
    registry: Callable[[str], Registry] | None = None,
) -> AsyncIterator[Running]:
    """The service polling ``site``; ``registry(project_id)`` replaces the simulator's topology."""
    await asyncio.to_thread(ensure_topics, bootstrap, CATALOGUE)
    lines = tmp_path / "sim.jsonl"
    lines.write_text("\n".join(json.dumps(line) for line in site.endpoints()) + "\n")
    project = f"p{uuid.uuid4().hex[:10]}"
    settings = load(
        AcquisitionSettings,
        kafka_bootstrap=bootstrap,
        acq_simulator=lines,
        project_id=project,
        acq_instance_id=project,
        state_dir=tmp_path,
    )
    topology = (
        registry(project)
        if registry is not None
        else registry_from_lines(site.endpoints(), site_config(), project_id=project)
    )
    service = AcquisitionService(settings, topology, config or engine_config(), http=False)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield Running(site, service, project, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@dataclass
class Collector:
    """Every event of one project on the readings, comm and commands topics, as it arrives."""

    bootstrap: str
    project_id: str
    events: list[Event] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [
                TopicPartition(t.name, p)
                for t in (READINGS, COMM, COMMANDS, REGISTRY_TOPIC)
                for p in range(t.partitions)
            ]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            codec = Codec()
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        for event in codec.decode(record.value):
                            if event.project_id == self.project_id:
                                self.events.append(event)
        finally:
            await consumer.stop()

    def start(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def of(self, kind: type[Any], **match: Any) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())
        ]

    async def wait_for(self, predicate: Callable[[], Any], within: float = 20.0) -> Any:
        async with asyncio.timeout(within):
            while not (result := predicate()):
                await asyncio.sleep(0.1)
        return result
