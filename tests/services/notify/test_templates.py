from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.events.billing import AlarmCleared, AlarmKind, AlarmRaised, BalanceChanged, RechargeAccepted
from libs.events.control import Action, CommandAbandoned, CommandAcknowledged, Outcome
from libs.events.notify import Locale
from services.notify.templates import TEXTS, Template, notice_for, render, yuan


def alarm(kind: AlarmKind, **details: str) -> AlarmRaised:
    return AlarmRaised(
        project_id="p1",
        subject_id="acc-1",
        alarm_id="al-1",
        kind=kind,
        severity=2,
        message="",
        details=details,
    )


@pytest.mark.parametrize(
    ("fen", "text"),
    [(0, "0.00"), (5, "0.05"), (1230, "12.30"), (-1234, "-12.34"), (10**12 + 1, "10000000000.01")],
)
def test_yuan(fen, text):
    assert yuan(fen) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_yuan_round_trips_exactly(fen):
    whole, _, cents = yuan(fen).lstrip("-").partition(".")
    assert (int(whole) * 100 + int(cents)) * (-1 if fen < 0 else 1) == fen and len(cents) == 2


def test_every_template_has_zh_and_en():
    assert set(TEXTS) == set(Template)
    assert {"zh", "en"} == set(Locale)
    assert all(set(texts) == set(Locale) for texts in TEXTS.values())


def test_low_balance_level1():
    notice = notice_for(alarm(AlarmKind.BALANCE_LEVEL1, balance_fen="1230"))
    assert notice is not None and notice.dedupe_ref == "al-1"
    assert (
        render(notice.template, "zh", notice.params, "3号楼201")
        == "【3号楼201】电费余额不足，当前余额 12.30 元，请及时充值。"
    )
    assert (
        render(notice.template, "en", notice.params, "B3-201")
        == "[B3-201] Low balance: 12.30 yuan left. Please recharge soon."
    )


def test_low_balance_level2_and_arrears():
    level2 = notice_for(alarm(AlarmKind.BALANCE_LEVEL2, balance_fen="305"))
    assert level2 is not None
    assert (
        render(level2.template, "zh", level2.params, "A")
        == "【A】电费余额严重不足，当前余额 3.05 元，即将停电，请尽快充值。"
    )
    arrears = notice_for(alarm(AlarmKind.ARREARS, balance_fen="-1234"))
    assert arrears is not None
    assert (
        render(arrears.template, "zh", arrears.params, "A") == "【A】您已欠费 12.34 元，请立即充值以免停电。"
    )
    assert render(arrears.template, "en", arrears.params, "A") == (
        "[A] Your account is 12.34 yuan in arrears. Please recharge to avoid a power cut."
    )


def test_lost_contact():
    notice = notice_for(alarm(AlarmKind.LOST_CONTACT, meter_id="m-0042"))
    assert notice is not None
    assert render(notice.template, "zh", notice.params, "A") == "【A】表具 m-0042 已失联，工作人员正在处理。"


def test_alarms_without_a_template_give_none():
    assert notice_for(alarm(AlarmKind.OVERLOAD)) is None


def test_recharge_from_balance_changed_and_from_recharge_share_a_reference():
    recharge = RechargeAccepted(
        project_id="p1",
        subject_id="acc-1",
        account_id="acc-1",
        amount_fen=5000,
        idempotency_key="k1",
        operator_id="op",
        channel="wechat",
    )
    assert notice_for(recharge) is None  # balance unknown: the BalanceChanged will say it
    from_recharge = notice_for(recharge, balance_fen=6230)
    changed = BalanceChanged(
        project_id="p1",
        subject_id="acc-1",
        account_id="acc-1",
        delta_fen=5000,
        balance_fen=6230,
        reason="recharge",
        causation_id=recharge.event_id,
    )
    from_change = notice_for(changed)
    assert from_recharge == from_change
    assert from_change is not None
    assert (
        render(from_change.template, "zh", from_change.params, "A")
        == "【A】充值 50.00 元已到账，当前余额 62.30 元。"
    )
    assert (
        render(from_change.template, "en", from_change.params, "A")
        == "[A] Recharge of 50.00 yuan received. Balance: 62.30 yuan."
    )
    charge = changed.model_copy(update={"reason": "charge", "delta_fen": -10})
    assert notice_for(charge) is None


