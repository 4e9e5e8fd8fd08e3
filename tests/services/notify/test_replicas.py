"""Notify with several replicas on the real broker and the local provider server: one is active
(its decider holds every partition, its sender sends) and the others stand by; the active one is
SIGKILLed between waves and a standby takes over, then an overlapping rolling update replaces
them all. Every meter's lost-contact notice reaches its account holder exactly once.

Before, two replicas split the decider's partitions (each folded half of the facts as if it were
everything: half the lost-contact messages were never decided) and both senders sent everything."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from libs.events import AccountOpened, AlarmRaised
from libs.events.billing import AlarmKind, BillingMode
from libs.events.topics import CATALOGUE
from libs.stack.broker import EmbeddedBroker, ensure_topics
from services.notify.testing.provider_server import ProviderServer
from tests.processes import Replica, stop
from tests.services.notify.helpers import produce

pytestmark = pytest.mark.slow
ACCOUNTS = 30


def phone(i: int) -> str:
    return f"+86138000000{i:02d}"


def lost_contact(i: int) -> AlarmRaised:
    meter = f"m-{i}"  # a meter alarm: notify finds the account through the meter
    return AlarmRaised(project_id="p", subject_id=meter, alarm_id=f"lost-{i}", kind=AlarmKind.LOST_CONTACT,
                       severity=2, message="lost contact")  # fmt: skip


def wait_for(condition: object, within: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            tails = "\n".join(f"{f.name}: {f.read_text()[-1500:]}" for f in sorted(logs.glob("*.log")))
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.2)


def test_one_active_replica_sends_each_notice_once_across_a_kill_and_a_rolling_update(
    fresh_broker: EmbeddedBroker, providers: ProviderServer, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap
    ensure_topics(bootstrap, CATALOGUE)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    base.update(
        MF_KAFKA_BOOTSTRAP=bootstrap, MF_NOTIFY_SNAPSHOT_EVERY_S="1",
        MF_NOTIFY_SMS_PROVIDER="aliyun", MF_NOTIFY_ALIYUN_BASE_URL=providers.url("aliyun"),
        MF_NOTIFY_ALIYUN_ACCESS_KEY_ID="ak-test", MF_NOTIFY_ALIYUN_ACCESS_KEY_SECRET="sk-test",
        MF_NOTIFY_SMS_SIGN_NAME="校园电费",
    )  # fmt: skip
    providers.state.delay_seconds = 0.0
    received = providers.state.received
    asyncio.run(produce(bootstrap, [
        AccountOpened(project_id="p", subject_id=f"acc-{i}", account_id=f"acc-{i}", mode=BillingMode.PREPAID,
                      meter_ids=(f"m-{i}",), tariff_id="t", holder=f"住户{i}", phone=phone(i), opened_by="op")
        for i in range(ACCOUNTS)
    ]))  # fmt: skip
    names = iter(f"w{i}" for i in range(100))
    workers = [Replica("notify", base, tmp_path, next(names)) for _ in range(2)]

    def roles() -> list[str]:
        return [str((w.readyz() or {}).get("role")) for w in workers]

    try:
        for w in workers:
            w.wait_ready(120)
        wait_for(lambda: sorted(roles()) == ["active", "standby"], 60, "one active, one standby", tmp_path)
        asyncio.run(produce(bootstrap, [lost_contact(i) for i in range(0, 10)]))
        wait_for(lambda: len(received) >= 10, 60, "the first wave", tmp_path)
        time.sleep(2)  # the deliveries are recorded: a kill now loses nothing and repeats nothing

        active = workers[roles().index("active")]
        workers.remove(active)
        active.kill()  # the active node dies: the standby takes over after the session timeout
        workers.append(Replica("notify", base, tmp_path, next(names)))
        asyncio.run(produce(bootstrap, [lost_contact(i) for i in range(10, 20)]))
        wait_for(lambda: len(received) >= 20, 120, "the second wave, after the failover", tmp_path)
        time.sleep(2)

        for old in list(workers):  # a rolling update: each successor starts before its old one stops
            workers.append(Replica("notify", base, tmp_path, next(names)))
            time.sleep(2)
            workers.remove(old)
            stop(old.process)
        for w in workers:
            w.wait_ready(120)
        asyncio.run(produce(bootstrap, [lost_contact(i) for i in range(20, ACCOUNTS)]))
        wait_for(lambda: len(received) >= ACCOUNTS, 120, "the third wave, after the rolling update", tmp_path)
        time.sleep(3)  # nothing more may come
        wait_for(lambda: sorted(roles()) == ["active", "standby"], 60, "one active, one standby", tmp_path)
    finally:
        for w in workers:
            stop(w.process)
    sent = Counter(r.to for r in received if r.provider == "aliyun")
    assert sent == Counter({phone(i): 1 for i in range(ACCOUNTS)})
    assert {r.template for r in received} == {"SMS_METER_LOST_CONTACT"}
