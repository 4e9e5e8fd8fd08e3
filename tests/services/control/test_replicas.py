"""Control scaled out on the real broker, on the production partition counts: 2 and 3 workers in one
consumer group, with a worker added (a rebalance), one SIGKILLed and replaced, and an overlapping
rolling update, while arrears alarms are raised and cleared on accounts whose meters include
keep-power (保电) ones, and a scripted sender acknowledges every command. No keep-power meter may
ever be told to trip, and every other meter must end as its account's alarms say, each step
commanded once (ids derived from causes: a zombie's or a replay's repeats carry the same ids).

Before control was partitioned, two replicas each folded a share of the partitions as if it were
everything and tripped 9 of 20 keep-power meters."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import AccountOpened, AlarmCleared, AlarmRaised, Codec, KeepPowerSet
from libs.events.base import Event, utcnow
from libs.events.billing import AlarmKind, BillingMode
from libs.events.control import Action, CommandAcknowledged, CommandRequested, CommandSent
from libs.events.topics import CATALOGUE, COMMANDS, CONTROL_IN
from libs.stack.broker import ensure_topics, partition_counts
from tests.processes import Replica, stop

pytestmark = pytest.mark.slow
CODEC = Codec()


async def produce(bootstrap: str, events: list[Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        for e in events:
            await producer.send(e.TOPIC, CODEC.encode(e), key=e.key)
        await producer.flush()
    finally:
        await producer.stop()


class Commands:
    """Every command of one project on mf.commands, and a sender that acknowledges each once."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.requested: dict[str, CommandRequested] = {}  # command id -> request, first seen
        self.order: list[str] = []  # command ids in the order they were read
        self.duplicates = 0  # the same command id requested again (a zombie's or a replay's repeat)

    async def follow(self, bootstrap: str, done: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
        await consumer.start()
        await producer.start()
        try:
            consumer.assign([TopicPartition(COMMANDS.name, p) for p in range(COMMANDS.partitions)])
            await consumer.seek_to_beginning()
            while not done.is_set():
                replies: list[Event] = []
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        for e in CODEC.decode(r.value):
                            if not isinstance(e, CommandRequested) or e.project_id != self.project:
                                continue
                            if e.command_id in self.requested:
                                self.duplicates += 1
                                continue
                            self.requested[e.command_id] = e
                            self.order.append(e.command_id)
                            common = {"project_id": e.project_id, "subject_id": e.meter_id,
                                      "command_id": e.command_id, "meter_id": e.meter_id}  # fmt: skip
                            replies += [CommandSent(**common, attempt=1),
                                        CommandAcknowledged(**common, confirmed_state=e.action.value)]  # fmt: skip
                for reply in replies:
                    await producer.send(reply.TOPIC, CODEC.encode(reply), key=reply.key)
        finally:
            await producer.stop()
            await consumer.stop()

    def relay_actions(self, meter: str) -> list[Action]:
        return [
            self.requested[c].action
            for c in self.order
            if self.requested[c].meter_id == meter and self.requested[c].action in (Action.TRIP, Action.CLOSE)
        ]


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_never_trip_keep_power_meters_and_end_as_the_alarms_say(
    fresh_broker: object, tmp_path: Path, replicas: int
) -> None:
    bootstrap = fresh_broker.bootstrap  # type: ignore[attr-defined]
    ensure_topics(bootstrap, CATALOGUE)
    assert partition_counts(bootstrap, [CONTROL_IN.name]) == {CONTROL_IN.name: 12}
    project = f"p-ctl-{replicas}"
    rng = random.Random(replicas)

    def envelope(subject: str) -> dict[str, Any]:
        return {"project_id": project, "subject_id": subject, "time": utcnow()}

    accounts = {f"a{i}": tuple(f"m{i}-{j}" for j in range(2)) for i in range(30)}
    keep = {meters[0] for i, meters in enumerate(accounts.values()) if i % 3 == 0}  # 10 keep-power meters
    setup: list[Event] = [
        AccountOpened(
            **envelope(a),
            account_id=a,
            mode=BillingMode.PREPAID,
            meter_ids=ms,
            tariff_id="t",
            holder="h",
            opened_by="op",
        )
        for a, ms in accounts.items()
    ]
    setup += [
        KeepPowerSet(**envelope(m), meter_id=m, operator_id="op", reason="clinic") for m in sorted(keep)
    ]
    episodes: list[list[Event]] = []  # waves of alarms: raised, and later some cleared
    in_arrears: dict[str, bool] = {}
    open_alarm: dict[str, str] = {}
    for wave in range(6):
        events: list[Event] = []
        for a in rng.sample(sorted(accounts), 8):
            raised = not in_arrears.get(a, False)
            alarm_id = f"{project}-{a}-{wave if raised else 'x'}"
            if raised:
                in_arrears[a] = True
                events.append(AlarmRaised(**envelope(a), alarm_id=alarm_id, kind=AlarmKind.ARREARS, severity=3,
                                          message="arrears", details={"meter_ids": ",".join(accounts[a])}))  # fmt: skip
            else:
                in_arrears[a] = False
                events.append(AlarmCleared(**envelope(a), alarm_id=open_alarm[a], kind=AlarmKind.ARREARS,
                                           reason="recharge", details={"meter_ids": ",".join(accounts[a])}))  # fmt: skip
            if raised:
                open_alarm[a] = alarm_id
        episodes.append(events)

    base = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    base.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_CONTROL_SNAPSHOT_EVERY_S="1", MF_CONTROL_TICK_S="0.5",
                MF_CONTROL_STALE_AFTER_S="600")  # fmt: skip
    log = Commands(project)
    loop = asyncio.new_event_loop()
    done = asyncio.Event()
    follower = loop.create_task(log.follow(bootstrap, done))
    loop.run_until_complete(produce(bootstrap, setup))
    names = iter(f"w{i}" for i in range(100))
    workers = [Replica("control", base, tmp_path, next(names)) for _ in range(replicas - 1)]
    try:
        for w in workers:
            w.wait_ready()

        def pause(low: float, high: float) -> None:
            loop.run_until_complete(asyncio.sleep(rng.uniform(low, high)))

        def wave(i: int) -> None:
            loop.run_until_complete(produce(bootstrap, episodes[i]))

        wave(0)
        pause(1, 3)
        workers.append(Replica("control", base, tmp_path, next(names)))  # scale up mid-stream
        wave(1)
        pause(4, 7)
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill()  # a node dies
        wave(2)
        workers.append(Replica("control", base, tmp_path, next(names)))  # its replacement, no state
        pause(4, 7)
        wave(3)
        for old in list(workers):  # a rolling update as Kubernetes does it with maxUnavailable 0:
            workers.append(successor := Replica("control", base, tmp_path, next(names)))
            successor.wait_ready(180)  # each successor ready before its old one stops
            workers.remove(old)
            stop(old.process)
        wave(4)
        wave(5)
        for w in workers:
            w.wait_ready(within=180)

        def settled() -> bool:
            for a, meters in accounts.items():
                for m in meters:
                    actions = log.relay_actions(m)
                    want = Action.TRIP if in_arrears.get(a) and m not in keep else Action.CLOSE
                    if (actions[-1] if actions else Action.CLOSE) is not want:
                        return False
            return True

        deadline = time.monotonic() + 90
        while not settled() and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(1))
        loop.run_until_complete(asyncio.sleep(3))  # nothing more may come
        # every meter partition is owned by exactly one of the workers left, once the group is stable
        deadline = time.monotonic() + 60
        while True:
            owned = [p for w in workers for p in w.wait_ready()["partitions"]]
            if sorted(owned) == list(range(CONTROL_IN.partitions)) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert sorted(owned) == list(range(CONTROL_IN.partitions))
        assert sum(1 for w in workers if w.wait_ready()["partitions"]) > 1
    finally:
        for w in workers:
            stop(w.process)
        done.set()
        with contextlib.suppress(Exception):
            loop.run_until_complete(follower)
        loop.close()
    tripped_keep = sorted(m for m in keep if Action.TRIP in log.relay_actions(m))
    assert tripped_keep == [], f"keep-power meters tripped: {tripped_keep}"
    if not settled():
        for f in sorted(tmp_path.glob("*.log")):
            print(f.name, f.read_text()[-2000:])
    for a, meters in accounts.items():
        for m in meters:
            actions = log.relay_actions(m)
            want = Action.TRIP if in_arrears.get(a) and m not in keep else Action.CLOSE
            assert (actions[-1] if actions else Action.CLOSE) is want, (a, m, actions)
            # each step once: a trip is never followed by another trip (nor a close by a close)
            assert all(x is not y for x, y in itertools.pairwise(actions)), (m, actions)
    assert sum(1 for a in in_arrears.values() if a) > 3  # trips really happened
