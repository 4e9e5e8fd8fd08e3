"""`meterflow billing replay`: rebuild every balance from the event log, compare with the live ones.

Reads mf.billing-in (every fact billing's books fold, routed by account by billing's router) from
the beginning with plain aiokafka (no consumer group), folds each partition into a fresh
:class:`BillingState` of its own — the live books' own fold of the same ordered log, so facts
that arrived before what they need wait exactly as they did live — and compares each account's balance with the last
``BalanceChanged`` the live worker published on mf.ledger (F5: the event log rebuilds every
balance). Exit code 0 when they agree to the fen.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.events.billing import LEDGER_FACTS, BalanceChanged
from libs.events.codec import Codec
from libs.events.topics import LEDGER
from libs.stack.broker import high_watermarks, partition_counts
from libs.stack.processor import tune_gc
from services.billing.domain.alarms import AlarmConfig
from services.billing.worker import INPUTS, OWN_OUTPUTS, BillingState


@dataclass
class ReplayResult:
    """Balances rebuilt from the log, the live ones, and how fast the replay ran."""

    replayed: dict[tuple[str, str], int]  # (project, account) -> balance fen
    live: dict[tuple[str, str], int]
    events: int
    seconds: float
    waiting: int = 0  # facts still waiting for what they need at the end of the log
    parked: int = 0  # meter replacements with no reading after them yet

    @property
    def mismatches(self) -> dict[tuple[str, str], tuple[int | None, int | None]]:
        """(project, account) -> (replayed, live) where they differ. An account whose balance never
        moved has no live balance: replayed at 0, it agrees."""
        keys = self.replayed.keys() | self.live.keys()
        return {
            k: (self.replayed.get(k), self.live.get(k))
            for k in sorted(keys)
            if self.replayed.get(k) != self.live.get(k, 0 if k in self.replayed else None)
        }


NOT_BALANCES = frozenset(cls.TYPE for cls in LEDGER_FACTS if cls is not BalanceChanged)


async def replay(bootstrap: str, alarm_config: AlarmConfig | None = None) -> ReplayResult:
    """Fold the whole log into fresh books; collect the live balances on the way."""
    tune_gc()
    counts = await asyncio.to_thread(partition_counts, bootstrap, [*INPUTS, LEDGER.name])
    tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
    ends = await high_watermarks(bootstrap, tps)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    states: dict[int, BillingState] = {}
    codec, events = Codec(), 0
    live: dict[tuple[str, str], int] = {}
    started = time.perf_counter()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    if tp.topic == LEDGER.name:  # what the live worker published
                        for fact in codec.decode(record.value, ignore=NOT_BALANCES):
                            if isinstance(fact, BalanceChanged):
                                live[(fact.project_id, fact.account_id)] = fact.balance_fen
                        continue
                    state = states.get(tp.partition)
                    if state is None:
                        state = states[tp.partition] = BillingState(alarm_config)
                    for fact in codec.decode(record.value, ignore=OWN_OUTPUTS):
                        events += 1
                        state.fold(fact)
                if records and records[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    replayed = {key: a.balance_fen for s in states.values() for key, a in s.books.accounts.items()}
    waiting = sum(len(q) for s in states.values() for q in s.waiting.values())
    parked = sum(len(p) for s in states.values() for p in s.parked.values())
    return ReplayResult(replayed, live, events, time.perf_counter() - started, waiting, parked)
