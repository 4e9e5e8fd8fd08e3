"""Billing throughput on the real broker: one worker process, live and in replay, with the oracle
check at the end.

Publishes tariffs, meters and prepaid accounts, then N readings packed per partition (the form
acquisition publishes), starts `meterflow billing` as a process, and measures readings/s from the
first to the last reading folded (read from its /readyz counters); then `replay()` folds the
whole log again in-process. Both must equal the independent oracle to the fen.
Run: `make bench` or `.venv/bin/python bench/billing_fold.py [--accounts A --hours H]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

import httpx
from aiokafka import AIOKafkaProducer

from libs.events import Codec, ReadingRecorded, pack_readings
from libs.events.topics import CATALOGUE, READINGS
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port
from services.billing.domain import oracle
from services.billing.replay import replay
from services.billing.testing import live_balances, scenario


async def publish(bootstrap: str, reference: list, stream: list) -> int:  # type: ignore[type-arg]
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=8 << 20)
    await producer.start()
    try:
        futures = [await producer.send(e.TOPIC, codec.encode(e), key=e.key) for e in reference]
        readings = [e for e in stream if isinstance(e, ReadingRecorded)]
        others = [e for e in stream if not isinstance(e, ReadingRecorded)]
        futures += [await producer.send(e.TOPIC, codec.encode(e), key=e.key) for e in others]
        for m in pack_readings(readings, READINGS.partitions, max_per_message=500, codec=codec):
            futures.append(await producer.send(READINGS.name, m.value, key=m.key, partition=m.partition))
        await asyncio.gather(*futures)
        return len(readings)
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--hours", type=int, default=200)
    args = parser.parse_args()
    broker = EmbeddedBroker().start()
    try:
        ensure_topics(broker.bootstrap, CATALOGUE)
        reference, stream = scenario("bench", args.accounts, args.hours, seed=1)
        n = asyncio.run(publish(broker.bootstrap, reference, stream))
        facts = len(reference) + len(stream)
        print(f"== billing fold: {args.accounts} accounts, {n:,} readings, {facts:,} facts in all")
        port = free_port()
        with tempfile.TemporaryDirectory() as state:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
            env.update(MF_KAFKA_BOOTSTRAP=broker.bootstrap, MF_STATE_DIR=state, MF_BILLING_HTTP_PORT=str(port),
                       MF_BILLING_FAUST_PORT=str(free_port()), MF_BILLING_BATCH_SIZE="20000")  # fmt: skip
            worker = subprocess.Popen([sys.executable, "-m", "services.cli", "billing"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                first = last = None
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    try:
                        doc = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()
                    except httpx.HTTPError:
                        doc = {"records": 0}
                    if first is None and doc.get("records", 0) > 0:
                        first = time.monotonic()
                    if doc.get("events", 0) >= facts:
                        last = time.monotonic()
                        break
                    time.sleep(0.05)
                live = asyncio.run(live_balances(broker.bootstrap, "bench"))
            finally:
                worker.terminate()
                worker.wait(60)
        expected = oracle.balances([*reference, *stream])
        if first is not None and last is not None:
            print(
                f"live worker     {n / (last - first):>12,.0f} readings/s  (first to last fold, one process)"
            )
        else:
            print("live worker     did not finish within 10 minutes")
        print(
            f"live balances   {'match' if live == expected else 'DIFFER from'} the oracle ({len(expected)} accounts)"
        )
        result = asyncio.run(replay(broker.bootstrap))
        print(
            f"replay          {result.events / result.seconds:>12,.0f} facts/s    "
            f"(all topics incl. billing's own output, {result.events:,} facts)"
        )
        print(f"replay balances {'match' if result.replayed == expected else 'DIFFER from'} the oracle")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
