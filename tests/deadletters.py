"""Helpers of the dead-letter tests: undecodable bytes on topics, letters read back, the CLI run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from libs.stack.deadletter import DeadLetter
from libs.stack.deadletter_log import read_letters

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
