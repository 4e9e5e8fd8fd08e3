"""Low-balance thresholds per account and per project (B4), set by facts at run time."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from libs.events import AlarmCleared, AlarmRaised
from libs.events.billing import AlarmKind, AlarmThresholdsSet
from services.billing.worker import BillingState
from tests.services.billing.helpers import SINGLE, P, account, at, meter, reading, recharge, tariff


def thresholds(level1: int, level2: int, account_id: str | None = "a1", n: int = 1) -> AlarmThresholdsSet:
    return AlarmThresholdsSet(
        event_id=f"th-{account_id}-{n}", project_id=P, subject_id=account_id or P, account_id=account_id,
        level1_fen=level1, level2_fen=level2, operator_id="op", time=at(2024, 3, 1),
    )  # fmt: skip


def state_with_balance(fen: int) -> BillingState:
    state = BillingState()  # configured default: level 1 at 2000, level 2 at 500
    for fact in (tariff(SINGLE), meter(), account(), recharge(fen, "k1")):
        state.fold(fact)
    return state


def kinds(out: list) -> list[tuple[str, AlarmKind]]:
    return [(type(e).__name__, e.kind) for e in out if isinstance(e, AlarmRaised | AlarmCleared)]


def test_account_thresholds_apply_at_once_and_to_later_charges() -> None:
    state = state_with_balance(3000)
    assert kinds(state.fold(thresholds(5000, 1000))) == [("AlarmRaised", AlarmKind.BALANCE_LEVEL1)]
    state.fold(reading(at(2024, 3, 1, 1), 0))
    out = state.fold(reading(at(2024, 3, 1, 2), 41))  # 41 kWh x 50 fen: 3000 -> 950
    assert kinds(out) == [("AlarmRaised", AlarmKind.BALANCE_LEVEL2)]  # by the account's 1000
    cleared = state.fold(thresholds(500, 100, n=2))
    assert {e.details["cause"] for e in cleared if isinstance(e, AlarmCleared)} == {"thresholds"}
    assert kinds(cleared) == [
        ("AlarmCleared", AlarmKind.BALANCE_LEVEL1),
        ("AlarmCleared", AlarmKind.BALANCE_LEVEL2),
    ]
    assert state.fold(thresholds(500, 100, n=2)) == []  # a redelivery changes nothing


def test_project_thresholds_apply_where_an_account_has_none_of_its_own() -> None:
    state = state_with_balance(3000)
    assert kinds(state.fold(thresholds(4000, 100, account_id=None))) == [
        ("AlarmRaised", AlarmKind.BALANCE_LEVEL1)
    ]
    assert (
        state.fold(thresholds(2500, 100))
        and state.books.policy(state.books.account(P, "a1")).level1_fen == 2500
    )


def test_thresholds_for_an_account_not_yet_open_wait_for_it() -> None:
    state = BillingState()
    assert state.fold(thresholds(5000, 1000)) == []
    for fact in (tariff(SINGLE), meter(), account()):
        state.fold(fact)
    assert state.books.policy(state.books.account(P, "a1")).level1_fen == 5000
    assert not any(state.waiting.values())


def test_level_two_above_level_one_is_refused() -> None:
    with pytest.raises(ValidationError, match="must not exceed"):
        thresholds(100, 200)
