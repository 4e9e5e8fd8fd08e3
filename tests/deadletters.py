"""Helpers of the dead-letter tests: undecodable bytes on topics, letters read back, the CLI run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import Codec, Event
from libs.events.codec import EventDecodeError
from libs.stack.broker import high_watermarks
from libs.stack.deadletter import DeadLetter
from libs.stack.deadletter_log import read_letters

CODEC = Codec()

JUNK = b"\xffnot an event"


async def send_junk(bootstrap: str, topics: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Undecodable bytes on each topic: topic -> (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        out = {}
        for topic in topics:
            meta = await producer.send_and_wait(topic, JUNK, key=b"junk")
            out[topic] = (meta.partition, meta.offset)
        return out
    finally:
        await producer.stop()


def letters_until(bootstrap: str, n: int, timeout: float = 90) -> list[DeadLetter]:
    """The dead letters once there are at least ``n`` (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while len(letters := asyncio.run(read_letters(bootstrap))) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    return letters


def cli(bootstrap: str, state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`meterflow ARGS` against ``bootstrap``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(state_dir))
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


async def events_on(bootstrap: str, topic: str) -> list[Event]:
    """Every event on ``topic`` that decodes (the junk sent there does not), in partition order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[Event] = []
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        marks = await high_watermarks(bootstrap, tps)
        for tp in tps:
            while await consumer.position(tp) < marks[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    with contextlib.suppress(EventDecodeError):
                        out += CODEC.decode(record.value)
    finally:
        await consumer.stop()
    return out
