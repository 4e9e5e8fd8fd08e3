from __future__ import annotations

import pytest

from libs.events import AlarmCleared, AlarmRaised, BalanceChanged, CommandRequested
from libs.events.billing import AlarmKind, BillingMode
from services.billing.domain.alarms import AlarmConfig, AlarmPolicy
from services.billing.domain.books import Books
from services.billing.domain.facts import Adjust, Clear, GrantAllowance, OpenAccount, Recharge, Refund
from services.billing.domain.ledger import (
    AccountAlreadyOpen,
    AccountNotFound,
    AllowanceAlreadyGranted,
    InvalidAdjustment,
    RefundExceedsBalance,
)
from tests.services.billing.helpers import SINGLE, P, account, at, meter, reading, tariff

T = at(2024, 3, 1)


def books(**kw) -> Books:
    b = Books(alarm_config=AlarmConfig(default=AlarmPolicy(level1_fen=2000, level2_fen=500)))
    for f in (tariff(SINGLE), meter(), account(**kw)):
        b.handle(f)
    return b


def run(b: Books, command):
    out = []
    for fact in b.decide(command):
        out += [fact, *b.handle(fact)]
    return out


def cmd(kind, key, **kw):
    return kind(project_id=P, account_id="a1", idempotency_key=key, operator_id="op", time=T, **kw)


def test_recharge_is_applied_once_however_often_it_is_sent():
    b = books()
    first = run(b, cmd(Recharge, "pay-1", amount_fen=5000))
    assert run(b, cmd(Recharge, "pay-1", amount_fen=5000)) == []
    for fact in first:  # the same fact redelivered
        assert b.handle(fact) == []
    assert b.account(P, "a1").balance_fen == 5000
    changed = [e for e in first if isinstance(e, BalanceChanged)]
    assert (
        len(changed) == 1 and changed[0].causation_id == first[0].event_id and changed[0].reason == "recharge"
    )


def test_refund_clear_allowance_adjustment_and_refusals():
    b = books()
    run(b, cmd(Recharge, "k1", amount_fen=3000))
    with pytest.raises(RefundExceedsBalance):
        b.decide(cmd(Refund, "k2", amount_fen=3001))
    run(b, cmd(Refund, "k2", amount_fen=1000))
    run(b, cmd(GrantAllowance, "k3", amount_fen=800, period="2024-spring"))
    with pytest.raises(AllowanceAlreadyGranted):
        b.decide(cmd(GrantAllowance, "k4", amount_fen=800, period="2024-spring"))
    run(b, cmd(Adjust, "k5", amount_fen=-300, reason="meter fault credit reversed"))
    assert b.account(P, "a1").balance_fen == 2500
    with pytest.raises(InvalidAdjustment):
        b.decide(cmd(Adjust, "k6", amount_fen=0, reason="x"))
    out = run(b, cmd(Clear, "k7"))
    assert b.account(P, "a1").balance_fen == 0
    assert next(e for e in out if isinstance(e, BalanceChanged)).delta_fen == -2500


def test_commands_need_an_open_account_and_open_is_idempotent():
    b = Books()
    with pytest.raises(AccountNotFound):
        b.decide(cmd(Recharge, "k", amount_fen=1))
    open_ = OpenAccount(
        project_id=P,
        account_id="a1",
        mode=BillingMode.PREPAID,
        meter_ids=("m1",),
        tariff_id="t1",
        holder="h",
        operator_id="op",
        time=T,
    )
    run(b, open_)
    assert b.decide(open_) == []
    with pytest.raises(AccountAlreadyOpen):
        b.decide(open_.model_copy(update={"meter_ids": ("m2",)}))


def test_alarm_levels_and_arrears_raised_and_cleared():
    b = books(overdraft=100)
    run(b, cmd(Recharge, "k1", amount_fen=3000))
    b.handle(reading(at(2024, 3, 1, 1), 0))
    lvl1 = b.handle(reading(at(2024, 3, 1, 2), 20))  # 20 kWh x 50 fen = 1000 -> 2000
    assert [(type(e).__name__, getattr(e, "kind", None)) for e in lvl1[2:]] == [
        ("AlarmRaised", AlarmKind.BALANCE_LEVEL1)
    ]
    again = b.handle(reading(at(2024, 3, 1, 3), 21))  # 1950: level 1 stays, not raised twice
    assert not [e for e in again if isinstance(e, AlarmRaised)]
    out = b.handle(reading(at(2024, 3, 1, 4), 62))  # -100: level 2 and arrears
    raised = {e.kind: e for e in out if isinstance(e, AlarmRaised)}
    assert set(raised) == {AlarmKind.BALANCE_LEVEL2, AlarmKind.ARREARS}
    assert raised[AlarmKind.ARREARS].details["meter_ids"] == "m1"  # control trips them, not billing
    assert not [e for e in out if isinstance(e, CommandRequested)]
    out = run(b, cmd(Recharge, "k2", amount_fen=1000))  # 900: arrears and level 2 end, level 1 stays
    cleared = {e.kind: e.alarm_id for e in out if isinstance(e, AlarmCleared)}
    assert cleared == {k: raised[k].alarm_id for k in (AlarmKind.BALANCE_LEVEL2, AlarmKind.ARREARS)}
    assert {e.kind: e.details for e in out if isinstance(e, AlarmCleared)}[AlarmKind.ARREARS] == {
        "balance_fen": "900",
        "cause": "recharge",
        "meter_ids": "m1",  # control's router routes the clear by them, as the raise
    }
    assert not [e for e in out if isinstance(e, CommandRequested)]
    assert b.account(P, "a1").alarms.keys() == {AlarmKind.BALANCE_LEVEL1}


def test_postpaid_accounts_owe_without_alarms():
    b = books(mode=BillingMode.POSTPAID)
    b.handle(reading(at(2024, 3, 1, 1), 0))
    out = b.handle(reading(at(2024, 3, 1, 2), 20))
    assert [type(e).__name__ for e in out] == ["ChargeApplied", "BalanceChanged"]
    assert b.account(P, "a1").balance_fen == -1000


def test_anomaly_becomes_an_alarm_and_is_not_charged():
    b = books()
    b.handle(reading(at(2024, 3, 1, 1), 100))
    out = b.handle(reading(at(2024, 3, 1, 2), 50))
    assert [(type(e).__name__, e.kind) for e in out] == [("AlarmRaised", AlarmKind.CONSUMPTION_ANOMALY)]
    assert b.account(P, "a1").balance_fen == 0


def test_purchase_count_mismatch_raised_once_per_count():
    b = books()
    r = reading(at(2024, 3, 1, 1), 0)
    b.handle(r.model_copy(update={"purchase_count": 7}))
    run(b, cmd(Recharge, "k1", amount_fen=100))
    assert b.handle(reading(at(2024, 3, 1, 2), 0).model_copy(update={"purchase_count": 8})) == []
    fraud = reading(at(2024, 3, 1, 3), 0).model_copy(update={"purchase_count": 9})
    out = b.handle(fraud)
    assert [e.kind for e in out] == [AlarmKind.PURCHASE_COUNT_MISMATCH]
    assert b.handle(reading(at(2024, 3, 1, 4), 0).model_copy(update={"purchase_count": 9})) == []
