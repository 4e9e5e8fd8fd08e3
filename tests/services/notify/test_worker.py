"""The decider's fold: which facts become which requests, once, for whom, in which language."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from libs.events import (
    AccountOpened,
    AlarmRaised,
    BalanceChanged,
    CommandAcknowledged,
    CommandRequested,
    NotificationRequested,
    SubscriptionSet,
)
from libs.events.billing import AlarmKind, BillingMode
from libs.events.control import Action
from libs.events.notify import Channel
from services.notify.delivery import QuietHours
from services.notify.templates import Template, render
from services.notify.worker import NotifyState

NOW = datetime(2026, 11, 21, 4, 0, tzinfo=UTC)


def state() -> NotifyState:
    return NotifyState(max_age_s=3600, clock=lambda: NOW.timestamp())


def opened(account: str = "acc-1", phone: str | None = "+8613800138000", openid: str | None = "oStu1"):
    return AccountOpened(
        project_id="p", subject_id=account, account_id=account, mode=BillingMode.PREPAID,
        meter_ids=(f"m-{account}",), tariff_id="t", holder="张三", phone=phone, wechat_openid=openid,
        opened_by="op", time=NOW - timedelta(days=30),
    )  # fmt: skip


def arrears(subject: str = "acc-1", alarm_id: str = "al-1", at: datetime = NOW) -> AlarmRaised:
    return AlarmRaised(
        project_id="p", subject_id=subject, alarm_id=alarm_id, kind=AlarmKind.ARREARS, severity=2,
        message="arrears", details={"balance_fen": "-1234"}, time=at,
    )  # fmt: skip


def recharge(account: str = "acc-1") -> BalanceChanged:
    return BalanceChanged(
        project_id="p", subject_id=account, account_id=account, delta_fen=5000, balance_fen=6234,
        reason="recharge", causation_id="rc-1", time=NOW,
    )  # fmt: skip


def by_channel(requests: list[NotificationRequested]) -> dict[Channel, NotificationRequested]:
    return {r.channel: r for r in requests}


def test_arrears_alarm_asks_for_sms_and_wechat_in_chinese_once() -> None:
    s = state()
    assert s.fold(opened()) == []
    alarm = arrears()
    requests = by_channel(s.fold(alarm))
    assert set(requests) == {Channel.SMS, Channel.WECHAT}
    sms = requests[Channel.SMS]
    assert (sms.recipient, sms.template, sms.locale, sms.account_id) == (
        "+8613800138000",
        "arrears",
        "zh",
        "acc-1",
    )
    assert sms.dedupe_ref == "al-1" and sms.causation_id == alarm.event_id
    text = render(Template.ARREARS, sms.locale, sms.params, "张三")
    assert text == "【张三】您已欠费 12.34 元，请立即充值以免停电。"
    assert s.fold(alarm) == []  # redelivered: the same ids, emitted once
    again = state()
    again.fold(opened())
    assert {r.notification_id for r in again.fold(alarm)} == {r.notification_id for r in requests.values()}


def test_a_fact_before_its_account_waits_and_a_meter_alarm_finds_its_account() -> None:
    s = state()
    lost = AlarmRaised(
        project_id="p", subject_id="m-acc-1", alarm_id="al-lost", kind=AlarmKind.LOST_CONTACT, severity=1,
        message="lost", details={"meter_id": "m-acc-1"}, time=NOW,
    )  # fmt: skip
    assert s.fold(lost) == [] and s.fold(arrears()) == []
    released = s.fold(opened())
    assert sorted((r.template, r.channel) for r in released) == [
        ("arrears", Channel.SMS), ("arrears", Channel.WECHAT),
        ("meter_lost_contact", Channel.SMS), ("meter_lost_contact", Channel.WECHAT),
    ]  # fmt: skip
    assert {r.params.get("meter") for r in released if r.template == "meter_lost_contact"} == {"m-acc-1"}


def test_relay_commands_notify_power_cut_and_restore() -> None:
    s = state()
    s.fold(opened(openid=None))
    trip = CommandRequested(
        project_id="p", subject_id="m-acc-1", command_id="cmd-1", meter_id="m-acc-1", action=Action.TRIP,
        requested_by="policy:arrears", reason="arrears",
    )  # fmt: skip
    assert s.fold(trip) == []
    ack = CommandAcknowledged(
        project_id="p", subject_id="m-acc-1", command_id="cmd-1", meter_id="m-acc-1", time=NOW
    )
    [cut] = s.fold(ack)
    assert (cut.template, cut.channel, cut.params) == ("power_cut", Channel.SMS, {"meter": "m-acc-1"})
    closed = CommandAcknowledged(
        project_id="p", subject_id="m-acc-1", command_id="cmd-2", meter_id="m-acc-1", confirmed_state="closed",
        time=NOW,
    )  # fmt: skip
    [restored] = s.fold(closed)
    assert restored.template == "power_restored"


def test_subscription_chooses_channels_templates_language_and_quiet_hours() -> None:
    s = state()
    s.fold(opened())
    sub = SubscriptionSet(
        project_id="p", subject_id="acc-1", account_id="acc-1", channels=(Channel.WECHAT,),
        templates=("recharge_arrived",), locale="en", quiet_start_minute=22 * 60, quiet_end_minute=7 * 60,
    )  # fmt: skip
    s.fold(sub)
    settings = s.settings_for("acc-1")
    assert settings is not None
    assert settings.quiet_hours == QuietHours(time(22, 0), time(7, 0), "Asia/Shanghai")
    assert s.fold(arrears()) == []  # not subscribed
    [wechat] = s.fold(recharge())
    assert (wechat.channel, wechat.locale, wechat.recipient) == (Channel.WECHAT, "en", "oStu1")
    assert render(Template.RECHARGE_ARRIVED, "en", wechat.params, "张三").endswith("Balance: 62.34 yuan.")
    charge = recharge().model_copy(update={"reason": "charge", "event_id": "e-charge"})
    assert s.fold(charge) == []


def test_stale_facts_notify_nobody_and_state_survives_a_snapshot() -> None:
    s = state()
    s.fold(opened())
    assert s.fold(arrears(alarm_id="old", at=NOW - timedelta(hours=2))) == [] and s.stale == 1
    emitted = s.fold(arrears())
    restored = state()
    restored.restore(0, s.snapshot(0))
    assert restored.settings_for("acc-1") == s.settings_for("acc-1")
    assert restored.fold(arrears()) == []  # its requests were emitted before the snapshot
    assert len(emitted) == 2
    restored.forget(0)
    assert restored.settings_for("acc-1") is None
