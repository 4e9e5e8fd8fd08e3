"""Billing's router on the real broker: its pass-through inputs (mf.billing, mf.tariffs) resume
where the consumer group committed, so a worker that starts without any state (a new node, a lost
volume) routes what is new, not the whole of mf.billing again (which grew mf.billing-in by a copy
of every account fact at every failover)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from libs.events import Codec
from libs.events.topics import BILLING_IN, BINDINGS, CATALOGUE
from libs.stack.broker import EmbeddedBroker, ensure_topics
from services.billing.testing import produce
from tests.processes import Replica, stop
from tests.services.billing.helpers import SINGLE, account, recharge, tariff
from tests.services.notify.helpers import read_topic

pytestmark = pytest.mark.slow
CODEC = Codec()


def ids_on(bootstrap: str, topic: str) -> Counter[str]:
    return Counter(e.event_id for _, e in asyncio.run(read_topic(bootstrap, topic)))


def until(condition: Callable[[], bool], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_worker_without_state_routes_only_what_is_new(fresh_broker: EmbeddedBroker, tmp_path: Path) -> None:
    bootstrap = fresh_broker.bootstrap
    ensure_topics(bootstrap, CATALOGUE)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    base.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_BILLING_SNAPSHOT_EVERY_S="1")
    facts = [tariff(SINGLE), account(meters=("m1", "m2")), *(recharge(100 + i, f"k{i}") for i in range(40))]
    asyncio.run(produce(bootstrap, facts))
    wanted = {f.event_id for f in facts}
    first = Replica("billing", base, tmp_path, "first")
    try:
        first.wait_ready()
        until(lambda: wanted <= set(ids_on(bootstrap, BILLING_IN.name)))
    finally:
        stop(first.process)
    assert wanted <= set(ids_on(bootstrap, BILLING_IN.name))
    bindings = ids_on(bootstrap, BINDINGS.name)
    assert len(bindings) == 2 and set(bindings.values()) == {1}

    second = Replica("billing", base, tmp_path, "second")  # a new node: nothing of the first's state
    late = recharge(7, "late")
    try:
        second.wait_ready()
        asyncio.run(produce(bootstrap, [late]))
        until(lambda: late.event_id in ids_on(bootstrap, BILLING_IN.name))
    finally:
        stop(second.process)
    routed = ids_on(bootstrap, BILLING_IN.name)
    # every fact once: the tariff (to every partition) and the account facts (to their partition)
    assert routed[late.event_id] == 1
    assert routed[facts[0].event_id] == BILLING_IN.partitions
    assert all(routed[f.event_id] == 1 for f in facts[1:]), routed.most_common(3)
    assert ids_on(bootstrap, BINDINGS.name) == bindings  # no binding emitted again
