"""`meterflow sink [--check-config]`: the analytics sink as a process of its own (production).

The embedded stack runs the sink inside `meterflow dev`; against a Kafka cluster and a ClickHouse
server it runs here: migrations applied at start, every catalogue topic consumed into the
analytics tables in batches (:class:`services.api.analytics.sink.Sink`), SIGTERM drains to the
high-water marks of that moment before exit. ``/healthz``, ``/readyz`` (after the first
checkpointed batch) and ``/metrics`` on ``MF_SINK_HTTP_PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from pydantic import Field

from libs.events.topics import CATALOGUE
from libs.settings import CommonSettings
from libs.stack.broker import ensure_topics
from libs.stack.clickhouse import StoreError, migrate, open_client
from libs.stack.runtime import HttpServer, service_settings, setup_logging
from services.api.analytics.sink import Sink


class SinkSettings(CommonSettings):
    """The sink's port and batching."""

    sink_http_port: int = Field(default=8706, ge=1, le=65535, description="sink /healthz, /readyz, /metrics")
    sink_max_batch: int = Field(default=20_000, ge=1, description="rows buffered before an insert")
    sink_flush_s: float = Field(default=1.0, gt=0, description="seconds between inserts per table")


def web_app(sink: Sink) -> FastAPI:
    """Health and metrics of a running sink."""
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(f"mf_sink_{name}", text, registry=registry)
        for name, text in (
            ("events", "events decoded"),
            ("rows", "rows inserted"),
            ("inserts", "inserts made"),
            ("decode_errors", "messages skipped as undecodable"),
        )
    }
    web = FastAPI(title="meterflow sink", docs_url=None, redoc_url=None)

    @web.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @web.get("/readyz")
    def readyz(response: Response) -> dict[str, object]:
        response.status_code = 200 if sink.inserts or sink.events == 0 else 503
        return {"events": sink.events, "rows": sink.rows, "inserts": sink.inserts}

    @web.get("/metrics")
    def metrics() -> Response:
        for name, value in (
            ("events", sink.events),
            ("rows", sink.rows),
            ("inserts", sink.inserts),
            ("decode_errors", sum(sink.decode_errors.values())),
        ):
            gauges[name].set(value)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return web


async def _sink_forever(settings: SinkSettings, bootstrap: str) -> int:
    client = await asyncio.to_thread(open_client, settings.clickhouse_target)
    await asyncio.to_thread(migrate, client)
    await asyncio.to_thread(ensure_topics, bootstrap, CATALOGUE)
    sink = Sink(bootstrap, client, max_batch=settings.sink_max_batch, flush_seconds=settings.sink_flush_s)
    await sink.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    http = HttpServer(web_app(sink), "0.0.0.0", settings.sink_http_port)
    await http.start()
    try:
        await sink.run(stop)
    finally:
        await http.stop()
    print(f"sank {sink.events} events as {sink.rows} rows in {sink.inserts} inserts", flush=True)
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow sink`."""
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow sink`."""
    settings = service_settings(SinkSettings, "sink", args.check_config)
    if isinstance(settings, int):
        return settings
    assert settings.kafka_bootstrap is not None
    setup_logging(settings.log_level)
    try:
        return asyncio.run(_sink_forever(settings, settings.kafka_bootstrap))
    except StoreError as exc:
        print(f"meterflow sink: {exc}", file=sys.stderr)
        return 2
