"""Billing throughput on the real broker: one worker process, live and in replay, with the oracle
check at the end.

Publishes tariffs, meters, prepaid accounts and recharges, starts `meterflow billing` as a
process and lets it fold them; then publishes N readings packed per partition (the form
acquisition publishes) and measures readings/s from the first message sent to the last reading
folded (read from the worker's /readyz counters). Then `replay()` folds the whole log again
in-process. Both must equal the independent oracle to the fen.

Then, with the worker caught up, the latency phase: readings at a steady rate (default 5,000/s,
packed per partition every 50 ms as the acquisition outbox does) for a few seconds, and the time
from sending each reading to receiving the ``BalanceChanged`` it caused (matched by causation id)
— p50 / p99 / max. Last, the cold start: a second worker with an empty state folds the whole log
(facts/s from its first record read to its last fact folded), as after a loss of its snapshot.
Topics have the embedded stack's layout (``MF_PARTITIONS_MAX=1`` unless set, as `meterflow dev`).
Any balances differing from the oracle's, or a phase that does not finish, exits 1.
Run: `make bench` or `.venv/bin/python bench/billing_fold.py [--accounts A --hours H]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import BalanceChanged, Codec, Rate, ReadingRecorded, pack_readings
from libs.events.topics import CATALOGUE, LEDGER, PARTITIONS_MAX, READINGS
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port
from libs.stack.dev import EMBEDDED_PARTITIONS_MAX
from libs.stack.processor import FETCH_MAX_WAIT_MS
from services.billing.domain import oracle
from services.billing.replay import replay
from services.billing.testing import live_balances, scenario


async def publish(bootstrap: str, events: list) -> float:
    """Publish ``events``: readings packed per partition (as acquisition does), the rest one per
    message; return when the first message was sent (time.monotonic(), after encoding all)."""
    codec = Codec()
    readings = [e for e in events if isinstance(e, ReadingRecorded)]
    messages: list[tuple[str, bytes, bytes, int | None]] = [
        (e.TOPIC, codec.encode(e), e.key, None) for e in events if not isinstance(e, ReadingRecorded)
    ]
    messages += [(READINGS.name, m.value, m.key, m.partition)
                 for m in pack_readings(readings, READINGS.partitions, max_per_message=500, codec=codec)]  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=8 << 20)
    await producer.start()
    try:
        sent = time.monotonic()
        futures = [await producer.send(t, value, key=key, partition=p) for t, value, key, p in messages]
        await asyncio.gather(*futures)
        return sent
    finally:
        await producer.stop()


def start_worker(bootstrap: str, state: str, port: int, snapshot_every: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=state, MF_BILLING_HTTP_PORT=str(port),
               MF_BILLING_SNAPSHOT_EVERY_S=str(snapshot_every),
               MF_BILLING_FAUST_PORT=str(free_port()), MF_BILLING_BATCH_SIZE="20000",
               MF_PARTITIONS_MAX=str(PARTITIONS_MAX))  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "services.cli", "billing"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def folded(port: int, count: int, timeout: float = 600) -> tuple[float | None, float | None]:
    """(when the worker had read its first record, when it had folded ``count`` facts), polling
    its /readyz counters every 100 ms; None for what did not happen within ``timeout``."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            doc = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()
        except httpx.HTTPError:
            doc = {"records": 0}
        if first is None and doc.get("records", 0) > 0:
            first = time.monotonic()
        if doc.get("events", 0) >= count:
            return first, time.monotonic()
        time.sleep(0.1)
    return first, None


