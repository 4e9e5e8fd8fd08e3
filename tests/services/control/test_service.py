"""The control worker on the real broker, with a scripted sender in place of acquisition.

Arrears alarms trip an account's meters (not the one under keep-power), acknowledgements make the
relay state known over HTTP, a failing meter is retried with backoff until its attempts time out
into an alarm and one ``CommandAbandoned``, the clear closes the relays, and after a SIGKILL and a
replay of the whole log without a snapshot nothing control emits carries a new id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import AccountOpened, AlarmCleared, AlarmRaised, Codec, KeepPowerSet
from libs.events.base import Event, utcnow
from libs.events.billing import AlarmKind, BillingMode
from libs.events.control import (
    Action,
    CommandAbandoned,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    CommandSent,
    CommandTimedOut,
    Outcome,
)
from libs.events.topics import ALARMS, CATALOGUE, COMMANDS
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port

pytestmark = pytest.mark.slow
CODEC = Codec()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.cli", "control"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def stop(worker: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    worker.send_signal(sig)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


async def produce(bootstrap: str, events: list[Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    try:
        await producer.start()
        for e in events:
            await producer.send_and_wait(e.TOPIC, CODEC.encode(e), key=e.key)
    finally:
        await producer.stop()


class Log:
    """Everything of one project on mf.commands and mf.alarms, read from the start."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.events: list[Event] = []

    async def follow(self, bootstrap: str, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        try:
            await consumer.start()
            consumer.assign(
                [TopicPartition(t.name, p) for t in (COMMANDS, ALARMS) for p in range(t.partitions)]
            )
            await consumer.seek_to_beginning()
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        self.events += [e for e in CODEC.decode(r.value) if e.project_id == self.project]
        finally:
            await consumer.stop()

    def of(self, cls: type[Any], **match: object) -> list[Any]:
        return [
            e for e in self.events if isinstance(e, cls) and all(getattr(e, k) == v for k, v in match.items())
        ]

    async def wait_for(self, cls: type[Any], n: int = 1, within: float = 30, **match: object) -> list[Any]:
        deadline = time.monotonic() + within
        while len(found := self.of(cls, **match)) < n:
            assert time.monotonic() < deadline, f"{cls.__name__} {match}: {len(found)} of {n}"
            await asyncio.sleep(0.1)
        return found

    def emitted_ids(self) -> set[str]:
        """Ids of every fact control produces (commands, their retries, timeouts, timeout alarms,
        abandonments)."""
        mine = (CommandRequested, CommandTimedOut, CommandAbandoned)
        return {
            e.event_id
            for e in self.events
            if isinstance(e, mine) or (isinstance(e, AlarmRaised) and e.kind is AlarmKind.COMMAND_TIMEOUT)
        }


async def sender(bootstrap: str, log: Log, stop: asyncio.Event) -> None:
    """Acquisition's part, scripted: m2's trip fails and its retries never get a reply."""
    done: set[str] = set()
    while not stop.is_set():
        replies: list[Event] = []
        for cmd in log.of(CommandRequested):
            if cmd.command_id in done:
                continue
            done.add(cmd.command_id)
            common = {"project_id": cmd.project_id, "subject_id": cmd.meter_id, "command_id": cmd.command_id,
                      "meter_id": cmd.meter_id}  # fmt: skip
            replies.append(CommandSent(**common, attempt=1))
            if cmd.meter_id == "m2" and cmd.action is Action.TRIP:
                if "retry_of" not in cmd.params:
                    replies.append(
                        CommandFailed(**common, attempt=1, reason="no_reply: 3 tries", will_retry=False)
                    )
                continue  # retries: sent, never answered
            replies.append(CommandAcknowledged(**common, confirmed_state=cmd.action.value))
        if replies:
            await produce(bootstrap, replies)
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def background(*coros: Any) -> AsyncIterator[None]:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def get(http: httpx.AsyncClient, path: str, within: float = 30) -> Any:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.HTTPError):
            response = await http.get(path)
            if response.status_code == 200:
                return response.json()
        assert time.monotonic() < deadline, path
        await asyncio.sleep(0.2)


async def until(http: httpx.AsyncClient, path: str, check: Any, within: float = 30) -> Any:
    deadline = time.monotonic() + within
    while not check(body := await get(http, path)):
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)
    return body


