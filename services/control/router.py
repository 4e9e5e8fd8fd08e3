"""Control's router: re-keys what control folds onto mf.control-in, by meter.

Control's state is per meter (policy and command lifecycle), partitioned like mf.readings and
mf.registry, which it reads directly. Everything else it folds arrives keyed otherwise or on
topics of another partition count, so this stateless stage (the Kafka Streams repartition
pattern) writes each fact to the partition of mf.control-in of every meter it concerns
(docs/architecture.md, "Control on partitioned state"):

- command lifecycle facts (mf.commands) and operator facts (mf.control): their meter's partition;
- a batch (mf.control, keyed by batch id): the partitions of its meters; each expands its own;
- arrears alarms (mf.alarms, keyed by account): the partitions of the meters billing lists in
  ``details["meter_ids"]`` (every partition for an alarm without the list, from older logs);
  other alarms drive no relay and are not routed;
- ``AccountOpened`` (mf.billing): the partitions of its meters; tariff changes and alarm
  thresholds (mf.billing) and tariffs (mf.tariffs): every partition (reference data for parameter
  downloads, small and rare).

Facts keep their ids, so a router that routes a range again (a restart, a zombie replica) writes
the same facts again, which control drops by id.
"""

from __future__ import annotations

from collections.abc import Sequence

from libs.events.base import Event
from libs.events.billing import (
    LEDGER_FACTS,
    AccountOpened,
    AccountTariffChanged,
    AlarmCleared,
    AlarmKind,
    AlarmRaised,
    AlarmThresholdsSet,
    TariffPublished,
)
from libs.events.codec import Codec, partition_for
from libs.events.control import BatchRequested
from libs.events.topics import ALARMS, BILLING, COMMANDS, CONTROL, CONTROL_IN, TARIFFS
from libs.stack.deadletter import Rejected, reject
from libs.stack.processor import Inbound, Outbound
from libs.stack.snapshot import Blob

INPUTS = (COMMANDS.name, CONTROL.name, ALARMS.name, BILLING.name, TARIFFS.name)
# Every input partition is a state group of its own (there is no state: nothing is joined).
_BASE = {topic: 1_000 * (i + 1) for i, topic in enumerate(INPUTS)}
IGNORED = frozenset(cls.TYPE for cls in LEDGER_FACTS)  # billing's consequences (older logs)
MAX_PER_MESSAGE = 500
BROADCAST = (TariffPublished, AccountTariffChanged, AlarmThresholdsSet)


def group_of(topic: str, partition: int) -> int:
    return _BASE[topic] + partition


def meter_partition(meter_id: str, partitions: int = CONTROL_IN.partitions) -> int:
    """The partition of mf.control-in (and of mf.readings, mf.registry) a meter's facts go to."""
    return partition_for(meter_id.encode(), partitions)


def destinations(fact: Event, partitions: int = CONTROL_IN.partitions) -> set[int] | range:
    """The partitions of mf.control-in ``fact`` goes to (none: control does not fold it)."""
    if isinstance(fact, BROADCAST):
        return range(partitions)
    if isinstance(fact, AlarmRaised | AlarmCleared):
        if fact.kind is not AlarmKind.ARREARS:
            return set()
        listed = [m for m in fact.details.get("meter_ids", "").split(",") if m]
        return {meter_partition(m, partitions) for m in listed} if listed else range(partitions)
    if isinstance(fact, AccountOpened | BatchRequested):
        return {meter_partition(m, partitions) for m in fact.meter_ids}
    meter_id = getattr(fact, "meter_id", None)
    return {meter_partition(meter_id, partitions)} if isinstance(meter_id, str) else set()


class Router:
    """Handler and (empty) partition state of control's router."""

    def __init__(self, partitions: int = CONTROL_IN.partitions) -> None:
        self.partitions = partitions
        self.codec = Codec()
        self.rejected: list[Rejected] = []

    def restore(self, group: int, blob: Blob | None) -> None:
        """Nothing to restore: the router keeps no state (only its offsets, in the processor)."""

    def snapshot(self, group: int) -> bytes:
        return b""

    def forget(self, group: int) -> None:
        """Nothing to drop."""

    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Route every fact of the batch; the messages to produce, packed per partition."""
        routed: dict[int, list[Event]] = {}
        for record in batch:
            for fact in record.events:
                try:
                    for partition in sorted(destinations(fact, self.partitions)):
                        routed.setdefault(partition, []).append(fact)
                except Exception as exc:  # parked by the processor; every other fact goes on
                    reject(self.rejected, record, fact, exc)
        out: list[Outbound] = []
        for partition, facts in routed.items():
            for start in range(0, len(facts), MAX_PER_MESSAGE):
                chunk = facts[start : start + MAX_PER_MESSAGE]
                out.append(
                    Outbound(CONTROL_IN.name, chunk[0].key, self.codec.encode_events(chunk), partition)
                )
        return out