async def latency(bootstrap: str, stream: list, rate: int, seconds: float) -> tuple[int, list[float]]:
    """Send readings at ``rate``/s; return how many were sent and the send → BalanceChanged
    latencies in milliseconds."""
    codec = Codec()
    last: dict[str, ReadingRecorded] = {}
    for e in stream:
        if isinstance(e, ReadingRecorded):
            last[e.meter_id] = e
    meters = sorted(last)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    # The follower fetches like a service (the broker holds an empty fetch for its whole max wait,
    # even when a record arrives meanwhile: aiokafka's default 500 ms was most of the latency)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, max_request_size=8 << 20)
    try:
        await consumer.start()
        await producer.start()
        tps = [TopicPartition(LEDGER.name, p) for p in range(LEDGER.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)

        async def collect() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=20)
                now = time.perf_counter()
                for records in batch.values():
                    for r in records:
                        for e in codec.decode(r.value):
                            if (
                                isinstance(e, BalanceChanged)
                                and e.reason == "charge"
                                and e.causation_id in sent
                            ):
                                got.setdefault(e.causation_id, now)

        collector = asyncio.create_task(collect())
        tick, per_tick, n, start = 0.05, max(1, int(rate * 0.05)), 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            chunk = []
            for _ in range(per_tick):
                prev = last[meters[n % len(meters)]]
                total = prev.registers["active_import_kwh"][Rate.TOTAL] + Decimal("0.25")
                when = prev.time + timedelta(minutes=1)
                reading = prev.model_copy(update={
                    "event_id": f"lat-{prev.meter_id}-{n}", "sequence": prev.sequence + 1, "time": when,
                    "meter_time": when, "received_at": when, "registers": {"active_import_kwh": {Rate.TOTAL: total}},
                })  # fmt: skip
                last[prev.meter_id] = reading
                chunk.append(reading)
                n += 1
            now = time.perf_counter()
            for m in pack_readings(chunk, READINGS.partitions, max_per_message=500, codec=codec):
                await producer.send(READINGS.name, m.value, key=m.key, partition=m.partition)
            sent.update(dict.fromkeys((r.event_id for r in chunk), now))
            await asyncio.sleep(max(0.0, start + tick * (n // per_tick) - time.perf_counter()))
        for _ in range(300):  # up to 30 s for the tail to arrive
            if len(got) >= len(sent):
                break
            await asyncio.sleep(0.1)
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        if len(got) < len(sent):
            print(f"latency         {len(sent) - len(got):,} of {len(sent):,} readings got no BalanceChanged")
        return len(sent), [(got[k] - sent[k]) * 1000 for k in got]
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> list[str]:
    """Run the phases, print their figures; return the checks that failed."""
    failures: list[str] = []
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--hours", type=int, default=200)
    parser.add_argument("--rate", type=int, default=5000, help="readings/s of the latency phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--snapshot-every", type=float, default=60.0, help="the worker's snapshot period, s")
    args = parser.parse_args()
    broker = EmbeddedBroker().start()
    try:
        ensure_topics(broker.bootstrap, CATALOGUE)
        reference, stream = scenario("bench", args.accounts, args.hours, seed=1)
        money = [e for e in stream if not isinstance(e, ReadingRecorded)]
        readings = [e for e in stream if isinstance(e, ReadingRecorded)]
        facts = len(reference) + len(stream)
        layout = "catalogue" if not PARTITIONS_MAX else f"<= {PARTITIONS_MAX}"
        print(f"== billing fold: {args.accounts} accounts, {len(readings):,} readings, {facts:,} facts in all, "
              f"partitions per topic {layout} (MF_PARTITIONS_MAX)")  # fmt: skip
        expected = oracle.balances([*reference, *stream])
        asyncio.run(publish(broker.bootstrap, [*reference, *money]))
        extra = 0  # readings the latency phase sent
        with tempfile.TemporaryDirectory() as state, tempfile.TemporaryDirectory() as cold_state:
            port = free_port()
            worker = start_worker(broker.bootstrap, state, port, args.snapshot_every)
            try:
                # Live: the worker runs and has folded the site (meters, tariffs, accounts and
                # recharges); then the readings arrive as a backlog, packed as acquisition sends.
                _, ready = folded(port, len(reference) + len(money))
                sent = asyncio.run(publish(broker.bootstrap, readings))
                _, last = folded(port, facts)
                n = len(readings)
                if ready is not None and last is not None:
                    print(f"live worker     {n / (last - sent):>12,.0f} readings/s  (first sent to last folded, "
                          f"one process, site already folded)")  # fmt: skip
                else:
                    print("live worker     did not finish within 10 minutes")
                    failures.append("the live worker did not fold the backlog")
                live = asyncio.run(live_balances(broker.bootstrap, "bench"))
                for _ in range(10):  # folded is not yet produced: wait until the outputs settle
                    if live == expected or live == (
                        live := asyncio.run(live_balances(broker.bootstrap, "bench"))
                    ):
                        break
                print(
                    f"live balances   {'match' if live == expected else 'DIFFER from'} the oracle ({len(expected)} accounts)"
                )
                if live != expected:
                    failures.append("live balances differ from the oracle")
                result = asyncio.run(replay(broker.bootstrap))  # the log as it is now, the worker idle
                print(
                    f"replay          {result.events / result.seconds:>12,.0f} facts/s    "
                    f"({result.events:,} input facts; the live balances on mf.ledger read alongside)"
                )
                print(
                    f"replay balances {'match' if result.replayed == expected else 'DIFFER from'} the oracle"
                )
                if result.replayed != expected:
                    failures.append("replay balances differ from the oracle")
                if last is not None:
                    extra, lat = asyncio.run(latency(broker.bootstrap, stream, args.rate, args.seconds))
                    if len(lat) < extra:
                        failures.append(
                            "the latency phase did not finish (readings without a BalanceChanged)"
                        )
                    lat.sort()
                    if lat:
                        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                        print(
                            f"latency         reading -> BalanceChanged at {args.rate:,} readings/s: "
                            f"p50 {statistics.median(lat):.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms "
                            f"({len(lat):,} readings)"
                        )
            finally:
                worker.terminate()
                worker.wait(60)
            # Cold start: a second worker with no snapshot folds the whole log from the beginning,
            # in the order its consumer fetches the topics (readings may come before their accounts
            # and wait for them). Its counters include the latency phase's readings.
            cold_port = free_port()
            total = facts + extra
            cold = start_worker(broker.bootstrap, cold_state, cold_port, args.snapshot_every)
            try:
                first, done = folded(cold_port, total)
                if first is not None and done is not None:
                    print(f"cold start      {total / (done - first):>12,.0f} facts/s    "
                          f"(first to last fold of {total:,} facts, empty state)")  # fmt: skip
                else:
                    print("cold start      did not finish within 10 minutes")
                    failures.append("the cold start did not finish")
            finally:
                cold.terminate()
                cold.wait(60)
    finally:
        broker.stop()
    return failures


if __name__ == "__main__":
    if "MF_PARTITIONS_MAX" not in os.environ:  # the embedded stack's layout, as `meterflow dev` runs it
        os.environ["MF_PARTITIONS_MAX"] = str(EMBEDDED_PARTITIONS_MAX)
        os.execv(
            sys.executable, [sys.executable, __file__, *sys.argv[1:]]
        )  # the catalogue is built at import
    failed = main()
    if failed:
        print("FAILED: " + "; ".join(failed))
        sys.exit(1)
