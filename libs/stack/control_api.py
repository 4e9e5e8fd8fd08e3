"""The dev stack's own HTTP endpoint: /healthz, /readyz, /metrics and /status.

/status is how other processes learn about the chDB store this process owns (its health and
the archive's counts) without opening it themselves.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from libs.stack.clickhouse import health

if TYPE_CHECKING:
    from libs.stack.dev import Stack


class StackCollector(Collector):
    """Prometheus view of the stack: archive progress, services up, uptime."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def collect(self) -> Iterator[Metric]:
        archived = CounterMetricFamily("mf_archive_messages", "messages copied into the event-log archive")
        archived.add_metric([], self.stack.archiver.archived if self.stack.archiver else 0)
        yield archived
        restored = GaugeMetricFamily(
            "mf_archive_restored_messages", "messages restored into the broker at start"
        )
        restored.add_metric([], sum(self.stack.restored.values()))
        yield restored
        up = GaugeMetricFamily("mf_service_up", "1 while a service process runs", labels=["service"])
        for s in self.stack.services:
            up.add_metric([s.spec.name], 1 if s.process.returncode is None else 0)
        yield up
        uptime = GaugeMetricFamily("mf_stack_uptime_seconds", "seconds since the stack started")
        uptime.add_metric([], time.time() - self.stack.started_at)
        yield uptime


def build_app(stack: Stack) -> FastAPI:
    """The FastAPI app serving the stack's health, readiness, metrics and status."""
    app = FastAPI(title="meterflow dev stack", docs_url=None, redoc_url=None)
    registry = CollectorRegistry()
    registry.register(StackCollector(stack))

    def archiving() -> bool:
        return stack.archive_task is not None and not stack.archive_task.done()

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = archiving()
        return JSONResponse(
            {"ready": ok, "archiver": "running" if ok else "stopped"}, status_code=200 if ok else 503
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/status")
    async def status() -> dict[str, Any]:
        try:
            store: dict[str, Any] = await asyncio.to_thread(health, stack.client)
            store["dsn"] = stack.settings.clickhouse_target
        except Exception as exc:
            store = {"ok": False, "error": str(exc), "dsn": stack.settings.clickhouse_target}
        return {
            "pid": os.getpid(),
            "bootstrap": stack.bootstrap,
            "embedded_broker": stack.broker is not None,
            "clickhouse": store,
            "archive": {
                "running": archiving(),
                "archived_this_run": stack.archiver.archived if stack.archiver else 0,
                "restored_at_start": sum(stack.restored.values()),
            },
            "services": {
                s.spec.name: {
                    "pid": s.process.pid,
                    "running": s.process.returncode is None,
                    "announced": s.announced[:50],
                }
                for s in stack.services
            },
        }

    return app