async def test_arrears_trip_retry_timeout_restore_and_replay(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap
    ensure_topics(bootstrap, CATALOGUE)
    p = f"p-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(tmp_path / "state"), MF_CONTROL_HTTP_PORT=str(port),
               MF_CONTROL_FAUST_PORT=str(free_port()), MF_CONTROL_TICK_S="0.2", MF_CONTROL_BACKOFF_S="1",
               MF_CONTROL_BACKOFF_FACTOR="2", MF_CONTROL_ATTEMPT_TIMEOUT_S="2", MF_CONTROL_MAX_ATTEMPTS="3",
               MF_CONTROL_COMMAND_TIMEOUT_S="120", MF_CONTROL_SNAPSHOT_EVERY_S="1")  # fmt: skip

    def envelope(subject: str) -> dict[str, Any]:
        return {"project_id": p, "subject_id": subject, "time": utcnow()}

    def account(acct: str, *meters: str) -> AccountOpened:
        return AccountOpened(**envelope(acct), account_id=acct, mode=BillingMode.PREPAID, meter_ids=meters,
                             tariff_id="t", holder="h", opened_by="op")  # fmt: skip

    def arrears(acct: str, meters: str) -> AlarmRaised:
        return AlarmRaised(**envelope(acct), alarm_id=f"{p}-{acct}", kind=AlarmKind.ARREARS, severity=3,
                           message="arrears", details={"meter_ids": meters})  # fmt: skip

    await produce(bootstrap, [
        account("a1", "m1", "m2"), account("a2", "m3"),
        KeepPowerSet(**envelope("m3"), meter_id="m3", operator_id="op-9", reason="clinic"),
    ])  # fmt: skip
    log, stopping = Log(p), asyncio.Event()
    worker = start_worker(env, tmp_path / "control.log")
    try:
        async with (
            background(log.follow(bootstrap, stopping), sender(bootstrap, log, stopping)),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
        ):
            await get(http, "/readyz", within=60)
            raised_a1 = arrears("a1", "m1,m2")
            await produce(bootstrap, [raised_a1, arrears("a2", "m3")])
            trips = await log.wait_for(CommandRequested, 2, action=Action.TRIP)
            assert {(c.meter_id, c.requested_by) for c in trips} == {
                ("m1", "policy:prepaid"),
                ("m2", "policy:prepaid"),
            }
            await log.wait_for(CommandRequested, action=Action.KEEP_POWER_ON, meter_id="m3")

            # (a) the acknowledgement makes m1's relay state known
            m1 = await until(http, "/meters/m1/relay", lambda b: b["state"] == "off")
            assert m1["pending"] is None and m1["desired"]["source"] == "prepaid"
            m3 = await get(http, "/meters/m3/relay")
            assert (m3["desired"]["source"], m3["commanded"], m3["keep_power"]) == ("keep_power", "on", True)

            # (c) m2 fails, is retried with backoff, and its attempts time out into an alarm
            (trip2,) = [c for c in trips if c.meter_id == "m2"]
            (alarm,) = await log.wait_for(AlarmRaised, kind=AlarmKind.COMMAND_TIMEOUT, within=40)
            assert alarm.subject_id == "m2" and alarm.details["command_id"] == trip2.command_id
            retries = log.of(CommandRequested, meter_id="m2", action=Action.TRIP)[1:]
            assert [r.params["attempt"] for r in retries] == ["2", "3"]
            assert {r.params["retry_of"] for r in retries} == {trip2.command_id}
            (failed,) = log.of(CommandFailed, command_id=trip2.command_id)
            timeouts = log.of(CommandTimedOut, command_id=trip2.command_id)
            assert [t.attempt for t in timeouts] == [2, 3]
            (ended,) = await log.wait_for(CommandAbandoned, command_id=trip2.command_id)
            assert (ended.outcome, ended.attempts) == (Outcome.TIMED_OUT, 3)
            assert ended.causation_id == timeouts[-1].event_id
            assert (ended.action, ended.requested_by, ended.meter_id) == (Action.TRIP, "policy:prepaid", "m2")
            assert (retries[0].time - failed.time).total_seconds() >= 1  # backoff 1 s
            assert (retries[1].time - timeouts[0].time).total_seconds() >= 2  # then 2 s
            view = await get(http, f"/commands/{trip2.command_id}")
            assert view["status"] == "timed_out" and view["requested_by"] == "policy:prepaid"
            assert [a["actor"] for a in view["audit"]][-2:] == ["sender", "lifecycle"]
            assert log.of(CommandRequested, meter_id="m3", action=Action.TRIP) == []  # (b) keep-power

            # (a) the clear closes both relays; a redelivered alarm changes nothing
            cleared = AlarmCleared(
                **envelope("a1"), alarm_id=f"{p}-a1", kind=AlarmKind.ARREARS, reason="recharge"
            )
            await produce(bootstrap, [cleared])
            closes = await log.wait_for(CommandRequested, 2, action=Action.CLOSE)
            assert {c.meter_id for c in closes} == {"m1", "m2"}
            on = await until(http, "/meters?state=on", lambda b: len(b) == 2)
            assert {m["meter_id"] for m in on} == {"m1", "m2"}
            await produce(bootstrap, [raised_a1, cleared])

            # (d) SIGKILL, no snapshot: the whole log is replayed; nothing new is emitted
            await asyncio.sleep(3)
            before = log.emitted_ids()
            stop(worker, signal.SIGKILL)
            shutil.rmtree(tmp_path / "state" / "control" / "snapshots")
            worker = start_worker(env, tmp_path / "control.log")
            await until(http, "/meters/m1/relay", lambda b: b["state"] == "on", within=60)
            await asyncio.sleep(8)
            assert log.emitted_ids() == before
            assert (await get(http, "/meters/m2/relay"))["state"] == "on"
            assert (await get(http, f"/commands/{trip2.command_id}"))["status"] == "timed_out"
            assert log.of(CommandAbandoned) == [ended]  # the only command control gave up on, once
            stopping.set()
    finally:
        stop(worker)
        if worker.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            print((tmp_path / "control.log").read_text()[-4000:])
