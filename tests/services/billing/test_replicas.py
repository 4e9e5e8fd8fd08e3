"""Billing scaled out on the real broker, on the production partition counts: 2 and 3 workers in
one consumer group, with workers added (rebalances), SIGKILLed at random and replaced by an
overlapping rolling update while readings, recharges and meter clears flow; every balance must
equal the independent oracle's to the fen, and `meterflow billing replay` the live ones.

Before the books were partitioned, two workers in one group split the input partitions and each
folded its share as if it were everything: 257 of 300 balances came out wrong."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from libs.events import MeterReplaced
from libs.events.topics import BILLING_IN, CATALOGUE, READINGS
from libs.stack.broker import ensure_topics, partition_counts
from services.billing.domain import oracle
from services.billing.testing import live_balances, produce, scenario
from tests.processes import Replica, stop

pytestmark = pytest.mark.slow


def replica(base: dict[str, str], root: Path, name: str) -> Replica:
    return Replica("billing", base, root, name)


def wait_ready(worker: Replica, within: float = 90) -> dict[str, Any]:
    return worker.wait_ready(within)


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_killed_and_rolled_give_the_oracles_balances(
    fresh_broker: object, tmp_path: Path, replicas: int
) -> None:
    bootstrap = fresh_broker.bootstrap  # type: ignore[attr-defined]
    ensure_topics(bootstrap, CATALOGUE)
    counts = partition_counts(bootstrap, [READINGS.name, BILLING_IN.name])
    assert counts == {READINGS.name: 12, BILLING_IN.name: 6}  # the production layout
    project = f"p-{replicas}"
    reference, stream = scenario(project, accounts=60, hours=60, seed=replicas, clears=0.01)
    assert any(isinstance(e, MeterReplaced) for e in stream)
    expected = oracle.balances([*reference, *stream])
    base = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    base.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_BILLING_SNAPSHOT_EVERY_S="1", MF_BILLING_BATCH_SIZE="500")
    loop = asyncio.new_event_loop()
    rng = random.Random(replicas)
    loop.run_until_complete(produce(bootstrap, reference))
    workers = [replica(base, tmp_path, f"w{i}") for i in range(replicas - 1)]
    names = iter(f"w{i}" for i in range(replicas - 1, 100))
    try:
        for w in workers:
            wait_ready(w)
        flowing = loop.create_task(produce(bootstrap, stream, duplicate_every=13, pace=150))
        loop.run_until_complete(asyncio.sleep(rng.uniform(3, 6)))
        workers.append(replica(base, tmp_path, next(names)))  # scale up: a rebalance mid-stream
        loop.run_until_complete(asyncio.sleep(rng.uniform(5, 9)))
        victim = workers.pop(rng.randrange(len(workers)))  # a node dies
        victim.kill()
        workers.append(replica(base, tmp_path, next(names)))  # its replacement, with no state
        loop.run_until_complete(asyncio.sleep(rng.uniform(5, 9)))
        # a rolling update as Kubernetes does it with maxUnavailable 0: each successor starts and is
        # ready before its old one stops (they overlap)
        for old in list(workers):
            workers.append(successor := replica(base, tmp_path, next(names)))
            successor.wait_ready(180)
            workers.remove(old)
            stop(old.process)
        loop.run_until_complete(flowing)
        for w in workers:
            wait_ready(w, within=180)
        deadline = time.monotonic() + 150
        while True:
            live = loop.run_until_complete(live_balances(bootstrap, project))
            if live == expected or time.monotonic() > deadline:
                break
            loop.run_until_complete(asyncio.sleep(3))
        # every partition of the books is owned by exactly one worker left, once the group is stable
        deadline = time.monotonic() + 60
        while True:
            shares: list[list[int]] = [wait_ready(w)["partitions"] for w in workers]
            owned = [p for share in shares for p in share]
            if sorted(owned) == list(range(BILLING_IN.partitions)) or time.monotonic() > deadline:
                break
            time.sleep(1)
        sharing = sum(1 for share in shares if share)
    finally:
        for w in workers:
            stop(w.process)
        loop.close()
    if live != expected:
        for log in sorted(tmp_path.glob("*.log")):
            print(log.name, log.read_text()[-2500:])
        print({k: (live.get(k), v) for k, v in expected.items() if live.get(k) != v})
    assert live == expected
    assert sorted(owned) == list(range(BILLING_IN.partitions)) and sharing > 1
    assert min(expected.values()) < 10_000  # charges happened

    env = dict(base, MF_STATE_DIR=str(tmp_path / "replay"))
    result = subprocess.run([sys.executable, "-m", "services.cli", "billing", "replay"], env=env,
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 differ from the live balances" in result.stdout
    assert "wait for what they need" not in result.stdout
