"""The billing worker's fold is independent of how the topics interleave."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events import AccountOpened, MeterRegistered, TariffPublished
from libs.events.base import Event
from libs.stack.processor import SnapshotRejected
from services.billing.domain import oracle
from services.billing.domain.books import Books
from services.billing.testing import scenario
from services.billing.worker import BillingState


def _balances(state: BillingState) -> dict[str, int]:
    return {a: s.balance_fen for a, s in state.books.accounts.items()}


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_any_interleaving_of_reference_and_stream_gives_the_oracle_balances(seed: int) -> None:
    reference, stream = scenario("p", accounts=4, hours=24, seed=seed % 7)
    expected = oracle.balances([*reference, *stream])
    rng = random.Random(seed)
    # Interleave as a consumer of several topics may: each topic keeps its own order, the merge
    # is arbitrary — here reference facts may arrive long after the readings that need them.
    merged: list[Event] = []
    queues = [list(reference), list(stream)]
    while any(queues):
        q = rng.choice([q for q in queues if q])
        merged.append(q.pop(0))
    state = BillingState()
    for fact in merged:
        state.fold(fact)
    assert _balances(state) == expected
    assert not any(state.waiting.values())


def test_facts_wait_for_what_they_need_and_survive_a_snapshot() -> None:
    reference, stream = scenario("p", accounts=2, hours=6, seed=1)
    state = BillingState()
    for fact in stream:  # everything before any tariff, meter or account is known
        state.fold(fact)
    assert state.books.accounts == {} and sum(len(q) for q in state.waiting.values()) == len(stream)
    restored = BillingState()
    restored.restore(0, state.snapshot(0))
    for fact in reference:
        restored.fold(fact)
    assert _balances(restored) == oracle.balances([*reference, *stream])
    kinds = {type(f) for f in reference}
    assert kinds == {TariffPublished, MeterRegistered, AccountOpened}


def test_a_snapshot_of_an_older_format_is_rejected_so_the_log_rebuilds_the_books() -> None:
    old = pickle.dumps((Books(), set(), {}))  # the format before bills and freezes
    state = BillingState()
    with pytest.raises(SnapshotRejected):
        state.restore(0, old)
    assert state.books.accounts == {} and state.books.drafts == {}
