"""The acquisition service wired together: topology, outbox, engine, commands, HTTP.

:class:`AcquisitionService` is what ``meterflow acquisition`` runs and what the end-to-end tests
start in-process. ``run(stop)`` returns after a clean stop: the workers finish their current
transaction, the command consumer leaves, the outbox is flushed (bounded by ``flush_timeout``;
what is not delivered stays in the outbox file for the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from fastapi import FastAPI, Response

from libs.events.acquisition import MeterRegistered
from libs.events.base import utcnow
from libs.stack.outbox import Outbox
from libs.stack.runtime import HttpServer
from services.acquisition.commands import CommandConsumer, CommandExecutor
from services.acquisition.commstatus import CommConfig
from services.acquisition.engine import Engine, EngineConfig
from services.acquisition.importer import import_topology
from services.acquisition.metrics import Metrics
from services.acquisition.registry import Registry, to_events
from services.acquisition.settings import AcquisitionSettings
from services.acquisition.simsite import load_registry
from services.acquisition.state import LocalState

log = logging.getLogger("meterflow.acquisition")


def load_topology(settings: AcquisitionSettings) -> Registry:
    """The registry from the simulator's endpoint lines or from the two import files."""
    if settings.acq_simulator is not None:
        return load_registry(settings.acq_simulator, project_id=settings.project_id)
    assert settings.acq_concentrators is not None and settings.acq_meters is not None
    result = import_topology(
        settings.project_id, settings.acq_concentrators, settings.acq_meters, at=utcnow()
    )
    return result.registry


class AcquisitionService:
    """One instance: polls its buses, executes its meters' commands, publishes via the outbox."""

    def __init__(
        self,
        settings: AcquisitionSettings,
        registry: Registry,
        engine_config: EngineConfig | None = None,
        http: bool = True,
        flush_timeout: float = 15.0,
        in_memory: bool = False,
    ) -> None:
        if settings.kafka_bootstrap is None:
            raise ValueError("MF_KAFKA_BOOTSTRAP is required (meterflow dev sets it)")
        self.settings = settings
        self.registry = registry
        self.flush_timeout = flush_timeout
        outbox_path = None if in_memory else settings.outbox_path
        if outbox_path is not None:
            outbox_path.parent.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(settings.kafka_bootstrap, outbox_path, capacity=settings.acq_outbox_capacity)
        self.state = LocalState(outbox_path.with_suffix(".state.db") if outbox_path else None)
        config = engine_config or EngineConfig(
            plans=settings.plans,
            comm=CommConfig(
                lost_after=settings.acq_lost_after,
                switch_back_after=settings.acq_switch_back_after,
                tz=settings.acq_tz,
            ),
        )
        self.engine = Engine(registry, self.outbox, config, self.state)
        self.executor = CommandExecutor(
            self.engine, self.state, timedelta(seconds=settings.acq_command_max_age_s)
        )
        self.commands = CommandConsumer(
            settings.kafka_bootstrap, f"acquisition-{settings.acq_instance_id}", self.executor
        )
        self.metrics = Metrics(self.engine, self.outbox)
        self.http = HttpServer(self.app(), "0.0.0.0", settings.acq_http_port) if http else None
        self._delivered = (0, time.monotonic())

    def ready(self) -> tuple[bool, str]:
        """Topology loaded, engine started, outbox delivering (empty, or delivered within 30 s)."""
        if not self.engine.workers:
            return False, "no buses in the topology"
        if not self.engine.started:
            return False, "engine not started"
        delivered, since = self._delivered
        now = time.monotonic()
        if self.outbox.stats.delivered != delivered:
            self._delivered = (self.outbox.stats.delivered, now)
        elif len(self.outbox) and now - since > 30:
            return False, f"outbox not delivering ({len(self.outbox)} waiting)"
        return True, "ok"

    def app(self) -> FastAPI:
        app = FastAPI(title="meterflow acquisition", docs_url=None, redoc_url=None)

        @app.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/readyz")
        def readyz(response: Response) -> dict[str, str]:
            ok, why = self.ready()
            response.status_code = 200 if ok else 503
            return {"status": "ready" if ok else "not ready", "detail": why}

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

        return app

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then stop cleanly."""
        if self.http is not None:
            await self.http.start()
        flush = asyncio.Event()
        delivery = asyncio.create_task(self.outbox.run(flush), name="outbox")
        commands = asyncio.create_task(self.commands.run(stop), name="commands")
        observer = asyncio.create_task(self._observe(stop), name="metrics")
        log.info(
            "acquisition %s: %d buses, %d meters",
            self.settings.acq_instance_id,
            len(self.engine.workers),
            len(self.registry.all_meters()),
        )
        try:
            await self._publish_topology()
            await self.engine.run(stop)
            await commands
        finally:
            commands.cancel()
            observer.cancel()
            flush.set()
            try:
                await asyncio.wait_for(delivery, self.flush_timeout)
            except TimeoutError:
                log.warning("outbox: %d events left for the next start", len(self.outbox))
            with contextlib.suppress(asyncio.CancelledError):
                await observer
            self.state.close()
            if self.http is not None:
                await self.http.stop()

    async def _publish_topology(self) -> None:
        """Publish the registry as meter registration events, once per distinct content.

        Registration event ids derive from the meter's attributes, so a restart with the same
        topology publishes nothing new, and a changed meter publishes its new registration.
        """
        projects = {loc.project_id for loc in self.registry.all_meters()}
        events = [
            e
            for project in sorted(projects)
            for e in to_events(self.registry, project, utcnow())
            if isinstance(e, MeterRegistered)
        ]
        fresh = [e for e in events if not self.state.seen_registration(e.event_id)]
        if fresh:
            await self.outbox.put(fresh)
            for e in fresh:
                self.state.remember_registration(e.event_id)
        log.info("topology: %d meters registered, %d new registration events", len(events), len(fresh))

    async def _observe(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.metrics.observe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
