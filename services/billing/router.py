"""Billing's router: re-keys every fact billing's books fold onto mf.billing-in, by account.

Billing joins facts keyed by meter (readings, registrations and replacements) with facts keyed by
account (openings, money, tariff changes) and reference facts (tariffs, allowance plans, project
thresholds). Kafka gives each replica a share of the partitions, so each share must hold
everything its accounts need: the router is the re-key (repartition) stage that makes it so, in
two hops (docs/architecture.md, "Billing on partitioned state"):

1. *bindings* (stateless): each ``AccountOpened`` on mf.billing becomes one ``MeterBound`` per
   meter on mf.bindings, keyed by meter, so the binding lands on the partition of the meter's
   readings (mf.readings, mf.registry and mf.bindings share one partition count);
2. *routing*: per meter partition, the router keeps each meter's binding (the latest opening
   naming it, by time then id: the same whatever order bindings arrive in) and forwards the
   meter's registrations, replacements and readings to its account's partition of
   mf.billing-in, in the order they arrive; a meter's facts wait, in order, until it is bound.
   Account facts from mf.billing go to the same partition of mf.billing-in their account maps
   to; reference facts go to every partition.

Facts keep their own ids: a router that crashes and routes a range again (or a zombie replica
that has not noticed it lost a partition) writes the same facts again, which the books drop by
id. Billing's books read mf.billing-in alone, one ordered log per partition, so
``meterflow billing replay`` folds exactly the sequence the live books folded.

A meter moved to an account in another partition starts there afresh: its registration and
latest replacement are sent there, and its first reading there is the baseline (the books of the
old partition keep what was charged before). Openings are the only binding facts there are today.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from libs.events.acquisition import MeterRegistered, MeterReplaced, ReadingRecorded
from libs.events.base import Event, event_id_for
from libs.events.billing import (
    LEDGER_FACTS,
    AccountOpened,
    AccountTariffChanged,
    AlarmThresholdsSet,
    AllowancePlanSet,
    MeterBound,
    TariffPublished,
)
from libs.events.codec import Codec, partition_for
from libs.events.topics import BILLING, BILLING_IN, BINDINGS, READINGS, REGISTRY_TOPIC, TARIFFS
from libs.stack.deadletter import Rejected, reject
from libs.stack.processor import Inbound, Outbound
from libs.stack.snapshot import Blob, ChunkedPickle, load_chunked
from services.billing.domain.books import MONEY
from services.billing.domain.tariff import TariffVersion

log = logging.getLogger(__name__)
SNAPSHOT_VERSION = 1
MAX_WAITING = 10_000  # facts of one unbound meter; beyond it the oldest is dropped (logged)
MAX_PER_MESSAGE = 500  # facts packed in one message of mf.billing-in
# Inputs: the meter-keyed ones (one partition count, joined by meter) and the stateless ones.
METER_INPUTS = (READINGS.name, REGISTRY_TOPIC.name, BINDINGS.name)
INPUTS = (*METER_INPUTS, BILLING.name, TARIFFS.name)
# State groups (libs.stack.processor): a meter partition is its own number; a partition of a
# stateless input is a group of its own above STATELESS (never joined, nothing to snapshot).
STATELESS = 1_000
_STATELESS_BASE = {BILLING.name: STATELESS, TARIFFS.name: 2 * STATELESS}
# What the router never reads: billing's own consequences (on mf.billing in old logs).
IGNORED = frozenset(cls.TYPE for cls in LEDGER_FACTS)
ACCOUNT_FACTS = (AccountOpened, AccountTariffChanged, *MONEY)
METER_FACTS = (MeterRegistered, MeterReplaced, ReadingRecorded)
Key = tuple[str, str]  # (project id, meter id)


def group_of(topic: str, partition: int) -> int:
    """The router's state group of an input partition (see :data:`STATELESS`)."""
    return _STATELESS_BASE.get(topic, 0) + partition


def is_stateless(group: int) -> bool:
    """Whether a group is a pass-through input (mf.billing, mf.tariffs): no state to restore, it
    resumes where the consumer group committed (libs.stack.processor ``stateless``)."""
    return group >= STATELESS


