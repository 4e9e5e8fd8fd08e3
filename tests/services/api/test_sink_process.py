"""`meterflow sink` as a process: a cluster's topics into a ClickHouse store, drained on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from libs.events import Codec, Rate, ReadingRecorded, Route, pack_readings
from libs.events.topics import CATALOGUE, READINGS
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port
from tests.broker.kafka_helpers import producer

pytestmark = pytest.mark.slow


def _readings(n: int) -> list[ReadingRecorded]:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        ReadingRecorded(
            event_id=f"sink-r{i}", project_id="sinkp", subject_id=f"m{i % 5}", meter_id=f"m{i % 5}",
            registers={"active_import_kwh": {Rate.TOTAL: Decimal(i)}}, received_at=at, time=at.replace(hour=i % 24),
            route=Route(concentrator_id="c1", bus_id="b1"),
        )
        for i in range(n)
    ]  # fmt: skip


async def _send(bootstrap: str, readings: list[ReadingRecorded]) -> None:
    async with producer(bootstrap) as p:
        for m in pack_readings(readings, READINGS.partitions, max_per_message=7, codec=Codec()):
            await p.send_and_wait(READINGS.name, m.value, key=m.key, partition=m.partition)


def test_the_sink_process_fills_the_store_and_drains_on_sigterm(
    tmp_path: Path, fresh_broker: EmbeddedBroker
) -> None:
    broker = fresh_broker
    ensure_topics(broker.bootstrap, CATALOGUE)
    asyncio.run(_send(broker.bootstrap, _readings(40)))
    port, dsn = free_port(), f"chdb://{tmp_path / 'store'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=broker.bootstrap, MF_CLICKHOUSE_DSN=dsn, MF_SINK_HTTP_PORT=str(port))
    sink = subprocess.Popen([sys.executable, "-m", "services.cli", "sink"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        doc: dict[str, int] = {}
        while time.monotonic() < deadline and doc.get("rows", 0) < 80:
            with contextlib.suppress(httpx.HTTPError):
                doc = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()
            time.sleep(0.3)
        assert doc.get("events") == 40 and doc.get("rows") == 80, doc  # a readings and a status row each
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "mf_sink_rows 80.0" in metrics
        asyncio.run(_send(broker.bootstrap, _readings(45)[40:]))  # sent just before the stop
        sink.send_signal(signal.SIGTERM)
        out, _ = sink.communicate(timeout=60)
    finally:
        if sink.poll() is None:
            sink.kill()
    assert sink.returncode == 0, out
    assert "sank 45 events as 90 rows" in out  # the late ones were drained, not dropped
    query = "from libs.stack.clickhouse import open_client; print(open_client(%r).command('SELECT count() FROM readings FINAL'))"
    count = subprocess.run([sys.executable, "-c", query % dsn], capture_output=True, text=True, timeout=120)
    assert count.stdout.strip() == "45", count.stderr
