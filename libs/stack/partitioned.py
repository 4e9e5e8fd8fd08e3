"""One processor state per input partition a replica owns: the handler and partition state of a
partitioned stream processor (:mod:`libs.stack.processor`) built from a state of one partition.

Its inputs are co-partitioned (partition p of each holds the same keys; a re-key stage puts every
fact a key needs there), so partitions never look at each other: a replica owning partitions 0 and
3 folds exactly what two replicas owning one each would, and a partition moved to another replica
is restored there (from its snapshot, or its partitions of the log) on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from libs.stack.catchup import EndOffsets
from libs.stack.deadletter import Rejected
from libs.stack.processor import Inbound, Outbound
from libs.stack.snapshot import Blob, ChunkedPickle


class PartitionFold(Protocol):
    """The state of one partition: what :class:`Partitioned` keeps one of per partition."""

    rejected: list[Rejected]

    def restore(self, partition: int, blob: Blob | None) -> None: ...
    def snapshot(self, partition: int) -> bytes | ChunkedPickle: ...
    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]: ...
    def tick(self, now: float) -> list[Outbound]: ...


S = TypeVar("S", bound=PartitionFold)


def partition_ends(end_offsets: EndOffsets, partition: int) -> EndOffsets:
    """``end_offsets`` narrowed to partition ``partition`` of every topic: a partition's state
    waits for the end of its own input partitions only."""
    suffix = f":{partition}"

    async def ends() -> dict[str, int]:
        return {k: v for k, v in (await end_offsets()).items() if k.endswith(suffix)}

    return ends


class Partitioned(Generic[S]):
    """Handler and partition state of a partitioned processor: one ``S`` per partition owned."""

    def __init__(self, make: Callable[[int], S]) -> None:
        """``make(partition)`` builds the empty state of one partition."""
        self.make = make
        self.states: dict[int, S] = {}
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
        """Each run of records of one partition to that partition's state, in order."""
        out: list[Outbound] = []
        for partition, records in itertools.groupby(batch, key=lambda record: record.group):
            state = self.states.get(partition)
            if state is not None:  # the processor only hands over partitions it restored
                out += state.handle(list(records))
        return out

    def tick(self, now: float) -> list[Outbound]:
        """What is due at ``now`` in every partition owned."""
        return [message for state in self.states.values() for message in state.tick(now)]