def account_partition(account_id: str, partitions: int = BILLING_IN.partitions) -> int:
    """The partition of mf.billing-in (and of mf.billing) an account's facts go to."""
    return partition_for(account_id.encode(), partitions)


def bindings_of(opened: AccountOpened) -> list[MeterBound]:
    """Hop 1: the opening's meters, one binding each (ids derived: a repeat is the same fact)."""
    return [
        MeterBound(
            event_id=event_id_for(opened.project_id, "bound", opened.event_id, meter),
            project_id=opened.project_id,
            subject_id=meter,
            time=opened.time,
            causation_id=opened.event_id,
            correlation_id=opened.correlation_id or opened.event_id,
            meter_id=meter,
            account_id=opened.account_id,
        )
        for meter in opened.meter_ids
    ]


def destinations(fact: Event, partitions: int = BILLING_IN.partitions) -> range | tuple[int, ...]:
    """The partitions of mf.billing-in a fact from mf.billing or mf.tariffs goes to (none:
    billing does not fold it). A tariff whose definition billing cannot read raises
    :class:`~services.billing.domain.tariff.TariffError` here, at the door: it is dead-lettered
    once (a retry re-drives it through the router), not in every partition's books."""
    if isinstance(fact, TariffPublished):
        TariffVersion.from_event(fact)  # the books' own reading of it
        return range(partitions)
    if isinstance(fact, AllowancePlanSet):
        return range(partitions)
    if isinstance(fact, AlarmThresholdsSet):
        return (account_partition(fact.account_id, partitions),) if fact.account_id else range(partitions)
    if isinstance(fact, ACCOUNT_FACTS):
        return (account_partition(fact.account_id, partitions),)
    return ()


@dataclass(frozen=True)
class Binding:
    """The account a meter is billed to, and the opening that said so."""

    account_id: str
    time: datetime
    cause: str

    def newer_than(self, other: Binding | None) -> bool:
        return other is None or (self.time, self.cause) > (other.time, other.cause)


@dataclass
class MeterPartition:
    """The router's state of one meter partition."""

    bindings: dict[Key, Binding] = field(default_factory=dict)
    # the latest registration and replacement of each meter, encoded: sent again on a move
    registrations: dict[Key, bytes] = field(default_factory=dict)
    replacements: dict[Key, bytes] = field(default_factory=dict)
    waiting: dict[Key, list[Event]] = field(default_factory=dict)  # facts of unbound meters, in order


def _runs(facts: list[Event]) -> list[list[Event]]:
    """``facts`` in order, cut into runs of readings and runs of other facts, each of at most
    :data:`MAX_PER_MESSAGE`."""
    runs: list[list[Event]] = []
    for fact in facts:
        reading = type(fact) is ReadingRecorded
        if runs and (type(runs[-1][0]) is ReadingRecorded) == reading and len(runs[-1]) < MAX_PER_MESSAGE:
            runs[-1].append(fact)
        else:
            runs.append([fact])
    return runs


