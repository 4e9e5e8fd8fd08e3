"""The billing worker's fold is independent of how the topics interleave."""

from __future__ import annotations

import pickle
import random
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events import (
    AccountOpened,
    MeterRegistered,
    Rate,
    ReadingRecorded,
    RechargeAccepted,
    TariffPublished,
)
from libs.events.base import Event
from libs.events.billing import BillingMode
from libs.stack.processor import SnapshotRejected
from services.billing.domain import oracle
from services.billing.domain.books import Books
from services.billing.testing import ROUTE, at, scenario
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
    restored.restore(0, state.snapshot(0)())
    for fact in reference:
        restored.fold(fact)
    assert _balances(restored) == oracle.balances([*reference, *stream])
    kinds = {type(f) for f in reference}
    assert kinds == {TariffPublished, MeterRegistered, AccountOpened}


def test_a_snapshot_is_the_state_when_taken_though_pickled_later() -> None:
    """The processor pickles snapshots in its writer thread while the fold goes on."""
    reference, stream = scenario("p", accounts=3, hours=48, seed=2)
    state = BillingState()
    half = len(stream) // 2
    for fact in [*reference, *stream[:half]]:
        state.fold(fact)
    later = state.snapshot(0)
    for fact in stream[half:]:
        state.fold(fact)
    restored = BillingState()
    restored.restore(0, later())
    assert _balances(restored) == oracle.balances([*reference, *stream[:half]]) != _balances(state)
    for fact in stream[half:]:
        restored.fold(fact)
    assert _balances(restored) == _balances(state)


def test_a_snapshot_of_an_older_format_is_rejected_so_the_log_rebuilds_the_books() -> None:
    old = pickle.dumps((Books(), set(), {}))  # the format before bills and freezes
    state = BillingState()
    with pytest.raises(SnapshotRejected):
        state.restore(0, old)
    assert state.books.accounts == {} and state.books.drafts == {}


def test_two_projects_with_the_same_ids_keep_separate_books() -> None:
    def site(project: str, price: str, kwh: int) -> list[Event]:
        def env(eid: str, subject: str, when: datetime) -> dict[str, object]:
            return {
                "event_id": f"{project}-{eid}",
                "project_id": project,
                "subject_id": subject,
                "time": when,
            }

        return [
            TariffPublished(**env("t", "t1", at(2024, 1, 1)), tariff_id="t1", version=1, name="t",
                            effective_from=at(2024, 1, 1), definition={"kind": "single", "price_fen": price}),
            MeterRegistered(**env("reg", "m1", at(2024, 1, 1)), meter_id="m1", address="1", protocol="dlt645-2007",
                            model="DDSY", medium="electricity", concentrator_id="c1", bus_id="b1"),
            AccountOpened(**env("open", "a1", at(2024, 1, 1)), account_id="a1", mode=BillingMode.PREPAID,
                          meter_ids=("m1",), tariff_id="t1", holder="h", opened_by="op"),
            RechargeAccepted(**env("rc", "a1", at(2024, 3, 1)), account_id="a1", amount_fen=10_000,
                             idempotency_key="k1", operator_id="op", channel="cash"),
            *(ReadingRecorded(**env(f"r{h}", "m1", at(2024, 3, 1, h)), meter_id="m1", sequence=h + 1,
                              registers={"active_import_kwh": {Rate.TOTAL: Decimal(kwh * h)}},
                              received_at=at(2024, 3, 1, h), route=ROUTE) for h in range(3)),
        ]  # fmt: skip

    one, two = site("p1", "50", 2), site("p2", "80", 5)
    state = BillingState()
    for a, b in zip(one, two, strict=True):  # interleaved, ids colliding at every step
        state.fold(a)
        state.fold(b)
    assert _balances(state) == {("p1", "a1"): 10_000 - 4 * 50, ("p2", "a1"): 10_000 - 10 * 80}
    assert _balances(state) == oracle.balances([*one, *two])
