"""The processor runtime under SIGKILL: state from snapshots + replay, effect exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import BalanceChanged, Codec, RechargeAccepted, event_id_for
from libs.events.topics import DEAD_LETTER, Topic
from libs.stack.broker import ensure_topics, free_port

pytestmark = pytest.mark.slow
ACCOUNTS = [f"acct-{i}" for i in range(40)]


def _recharges(n: int, seed: int) -> list[RechargeAccepted]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        acct = rng.choice(ACCOUNTS)
        out.append(
            RechargeAccepted(
                event_id=event_id_for("test", str(seed), str(i)),
                project_id="p",
                subject_id=acct,
                account_id=acct,
                amount_fen=rng.randint(1, 10_000),
                idempotency_key=f"k{i}",
                operator_id="op",
                channel="cash",
            )
        )
    return out


async def _produce(bootstrap: str, topic: str, events: list[RechargeAccepted], duplicate_every: int) -> None:
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i, e in enumerate(events):
            await producer.send(topic, codec.encode(e), key=e.key)
            if i % duplicate_every == 0:  # redelivery from an upstream retry
                await producer.send(topic, codec.encode(e), key=e.key)
            if i % 500 == 0:
                await producer.flush()
                await asyncio.sleep(0.05)
        await producer.flush()
    finally:
        await producer.stop()


async def _final_balances(bootstrap: str, topic: str) -> tuple[dict[str, int], int]:
    codec = Codec()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(4)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    last: dict[str, int] = {}
    seen: dict[str, int] = {}
    try:
        quiet = 0
        while quiet < 3:
            batch = await consumer.getmany(timeout_ms=300)
            quiet = 0 if batch else quiet + 1
            for records in batch.values():
                for r in records:
                    for e in codec.decode(r.value):
                        assert isinstance(e, BalanceChanged)
                        # a replayed output is the identical event: same id, same balance
                        assert seen.setdefault(e.event_id, e.balance_fen) == e.balance_fen
                        last[e.account_id] = e.balance_fen
    finally:
        await consumer.stop()
    return last, len(seen)


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tests.stack.processor_app", "worker", "-l", "info"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()


def _setup(
    bootstrap: str, tmp_path: Path, topic_name: str, snapshot_every: float
) -> tuple[dict[str, str], str, str]:
    topic_in, topic_out = f"{topic_name}.in", f"{topic_name}.out"
    ensure_topics(
        bootstrap, [Topic(topic_in, 4, "account", "t"), Topic(topic_out, 4, "account", "t"), DEAD_LETTER]
    )
    env = dict(
        os.environ,
        PROC_BOOTSTRAP=bootstrap,
        PROC_STATE=str(tmp_path / "state"),
        PROC_IN=topic_in,
        PROC_OUT=topic_out,
        PROC_PORT=str(free_port()),
        PROC_GROUP=f"proc-{topic_name}",
        PROC_SNAPSHOT_EVERY=str(snapshot_every),
    )
    return env, topic_in, topic_out


def _totals(events: list[RechargeAccepted]) -> dict[str, int]:
    expected: dict[str, int] = {}
    for e in events:
        expected[e.account_id] = expected.get(e.account_id, 0) + e.amount_fen
    return expected


def _wait_for(
    loop: asyncio.AbstractEventLoop, bootstrap: str, topic: str, expected: dict[str, int]
) -> tuple[dict[str, int], int]:
    deadline = time.monotonic() + 120
    while True:
        balances, distinct = loop.run_until_complete(_final_balances(bootstrap, topic))
        if balances == expected or time.monotonic() > deadline:
            return balances, distinct
        loop.run_until_complete(asyncio.sleep(2))


def test_sigkill_at_random_points_never_double_counts(
    bootstrap: str, tmp_path: Path, topic_name: str
) -> None:
    env, topic_in, topic_out = _setup(bootstrap, tmp_path, topic_name, snapshot_every=0.5)
    events = _recharges(6000, seed=7)
    rng = random.Random(11)
    log = tmp_path / "worker.log"
    loop = asyncio.new_event_loop()
    worker = _start(env, log)
    try:
        task = loop.create_task(_produce(bootstrap, topic_in, events, duplicate_every=7))
        for _ in range(3):  # kill the worker at random moments while input flows
            loop.run_until_complete(asyncio.sleep(rng.uniform(4, 9)))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker = _start(env, log)
        loop.run_until_complete(task)
        balances, distinct = _wait_for(loop, bootstrap, topic_out, _totals(events))
    finally:
        _stop(worker)
        loop.close()
    assert balances == _totals(events), log.read_text()[-3000:]
    assert distinct == len(events)  # one BalanceChanged per distinct recharge, however often replayed


def test_state_lost_after_commits_is_rebuilt_by_seeking_back(
    bootstrap: str, tmp_path: Path, topic_name: str
) -> None:
    """Faust committed everything, then the worker died and came back without its snapshots (a
    pod rescheduled onto a node without its volume): the group offsets say "done" but the state
    is empty. The processor must notice and rebuild from the event log."""
    env, topic_in, topic_out = _setup(bootstrap, tmp_path, topic_name, snapshot_every=3600)
    first, second = _recharges(800, seed=3), _recharges(300, seed=4)
    log = tmp_path / "worker.log"
    loop = asyncio.new_event_loop()
    worker = _start(env, log)
    try:
        loop.run_until_complete(_produce(bootstrap, topic_in, first, duplicate_every=5))
        assert _wait_for(loop, bootstrap, topic_out, _totals(first))[0] == _totals(first)
        loop.run_until_complete(asyncio.sleep(3))  # Faust commits the offsets meanwhile
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        shutil.rmtree(tmp_path / "state" / "snapshots")
        worker = _start(env, log)
        loop.run_until_complete(_produce(bootstrap, topic_in, second, duplicate_every=5))
        balances, _ = _wait_for(loop, bootstrap, topic_out, _totals(first + second))
    finally:
        _stop(worker)
        loop.close()
    assert balances == _totals(first + second), log.read_text()[-3000:]
    assert "reading the gap from the log" in log.read_text() or "catching up" in log.read_text()