class Router:
    """Handler and partition state of the router processor (one :class:`MeterPartition` per
    meter partition owned)."""

    def __init__(self, partitions: int = BILLING_IN.partitions) -> None:
        self.partitions = partitions
        self.codec = Codec()
        self.meters: dict[int, MeterPartition] = {}
        self.dropped = 0
        self.rejected: list[Rejected] = []  # facts whose routing raised: dead-lettered, never fatal

    # -- partition state ---------------------------------------------------------------
    def restore(self, group: int, blob: Blob | None) -> None:
        """Load a meter partition's state (a stateless group has none)."""
        if group >= STATELESS:
            return
        state = MeterPartition()
        if blob:  # SnapshotRejected for another version: the processor rebuilds from the log
            doc = load_chunked(
                blob, lambda d: isinstance(d, tuple) and len(d) == 5 and d[0] == SNAPSHOT_VERSION
            )
            _, state.bindings, state.registrations, state.replacements, state.waiting = doc
        self.meters[group] = state

    def snapshot(self, group: int) -> bytes | ChunkedPickle:
        state = self.meters.get(group)
        if state is None:
            return b""
        return ChunkedPickle(
            (
                SNAPSHOT_VERSION,
                dict(state.bindings),
                dict(state.registrations),
                dict(state.replacements),
                {k: list(v) for k, v in state.waiting.items()},
            )
        )

    def forget(self, group: int) -> None:
        self.meters.pop(group, None)

    # -- the fold --------------------------------------------------------------------
    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Route every fact of the batch; return the messages to produce, packed per partition."""
        routed: dict[int, list[Event]] = {}  # partition of mf.billing-in -> facts, in order
        bound: list[MeterBound] = []
        for record in batch:
            state = self.meters.get(record.group) if record.group < STATELESS else None
            for fact in record.events:
                try:
                    if state is not None:
                        self._meter_fact(state, fact, routed)
                        continue
                    if isinstance(fact, AccountOpened):
                        bound += bindings_of(fact)
                    for partition in destinations(fact, self.partitions):
                        routed.setdefault(partition, []).append(fact)
                except Exception as exc:  # parked by the processor; every other fact goes on
                    reject(self.rejected, record, fact, exc)
        return self._encode(routed, bound)

    def _meter_fact(self, state: MeterPartition, fact: Event, routed: dict[int, list[Event]]) -> None:
        if isinstance(fact, MeterBound):
            self._bind(state, fact, routed)
            return
        if not isinstance(fact, METER_FACTS):
            return  # failed reads, updates, concentrators: nothing billing folds
        key = (fact.project_id, fact.meter_id)
        if isinstance(fact, MeterRegistered):
            state.registrations[key] = self.codec.encode(fact)
        elif isinstance(fact, MeterReplaced):
            state.replacements[key] = self.codec.encode(fact)
        binding = state.bindings.get(key)
        if binding is None:
            queue = state.waiting.setdefault(key, [])
            queue.append(fact)
            if len(queue) > MAX_WAITING:
                queue.pop(0)
                self.dropped += 1
                log.warning("billing router: more than %d facts wait for meter %s/%s; dropped the oldest",
                            MAX_WAITING, *key)  # fmt: skip
            return
        routed.setdefault(account_partition(binding.account_id, self.partitions), []).append(fact)

    def _bind(self, state: MeterPartition, fact: MeterBound, routed: dict[int, list[Event]]) -> None:
        key = (fact.project_id, fact.meter_id)
        old = state.bindings.get(key)
        new = Binding(fact.account_id, fact.time, fact.causation_id or fact.event_id)
        if not new.newer_than(old):
            return  # a repeat, or an older opening arriving late
        state.bindings[key] = new
        target = account_partition(new.account_id, self.partitions)
        out = routed.setdefault(target, [])
        if old is not None and account_partition(old.account_id, self.partitions) != target:
            # moved to another partition's books: they need the meter's registration and latest
            # replacement (a reading counting from it waits for it)
            for stored in (state.registrations.get(key), state.replacements.get(key)):
                if stored is not None:
                    out += self.codec.decode(stored)
        out += state.waiting.pop(key, [])

    def _encode(self, routed: dict[int, list[Event]], bound: list[MeterBound]) -> list[Outbound]:
        out: list[Outbound] = []
        for partition, facts in routed.items():
            for chunk in _runs(facts):
                # readings as a reading batch: the books decode those on the fast path (msgspec)
                if type(chunk[0]) is ReadingRecorded:
                    value = self.codec.encode_batch(cast(list[ReadingRecorded], chunk))
                else:
                    value = self.codec.encode_events(chunk)
                out.append(Outbound(BILLING_IN.name, chunk[0].key, value, partition))
        for fact in bound:
            partition = partition_for(fact.key, BINDINGS.partitions)
            out.append(Outbound(BINDINGS.name, fact.key, self.codec.encode(fact), partition))
        return out

    @property
    def waiting(self) -> int:
        """Facts of meters not bound yet, over every meter partition owned."""
        return sum(len(q) for state in self.meters.values() for q in state.waiting.values())
