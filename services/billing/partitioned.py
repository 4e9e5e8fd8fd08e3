"""Billing's books per partition: one :class:`~services.billing.worker.BillingState` for each
partition of mf.billing-in a replica owns, each folded, snapshotted and given away on its own.

The router (:mod:`services.billing.router`) puts every fact an account needs on its account's
partition, so partitions never look at each other: a replica that owns partitions 0 and 3 folds
exactly what two replicas owning one each would, and a partition moved to another replica is
restored there from its snapshot (or rebuilt from its partition of the log) alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from libs.stack.catchup import EndOffsets
from libs.stack.deadletter import Rejected
from libs.stack.processor import Inbound, Outbound
from libs.stack.snapshot import Blob, ChunkedPickle
from services.billing.worker import BillingState


def partition_ends(end_offsets: EndOffsets, topic: str, partition: int) -> EndOffsets:
    """``end_offsets`` narrowed to one partition of ``topic`` (a state waits for its own only)."""

    async def ends() -> dict[str, int]:
        key = f"{topic}:{partition}"
        return {k: v for k, v in (await end_offsets()).items() if k == key}

    return ends


class BillingPartitions:
    """Handler and partition state of billing's books processor."""

    def __init__(self, make: Callable[[int], BillingState]) -> None:
        """``make(partition)`` builds the empty state of one partition."""
        self.make = make
        self.states: dict[int, BillingState] = {}
        # facts whose fold raised, every partition's (shared with each state; the processor
        # dead-letters and clears it after each handle())
        self.rejected: list[Rejected] = []

    def restore(self, partition: int, blob: Blob | None) -> None:
        state = self.make(partition)
        state.rejected = self.rejected
        state.restore(partition, blob)  # SnapshotRejected: the processor restores from nothing
        self.states[partition] = state

    def snapshot(self, partition: int) -> bytes | ChunkedPickle:
        return self.states[partition].snapshot(partition)

    def forget(self, partition: int) -> None:
        self.states.pop(partition, None)

    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Each run of records of one partition to that partition's books, in order."""
        out: list[Outbound] = []
        for partition, records in itertools.groupby(batch, key=lambda record: record.group):
            state = self.states.get(partition)
            if state is not None:  # the processor only hands over partitions it restored
                out += state.handle(list(records))
        return out

    def tick(self, now: float) -> list[Outbound]:
        """The allowances due in every partition owned."""
        return [message for state in self.states.values() for message in state.tick(now)]

    @property
    def accounts(self) -> int:
        return sum(len(state.books.accounts) for state in self.states.values())

    @property
    def waiting(self) -> int:
        return sum(len(q) for state in self.states.values() for q in state.waiting.values())

    @property
    def parked(self) -> int:
        return sum(len(p) for state in self.states.values() for p in state.parked.values())
