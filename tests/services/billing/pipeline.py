"""Billing's two hops in one process, on simulated partitioned topics: facts are written to the
partitions Kafka's partitioner gives their keys, the router reads its input partitions in a
random interleaving (each partition in order, as a consumer does), its outputs are appended to
mf.billing-in and mf.bindings (which the router reads back), and each partition of mf.billing-in
is folded by books of its own."""

from __future__ import annotations

import random
from collections.abc import Iterable

from libs.events import Codec, Event, partition_for
from libs.events.topics import BY_NAME
from libs.stack.processor import Inbound, Outbound
from services.billing import router
from services.billing.worker import BillingState

Log = dict[tuple[str, int], list[bytes]]  # (topic, partition) -> messages in offset order


def publish(log: Log, events: Iterable[Event], codec: Codec) -> None:
    for e in events:
        log.setdefault((e.TOPIC, partition_for(e.key, BY_NAME[e.TOPIC].partitions)), []).append(
            codec.encode(e)
        )


def append(log: Log, outputs: Iterable[Outbound]) -> None:
    for out in outputs:
        assert out.partition is not None
        log.setdefault((out.topic, out.partition), []).append(out.value)


def route(
    log: Log, rng: random.Random, routing: router.Router | None = None, slice_max: int = 5
) -> router.Router:
    """Run the router over its inputs in ``log`` until nothing is left to read."""
    routing = routing or router.Router()
    codec = Codec()
    read: dict[tuple[str, int], int] = {}
    for group in {router.group_of(t, p) for (t, p) in log if t in router.INPUTS}:
        if group not in routing.meters and group < router.STATELESS:
            routing.restore(group, None)
    while True:
        pending = [tp for tp in log if tp[0] in router.INPUTS and read.get(tp, 0) < len(log[tp])]
        if not pending:
            return routing
        topic, partition = tp = rng.choice(pending)
        group = router.group_of(topic, partition)
        if group < router.STATELESS and group not in routing.meters:
            routing.restore(group, None)
        start = read.get(tp, 0)
        end = min(len(log[tp]), start + rng.randint(1, slice_max))
        batch = [
            Inbound(group, topic, partition, offset, None, codec.decode(log[tp][offset], router.IGNORED))
            for offset in range(start, end)
        ]
        read[tp] = end
        append(log, routing.handle(batch))


def fold_books(log: Log, partitions: int) -> dict[int, BillingState]:
    """Each partition of mf.billing-in folded by books of its own."""
    codec, states = Codec(), {}
    for p in range(partitions):
        state = states[p] = BillingState()
        state.restore(p, None)
        for offset, value in enumerate(log.get(("mf.billing-in", p), [])):
            state.handle([Inbound(p, "mf.billing-in", p, offset, None, codec.decode(value))])
    return states


def balances(states: dict[int, BillingState]) -> dict[tuple[str, str], int]:
    return {key: a.balance_fen for s in states.values() for key, a in s.books.accounts.items()}
