"""A bad input never stops a processor: undecodable bytes, a fact whose fold raises (alone or in a
packed record) and a ``handle()`` that raises are parked on mf.dead-letter with where they came
from and why, the processor folds everything else, and `meterflow dead-letter retry` re-drives a
letter to its source partition (the test processor's poison fails again: parked anew)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from libs.events import Codec, RechargeAccepted
from libs.stack.deadletter import DeadLetter
from libs.stack.deadletter_log import read_letters
from tests.stack.test_processor import _recharges, _setup, _start, _stop, _totals, _wait_for

pytestmark = pytest.mark.slow
CODEC = Codec()


def _by(e: RechargeAccepted, operator: str) -> RechargeAccepted:
    return e.model_copy(update={"operator_id": operator})


async def _send(bootstrap: str, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    return meta.partition, meta.offset


def _letters_until(loop: asyncio.AbstractEventLoop, bootstrap: str, n: int) -> list[DeadLetter]:
    deadline = time.monotonic() + 60
    while (
        len(letters := loop.run_until_complete(read_letters(bootstrap))) < n and time.monotonic() < deadline
    ):
        loop.run_until_complete(asyncio.sleep(0.5))
    return letters


def _cli(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap)
    return subprocess.run([sys.executable, "-m", "services.cli", "dead-letter", *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_poison_is_parked_with_its_place_and_reason_and_the_processor_goes_on(
    fresh_broker: object, tmp_path: Path, topic_name: str
) -> None:
    bootstrap = fresh_broker.bootstrap  # type: ignore[attr-defined]
    env, topic_in, topic_out = _setup(bootstrap, tmp_path, topic_name, snapshot_every=1)
    good = _recharges(60, seed=1)
    same = {"account_id": good[30].account_id, "subject_id": good[30].account_id}
    good[31] = good[31].model_copy(update=same)  # a packed record holds one partition's accounts
    poison, packed_poison = _by(good[10], "poison"), _by(good[30], "poison")
    poison = poison.model_copy(update={"event_id": "poison-1"})
    packed_poison = packed_poison.model_copy(update={"event_id": "poison-2"})
    log = tmp_path / "worker.log"
    loop = asyncio.new_event_loop()
    worker = _start(env, log)
    try:
        sent = {}
        for e in good[:30]:
            loop.run_until_complete(_send(bootstrap, topic_in, e.key, CODEC.encode(e)))
        sent["junk"] = loop.run_until_complete(_send(bootstrap, topic_in, b"acct-1", b"\xffnot an event"))
        sent["poison"] = loop.run_until_complete(_send(bootstrap, topic_in, poison.key, CODEC.encode(poison)))
        packed = CODEC.encode_events([good[30], packed_poison, good[31]])
        sent["packed"] = loop.run_until_complete(_send(bootstrap, topic_in, good[30].key, packed))
        for e in good[32:]:
            loop.run_until_complete(_send(bootstrap, topic_in, e.key, CODEC.encode(e)))
        balances, _ = _wait_for(loop, bootstrap, topic_out, _totals(good))
        assert balances == _totals(good), log.read_text()[-3000:]  # every good fact folded

        letters = _letters_until(loop, bootstrap, 3)
        assert len(letters) == 3, log.read_text()[-3000:]
        # the three records are on different partitions: the processor may park them in any order
        by_place = {(le.partition, le.headers["offset"]): le for le in letters}
        junk, single, one_of_packed = (
            by_place[(p, str(o))] for p, o in (sent["junk"], sent["poison"], sent["packed"])
        )
        for letter, (partition, offset) in zip(
            (junk, single, one_of_packed), (sent["junk"], sent["poison"], sent["packed"]), strict=True
        ):
            h = letter.headers
            assert (h["service"], h["topic"]) == ("totals", topic_in)
            assert (letter.partition, h["offset"]) == (partition, str(offset))
            assert h["source"] == f"{topic_in}[{partition}]@{offset}" and h["at"]
        assert junk.value == b"\xffnot an event" and junk.headers["error_type"] == "EventDecodeError"
        assert single.value == CODEC.encode(poison) and single.key == poison.key
        assert single.headers["error_type"] == "ValueError" and "poison recharge" in single.headers["reason"]
        assert one_of_packed.value == CODEC.encode(packed_poison)  # the failing event alone

        # handle() itself raises: its slice is parked whole, the processor goes on
        explode = _by(_recharges(1, seed=2)[0], "explode")
        loop.run_until_complete(_send(bootstrap, topic_in, explode.key, CODEC.encode(explode)))
        letters = _letters_until(loop, bootstrap, 4)
        assert "handle() raised" in letters[3].headers["reason"]
        assert letters[3].value == CODEC.encode(explode)
        later = _recharges(5, seed=3)
        for e in later:
            loop.run_until_complete(_send(bootstrap, topic_in, e.key, CODEC.encode(e)))
        expected = _totals(good + later)
        assert _wait_for(loop, bootstrap, topic_out, expected)[0] == expected, log.read_text()[-3000:]

        # retry: back to its source partition, marked retried; the poison fails again
        assert _cli(bootstrap, "retry", "999").returncode == 1
        result = _cli(bootstrap, "retry", str(single.id))
        assert result.returncode == 0, result.stdout + result.stderr
        letters = _letters_until(loop, bootstrap, 5)
        again = letters[4]
        assert again.value == single.value and again.partition == single.partition
        assert int(again.headers["offset"]) > int(single.headers["offset"])
        listed = json.loads(_cli(bootstrap, "list", "--json").stdout)
        retried = {r["id"]: r["retried"] for r in listed}
        assert [retried[le.id] for le in (junk, single, one_of_packed)] == [False, True, False]
        assert "totals" in _cli(bootstrap, "list").stdout
    finally:
        _stop(worker)
        loop.close()
