"""Bus efficiency of the acquisition engine at real line timing.

32 simulated buses × 32 meters (half DL/T 645-2007 at 2400 8E1, half Modbus-RTU at 9600 8N1,
meters answering after 20 ms) run by ``meterflow simulate`` in its own process; the real engine
reads energy, voltage, current and power of every meter once, all buses at once, publishing
through the outbox (in memory, no broker). Printed: the achieved cycle time, the physical minimum
for the same transactions — (bytes sent + received) × character time + 20 ms per reply, per
bus, max over buses — their ratio (target ≥ 0.90) and CPU seconds per 1,000 transactions.

    python bench/acquisition_bus.py [--buses 32] [--meters 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from libs.events.base import utcnow
from libs.protocols.simulator.site import (
    BusConfig,
    ConcentratorConfig,
    Link,
    MeterConfig,
    MeterModel,
    SiteConfig,
)
from libs.stack.outbox import Outbox
from services.acquisition.engine import Engine, EngineConfig, Job
from services.acquisition.schedule import JobKind
from services.acquisition.simsite import registry_from_lines

ROOT = Path(__file__).resolve().parents[1]
DELAY_MS = 20.0
QUANTITIES = ("active_import_kwh", "voltage_a_v", "current_a_a", "power_kw")


def site(buses: int, meters: int) -> SiteConfig:
    models = {
        "e": MeterModel(protocol="dlt645-2007", response_delay_ms=(DELAY_MS, DELAY_MS)),
        "m": MeterModel(
            protocol="modbus-rtu", modbus_map="single_phase_prepaid", response_delay_ms=(DELAY_MS, DELAY_MS)
        ),
    }
    configs = []
    for b in range(buses):
        dlt = b % 2 == 0
        configs.append(
            BusConfig(
                name=f"b{b:02d}",
                protocol="dlt645-2007" if dlt else "modbus-rtu",
                link=Link(baud=2400, parity="E") if dlt else Link(baud=9600, parity="N"),
                meters=[
                    MeterConfig(
                        address=str(i + 1).zfill(12) if dlt else str(i + 1), model="e" if dlt else "m"
                    )
                    for i in range(meters)
                ],
            )
        )
    concentrators = [
        ConcentratorConfig(name=f"c{i // 4}", buses=configs[i : i + 4]) for i in range(0, buses, 4)
    ]
    return SiteConfig(name="bench", models=models, concentrators=concentrators)


def start_simulator(config: SiteConfig, tmp: str) -> tuple[subprocess.Popen[str], list[dict[str, Any]]]:
    """``meterflow simulate`` in its own process (its own core), and its bus lines."""
    path = Path(tmp) / "site.json"
    path.write_text(config.model_dump_json())
    sim = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "simulate", "--site", str(path), "--base-port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert sim.stdout is not None
    lines: list[dict[str, Any]] = []
    while len(lines) < sum(len(c.buses) for c in config.concentrators):
        line = json.loads(sim.stdout.readline())
        if "bus" in line:
            lines.append(line)
    return sim, lines


async def cycle(config: SiteConfig, lines: list[dict[str, Any]]) -> None:
    quantities: dict[str, tuple[str, ...]] = {"dlt645-2007": QUANTITIES, "modbus-rtu": QUANTITIES}
    registry = registry_from_lines(lines, config, quantities=quantities)
    outbox = Outbox("127.0.0.1:1", None)  # never delivered: put() is what polling pays
    engine = Engine(registry, outbox, EngineConfig(plans={}))
    now = utcnow()
    cpu0, wall0 = time.process_time(), time.monotonic()

    async def one(bus_id: str) -> None:
        worker = engine.workers[bus_id]
        await worker.run_round([Job(JobKind.READ, m, now) for m in worker.meters])

    await asyncio.gather(*(one(b) for b in engine.workers))
    achieved = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    transactions = failures = 0
    minimum = 0.0
    for worker in engine.workers.values():
        stats = worker.links[None].bus.stats
        transactions += stats.transactions
        failures += stats.failures
        wire = (stats.bytes_sent + stats.bytes_received) * worker.line.char_time
        minimum = max(minimum, wire + stats.replies * DELAY_MS / 1000)
        await worker.drop(None)
    buses = len(engine.workers)
    meters = len(registry.all_meters()) // max(buses, 1)
    print(
        f"buses {buses} x meters {meters}: {len(outbox)} events queued, {transactions} transactions, {failures} failed"
    )
    print(f"cycle time achieved     {achieved:8.2f} s")
    print(
        f"physical minimum        {minimum:8.2f} s  (bytes x char time + {DELAY_MS:.0f} ms per reply, slowest bus)"
    )
    print(f"bus efficiency          {minimum / achieved:8.3f}  (target >= 0.90)")
    print(f"CPU per 1000 transactions {1000 * cpu / max(transactions, 1):6.3f} s (engine process)")


def main(buses: int, meters: int) -> None:
    config = site(buses, meters)
    with tempfile.TemporaryDirectory() as tmp:
        sim, lines = start_simulator(config, tmp)
        try:
            asyncio.run(cycle(config, lines))
        finally:
            sim.terminate()
            sim.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--buses", type=int, default=32)
    parser.add_argument("--meters", type=int, default=32)
    args = parser.parse_args()
    main(args.buses, args.meters)
