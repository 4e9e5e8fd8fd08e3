"""The billing worker on the real broker: SIGKILLed at random points while readings and recharges
flow, restarted, and every final balance checked against the independent oracle to the fen;
then `meterflow billing replay` must reproduce the live balances exactly."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libs.events import MeterReplaced, Route
from libs.events.topics import CATALOGUE
from libs.stack.broker import ensure_topics, free_port
from services.billing.domain import oracle
from services.billing.testing import live_balances, produce, scenario
from tests.processes import stop

pytestmark = pytest.mark.slow
ROUTE = Route(concentrator_id="c1", bus_id="b1")


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.cli", "billing"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def test_sigkilled_worker_matches_the_oracle_and_replay_matches_live(
    fresh_broker: object, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap  # type: ignore[attr-defined]
    ensure_topics(bootstrap, CATALOGUE)
    project = "p-kill"
    # Some meters are cleared: their MeterReplaced travel on mf.registry, their readings on
    # mf.readings, and neither the live worker nor the replay may fold them out of time order.
    reference, stream = scenario(project, accounts=30, hours=120, seed=5, clears=0.01)
    assert 10 < sum(isinstance(e, MeterReplaced) for e in stream) < 100
    expected = oracle.balances([*reference, *stream])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(tmp_path / "state"),
               MF_BILLING_HTTP_PORT=str(free_port()), MF_BILLING_FAUST_PORT=str(free_port()),
               MF_BILLING_SNAPSHOT_EVERY_S="1", MF_BILLING_BATCH_SIZE="500")  # fmt: skip
    log = tmp_path / "billing.log"
    loop = asyncio.new_event_loop()
    loop.run_until_complete(produce(bootstrap, reference))
    worker = start_worker(env, log)
    rng = random.Random(3)
    try:
        flowing = loop.create_task(produce(bootstrap, stream, duplicate_every=11, pace=200))
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(rng.uniform(6, 12)))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker = start_worker(env, log)
        loop.run_until_complete(flowing)
        deadline = time.monotonic() + 150
        while True:
            live = loop.run_until_complete(live_balances(bootstrap, project))
            if live == expected or time.monotonic() > deadline:
                break
            loop.run_until_complete(asyncio.sleep(3))
    finally:
        stop(worker)
        loop.close()
    if live != expected:
        print(log.read_text()[-4000:])
        print({k: (live.get(k), v) for k, v in expected.items() if live.get(k) != v})
    assert live == expected
    assert any(v < 10_000 for v in expected.values())  # charges really happened

    result = subprocess.run([sys.executable, "-m", "services.cli", "billing", "replay"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 differ from the live balances" in result.stdout
    assert "wait for what they need" not in result.stdout  # nothing left waiting, nothing parked
