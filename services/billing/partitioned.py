"""Billing's books per partition: one :class:`~services.billing.worker.BillingState` for each
partition of mf.billing-in a replica owns (:class:`libs.stack.partitioned.Partitioned`), each
folded, snapshotted and given away on its own.

The router (:mod:`services.billing.router`) puts every fact an account needs on its account's
partition, so partitions never look at each other.
"""

from __future__ import annotations

from libs.stack.partitioned import Partitioned
from services.billing.worker import BillingState


class BillingPartitions(Partitioned[BillingState]):
    """Handler and partition state of billing's books processor."""

    @property
    def accounts(self) -> int:
        return sum(len(state.books.accounts) for state in self.states.values())

    @property
    def waiting(self) -> int:
        return sum(len(q) for state in self.states.values() for q in state.waiting.values())

    @property
    def parked(self) -> int:
        return sum(len(p) for state in self.states.values() for p in state.parked.values())
