"""An account moves to another tariff (``AccountTariffChanged``): later use is priced by it, an
interval spanning the change is apportioned between the two, and the worker holds readings until
every tariff of the account is known."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from libs.events import AccountTariffChanged, BalanceChanged
from libs.events.base import Event
from libs.events.billing import ChargeApplied
from services.billing.domain.books import Books
from services.billing.domain.ledger import AccountNotFound
from services.billing.worker import BillingState
from tests.services.billing.helpers import SINGLE, P, account, at, meter, reading, tariff

CHANGE_AT = at(2024, 3, 1, 12)
DEAR = {"kind": "single", "price_fen": "80"}


def change(
    effective: datetime, tid: str = "t2", n: int = 1, recorded: datetime | None = None
) -> AccountTariffChanged:
    return AccountTariffChanged(
        event_id=f"chg-{n}", project_id=P, subject_id="a1", account_id="a1", tariff_id=tid,
        effective_from=effective, operator_id="op", reason="moved to commercial", time=recorded or effective,
    )  # fmt: skip


def books() -> Books:
    b = Books()
    for f in (tariff(SINGLE), tariff(DEAR, tid="t2"), meter(), account()):
        b.handle(f)
    return b


def charges(out: list[Event]) -> list[ChargeApplied]:
    return [e for e in out if isinstance(e, ChargeApplied)]


def test_use_after_the_change_is_priced_by_the_new_tariff_and_a_spanning_interval_is_split() -> None:
    b = books()
    b.handle(change(CHANGE_AT, recorded=at(2024, 3, 1, 9)))
    b.handle(reading(at(2024, 3, 1, 11), 100))
    before = charges(b.handle(reading(at(2024, 3, 1, 11, 30), 102)))  # 2 kWh x 50
    spanning = charges(b.handle(reading(at(2024, 3, 1, 12, 30), 112)))  # 10 kWh: half and half
    after = charges(b.handle(reading(at(2024, 3, 1, 13), 114)))  # 2 kWh x 80
    assert [ln.tariff_id for ln in before[0].lines] == ["t1"] and before[0].amount_fen == 100
    lines = [(ln.tariff_id, ln.units, ln.amount_fen) for ln in spanning[0].lines]
    assert lines == [("t1", 5, 250), ("t2", 5, 400)] and spanning[0].amount_fen == 650
    assert [ln.tariff_id for ln in after[0].lines] == ["t2"] and after[0].amount_fen == 160
    assert b.account(P, "a1").balance_fen == -(100 + 650 + 160)


def test_a_change_is_applied_once_and_never_backdated() -> None:
    b = books()
    late = change(CHANGE_AT, recorded=CHANGE_AT + timedelta(hours=2))  # asked for noon, recorded at 14:00
    for _ in range(2):
        b.handle(late)
    assert b.account(P, "a1").tariff_changes == ((CHANGE_AT + timedelta(hours=2), "t2"),)
    b.handle(reading(at(2024, 3, 1, 13), 100))
    out = charges(b.handle(reading(at(2024, 3, 1, 14), 104)))  # all before the change took effect
    assert [ln.tariff_id for ln in out[0].lines] == ["t1"]
    b.handle(change(CHANGE_AT + timedelta(hours=2), tid="t1", n=2))  # corrected: the same instant
    assert b.account(P, "a1").tariff_at(CHANGE_AT + timedelta(hours=3)) == "t1"
    with pytest.raises(AccountNotFound):
        Books().handle(change(CHANGE_AT))


def test_readings_wait_for_a_tariff_the_account_moved_to_and_changes_for_their_account() -> None:
    state = BillingState()
    for f in (tariff(SINGLE), meter(), change(CHANGE_AT), account()):  # the change before the opening
        state.fold(f)
    out: list[Event] = []
    for f in (reading(at(2024, 3, 1, 11), 100), reading(at(2024, 3, 1, 13), 110)):
        out += state.fold(f)
    assert out == [] and state.books.account(P, "a1").tariff_changes  # waiting for t2
    out = state.fold(tariff(DEAR, tid="t2"))
    (charge,) = charges(out)
    assert [(ln.tariff_id, ln.amount_fen) for ln in charge.lines] == [("t1", 250), ("t2", 400)]
    assert [e.balance_fen for e in out if isinstance(e, BalanceChanged)] == [-650]


def test_a_change_waiting_for_its_account_is_applied_before_readings_that_waited_longer() -> None:
    """Readings fetched before a tariff change of their account, both waiting for the opening:
    the change still prices them (the account's queue goes first)."""
    state = BillingState()
    out: list[Event] = []
    for f in (tariff(SINGLE), meter(), reading(at(2024, 3, 1, 11), 100), reading(at(2024, 3, 1, 13), 110),
              change(CHANGE_AT), account(), tariff(DEAR, tid="t2")):  # fmt: skip
        out += state.fold(f)
    (charge,) = charges(out)
    assert [(ln.tariff_id, ln.amount_fen) for ln in charge.lines] == [("t1", 250), ("t2", 400)]
    assert not any(state.waiting.values())