@pytest.mark.parametrize(
    ("action", "state", "zh"),
    [
        (Action.TRIP, None, "【A】电表 m-1 已停电，充值到账后将自动恢复供电。"),
        (None, "tripped", "【A】电表 m-1 已停电，充值到账后将自动恢复供电。"),
        (Action.CLOSE, None, "【A】电表 m-1 已恢复供电。"),
        (Action.VALVE_CLOSE, None, "【A】表具 m-1 的阀门已关闭。"),
    ],
)
def test_command_acknowledged(action, state, zh):
    ack = CommandAcknowledged(
        project_id="p1", subject_id="m-1", command_id="c-1", meter_id="m-1", confirmed_state=state
    )
    notice = notice_for(ack, action=action)
    assert notice is not None and notice.dedupe_ref == "c-1"
    assert render(notice.template, "zh", notice.params, "A") == zh


def test_unknown_locale_falls_back_to_zh():
    assert render(Template.POWER_RESTORED, "fr", {"meter": "m-1"}, "A") == "【A】电表 m-1 已恢复供电。"


def cleared(kind: AlarmKind, subject: str = "acc-1") -> AlarmCleared:
    return AlarmCleared(
        project_id="p1", subject_id=subject, alarm_id="al-1", kind=kind, reason="balance 2500 fen",
        causation_id="bc-1",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "subject", "zh", "en"),
    [
        (AlarmKind.ARREARS, "acc-1", "【A】欠费已结清，欠费提醒解除。",
         "[A] Your arrears are settled; the arrears alert is cleared."),
        (AlarmKind.BALANCE_LEVEL1, "acc-1", "【A】电费余额已恢复正常，余额不足提醒解除。",
         "[A] Your balance is back to normal; the low-balance alert is cleared."),
        (AlarmKind.LOST_CONTACT, "m-0042", "【A】表具 m-0042 已恢复通讯。", "[A] Meter m-0042 is back in contact."),
    ],
)  # fmt: skip
def test_alarm_cleared(kind, subject, zh, en):
    notice = notice_for(cleared(kind, subject))
    assert notice is not None and notice.dedupe_ref == "al-1" and notice.subject_id == subject
    assert render(notice.template, "zh", notice.params, "A") == zh
    assert render(notice.template, "en", notice.params, "A") == en


@pytest.mark.parametrize(
    "kind",
    [AlarmKind.BALANCE_LEVEL2, AlarmKind.OVERLOAD, AlarmKind.COMMAND_TIMEOUT, AlarmKind.MALIGNANT_LOAD],
)
def test_clearings_the_holder_need_not_hear_give_none(kind):
    # level 2 ending leaves level 1 active (still low), or level 1's own clearing says it
    assert notice_for(cleared(kind)) is None


def abandoned(action: Action, outcome: Outcome = Outcome.FAILED) -> CommandAbandoned:
    return CommandAbandoned(
        project_id="p1", subject_id="m-1", command_id="c-1", meter_id="m-1", action=action, outcome=outcome,
        attempts=3, reason="no_reply: timeout", requested_by="policy:prepaid",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("action", "zh", "en"),
    [
        (Action.CLOSE, "【A】电表 m-1 未能恢复供电，已通知工作人员处理。",
         "[A] Power could not be restored to meter m-1; our staff have been told."),
        (Action.VALVE_OPEN, "【A】表具 m-1 的阀门未能打开，已通知工作人员处理。",
         "[A] The valve of meter m-1 could not be opened; our staff have been told."),
    ],
)  # fmt: skip
def test_a_restore_that_failed_or_timed_out(action, zh, en):
    notice = notice_for(abandoned(action))
    assert notice is not None and notice.dedupe_ref == "c-1"
    assert render(notice.template, "zh", notice.params, "A") == zh
    assert render(notice.template, "en", notice.params, "A") == en
    assert notice_for(abandoned(action, Outcome.TIMED_OUT)) == notice  # one command, one reference
    assert notice_for(abandoned(action, Outcome.SUPERSEDED)) is None  # a newer command follows


@pytest.mark.parametrize("action", [Action.TRIP, Action.VALVE_CLOSE, Action.READ, Action.SET_PARAMETER])
def test_other_failures_are_the_staffs_business(action):
    assert notice_for(abandoned(action)) is None
    timeout = AlarmRaised(
        project_id="p1", subject_id="m-1", alarm_id="al-t", kind=AlarmKind.COMMAND_TIMEOUT, severity=2,
        message="", details={"command_id": "c-1", "action": "close"},
    )  # fmt: skip
    assert notice_for(timeout) is None  # control's alarm; the holder hears the abandonment
