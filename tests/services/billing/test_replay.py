"""`meterflow billing replay`'s comparison of replayed and live balances."""

from __future__ import annotations

from services.billing.replay import ReplayResult


def test_an_account_that_never_moved_agrees_and_any_other_gap_is_a_mismatch() -> None:
    result = ReplayResult(
        replayed={("p", "idle"): 0, ("p", "a1"): 500, ("p", "lost"): 300},
        live={("p", "a1"): 500, ("p", "ghost"): 0},
        events=3,
        seconds=0.1,
    )
    assert result.mismatches == {("p", "ghost"): (None, 0), ("p", "lost"): (300, None)}
