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
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import (
    AccountOpened,
    BalanceChanged,
    Codec,
    Event,
    MeterRegistered,
    Rate,
    ReadingRecorded,
    RechargeAccepted,
    Route,
    TariffPublished,
)
from libs.events.billing import BillingMode
from libs.events.topics import BILLING, CATALOGUE
from libs.stack.broker import ensure_topics, free_port
from services.billing.domain import oracle
from tests.services.billing.helpers import SINGLE, TOU_PEAK_VALLEY, at

pytestmark = pytest.mark.slow
ROUTE = Route(concentrator_id="c1", bus_id="b1")


def scenario(project: str, accounts: int, hours: int, seed: int) -> tuple[list[Event], list[Event]]:
    """(reference facts: tariffs, meters, accounts) and (the stream: readings and recharges)."""
    rng = random.Random(seed)
    start = at(2024, 3, 1)
    reference: list[Event] = [
        TariffPublished(event_id=f"{project}-t{i}", project_id=project, subject_id=f"t{i}", tariff_id=f"t{i}",
                        version=1, name=f"t{i}", effective_from=at(2024, 1, 1), definition=d, time=at(2024, 1, 1))
        for i, d in enumerate((SINGLE, TOU_PEAK_VALLEY))
    ]  # fmt: skip
    stream: list[Event] = []
    for a in range(accounts):
        meter, acct = f"{project}-m{a}", f"{project}-a{a}"
        reference.append(MeterRegistered(
            event_id=f"reg-{meter}", project_id=project, subject_id=meter, meter_id=meter, address=f"{a:012d}",
            protocol="dlt645-2007", model="DDSY", medium="electricity", concentrator_id="c1", bus_id="b1",
            time=at(2024, 1, 1),
        ))  # fmt: skip
        reference.append(AccountOpened(
            event_id=f"open-{acct}", project_id=project, subject_id=acct, account_id=acct, mode=BillingMode.PREPAID,
            meter_ids=(meter,), tariff_id=f"t{a % 2}", holder="住户", opened_by="op", time=at(2024, 1, 1),
        ))  # fmt: skip
        stream.append(RechargeAccepted(
            event_id=f"rc-{acct}-0", project_id=project, subject_id=acct, account_id=acct, amount_fen=10_000,
            idempotency_key=f"{acct}-0", operator_id="op", channel="wechat", time=start,
        ))  # fmt: skip
        total = Decimal(rng.randint(0, 5000))
        for h in range(hours):
            when = start + timedelta(hours=h)
            total += Decimal(rng.randint(0, 300)) / 100
            stream.append(ReadingRecorded(
                event_id=f"r-{meter}-{h}", project_id=project, subject_id=meter, sequence=h + 1, meter_id=meter,
                registers={"active_import_kwh": {Rate.TOTAL: total}}, meter_time=when, received_at=when,
                route=ROUTE, time=when,
            ))  # fmt: skip
            if rng.random() < 0.05:
                stream.append(RechargeAccepted(
                    event_id=f"rc-{acct}-{h}", project_id=project, subject_id=acct, account_id=acct,
                    amount_fen=rng.randint(100, 5000), idempotency_key=f"{acct}-{h}", operator_id="op",
                    channel="cash", time=when,
                ))  # fmt: skip
    rng.shuffle(stream)  # interleave meters; per-meter order is restored below
    stream.sort(key=lambda e: e.time)
    return reference, stream


async def produce(bootstrap: str, events: list[Event], duplicate_every: int = 0, pace: int = 0) -> None:
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i, e in enumerate(events):
            await producer.send(e.TOPIC, codec.encode(e), key=e.key)
            if duplicate_every and i % duplicate_every == 0:
                await producer.send(e.TOPIC, codec.encode(e), key=e.key)  # an upstream redelivery
            if pace and i % pace == 0:
                await producer.flush()
                await asyncio.sleep(0.1)
        await producer.flush()
    finally:
        await producer.stop()


async def live_balances(bootstrap: str, project: str) -> dict[str, int]:
    codec = Codec()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(BILLING.name, p) for p in range(BILLING.partitions)]
    out: dict[str, int] = {}
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        quiet = 0
        while quiet < 3:
            batch = await consumer.getmany(timeout_ms=300)
            quiet = 0 if batch else quiet + 1
            for records in batch.values():
                for r in records:
                    for e in codec.decode(r.value):
                        if isinstance(e, BalanceChanged) and e.project_id == project:
                            out[e.account_id] = e.balance_fen
    finally:
        await consumer.stop()
    return out


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
    reference, stream = scenario(project, accounts=30, hours=120, seed=5)
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
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
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
