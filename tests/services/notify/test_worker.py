"""The decider's fold: which facts become which requests, once, for whom, in which language; when
an alarm's end and a restore's failure are told; projects that share ids kept apart."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, time, timedelta

import pytest

from libs.events import (
    AccountOpened,
    AlarmCleared,
    AlarmRaised,
    BalanceChanged,
    CommandAbandoned,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    NotificationRequested,
    SubscriptionSet,
)
from libs.events.billing import AlarmKind, BillingMode
from libs.events.control import Action, Outcome
from libs.events.notify import Channel
from libs.stack.processor import SnapshotRejected
from services.notify.delivery import QuietHours
from services.notify.templates import Template, render
from services.notify.worker import Directory, NotifyState

NOW = datetime(2026, 11, 21, 4, 0, tzinfo=UTC)


def state() -> NotifyState:
    return NotifyState(max_age_s=3600, clock=lambda: NOW.timestamp())


def opened(
    account: str = "acc-1",
    phone: str | None = "+8613800138000",
    openid: str | None = "oStu1",
    project: str = "p",
    holder: str = "张三",
) -> AccountOpened:
    return AccountOpened(
        project_id=project, subject_id=account, account_id=account, mode=BillingMode.PREPAID,
        meter_ids=(f"m-{account}",), tariff_id="t", holder=holder, phone=phone, wechat_openid=openid,
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
    settings = s.settings_for("p", "acc-1")
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
    restored.restore(0, s.snapshot(0)())
    assert restored.settings_for("p", "acc-1") == s.settings_for("p", "acc-1")
    assert restored.fold(arrears()) == []  # its requests were emitted before the snapshot
    assert len(emitted) == 2
    restored.forget(0)
    assert restored.settings_for("p", "acc-1") is None


def balance_cleared(
    kind: AlarmKind, change: str, account: str = "acc-1", cause: str | None = None
) -> AlarmCleared:
    """Billing's clearing after the balance change ``change``; without ``cause``, as billing wrote
    it before it named what ended an alarm (no details)."""
    details = {} if cause is None else {"balance_fen": "2500", "cause": cause}
    return AlarmCleared(
        project_id="p", subject_id=account, alarm_id=f"al-{kind}-{change}", kind=kind,
        reason="balance 2500 fen", details=details, causation_id=change, time=NOW,
    )  # fmt: skip


def test_one_balance_change_ending_several_alarms_is_told_once() -> None:
    s = state()
    s.fold(opened(openid=None))
    # a recharge out of arrears and above both thresholds: billing clears all three, arrears first
    told = [r for kind in (AlarmKind.ARREARS, AlarmKind.BALANCE_LEVEL1, AlarmKind.BALANCE_LEVEL2)
            for r in s.fold(balance_cleared(kind, "bc-1"))]  # fmt: skip
    assert [(r.template, r.dedupe_ref) for r in told] == [("arrears_cleared", "al-arrears-bc-1")]
    text = render(Template.ARREARS_CLEARED, told[0].locale, told[0].params, "张三")
    assert text == "【张三】欠费已结清，欠费提醒解除。"
    # a later recharge lifts the balance above level 1 only
    [low] = s.fold(balance_cleared(AlarmKind.BALANCE_LEVEL1, "bc-2"))
    assert low.template == "low_balance_cleared"
    assert s.fold(balance_cleared(AlarmKind.BALANCE_LEVEL1, "bc-2")) == []  # redelivered


def test_clearings_wait_for_their_account_and_a_meter_back_in_contact_is_told() -> None:
    s = state()
    back = AlarmCleared(
        project_id="p", subject_id="m-acc-1", alarm_id="al-lost", kind=AlarmKind.LOST_CONTACT,
        reason="online", time=NOW,
    )  # fmt: skip
    assert s.fold(back) == [] and s.fold(balance_cleared(AlarmKind.ARREARS, "bc-1")) == []
    released = s.fold(opened(openid=None))
    assert sorted((r.template, r.params.get("meter", "")) for r in released) == [
        ("arrears_cleared", ""), ("meter_contact_restored", "m-acc-1"),
    ]  # fmt: skip


def close(command_id: str = "cmd-1", **params: str) -> CommandRequested:
    return CommandRequested(
        project_id="p", subject_id="m-acc-1", command_id=command_id, meter_id="m-acc-1", action=Action.CLOSE,
        requested_by="policy:arrears", reason="arrears cleared", params=params, time=NOW,
    )  # fmt: skip


def failure(command_id: str, reason: str = "no_reply: 3 tries") -> CommandFailed:
    # acquisition's: every failure final on its side, attempt 1 of the id it executed
    return CommandFailed(
        project_id="p", subject_id="m-acc-1", command_id=command_id, meter_id="m-acc-1", attempt=1,
        reason=reason, will_retry=False, time=NOW,
    )  # fmt: skip


def abandoned(
    command_id: str = "cmd-1",
    outcome: Outcome = Outcome.FAILED,
    action: Action = Action.CLOSE,
    at: datetime = NOW,
) -> CommandAbandoned:
    # control's, when it gives up on a command
    return CommandAbandoned(
        project_id="p", subject_id="m-acc-1", command_id=command_id, meter_id="m-acc-1", action=action,
        outcome=outcome, attempts=3, reason="no_reply: 3 tries", requested_by="policy:arrears", time=at,
    )  # fmt: skip


def test_a_restore_is_told_failed_once_control_abandons_it_and_never_by_a_failure() -> None:
    s = state()
    s.fold(opened(openid=None))
    s.fold(close())
    assert s.fold(failure("cmd-1", "rejected: meter refused")) == []  # control judges it, not notify
    s.fold(close("cmd-1-a2", retry_of="cmd-1", attempt="2"))
    assert s.fold(failure("cmd-1-a2", "transport: link down")) == []
    s.fold(close("cmd-1-a3", retry_of="cmd-1", attempt="3"))
    assert s.fold(failure("cmd-1-a3")) == []  # the last attempt: still control's call
    gave_up = abandoned()
    [told] = s.fold(gave_up)
    assert (told.template, told.dedupe_ref, told.params, told.causation_id) == (
        "power_restore_failed",
        "cmd-1",
        {"meter": "m-acc-1"},
        gave_up.event_id,
    )
    text = render(Template.POWER_RESTORE_FAILED, "en", told.params, "Zhang San")
    assert text == "[Zhang San] Power could not be restored to meter m-acc-1; our staff have been told."
    assert s.fold(gave_up) == []  # redelivered
    timeout = AlarmRaised(
        project_id="p", subject_id="m-acc-1", alarm_id="al-t", kind=AlarmKind.COMMAND_TIMEOUT, severity=2,
        message="", details={"command_id": "cmd-1", "action": "close"}, time=NOW,
    )  # fmt: skip
    assert s.fold(timeout) == []  # control's alarm is the staff's: the holder hears the abandonment
    assert s.directory.commands == {} and s.directory.attempts == {}


def test_a_timed_out_valve_open_is_told_and_trips_and_supersessions_are_not() -> None:
    s = state()
    s.fold(opened(openid=None))
    [told] = s.fold(abandoned("v-1", Outcome.TIMED_OUT, Action.VALVE_OPEN))
    assert (told.template, told.dedupe_ref) == ("valve_open_failed", "v-1")
    assert s.fold(abandoned("t-1", Outcome.FAILED, Action.TRIP)) == []  # the staff's business
    assert s.fold(abandoned("c-2", Outcome.SUPERSEDED)) == []  # a newer command on the relay follows
    assert s.fold(abandoned("c-3", at=NOW - timedelta(hours=2))) == []  # control's backfill of old ends
    assert s.stale == 1


def test_an_abandonment_before_its_account_waits_for_it() -> None:
    s = state()
    assert s.fold(abandoned()) == []
    assert [r.template for r in s.fold(opened(openid=None))] == ["power_restore_failed"]


def test_a_retry_that_succeeds_restores_power() -> None:
    s = state()
    s.fold(opened(openid=None))
    s.fold(close())
    s.fold(failure("cmd-1"))
    s.fold(close("cmd-1-a2", retry_of="cmd-1", attempt="2"))
    ack = CommandAcknowledged(
        project_id="p", subject_id="m-acc-1", command_id="cmd-1-a2", meter_id="m-acc-1", time=NOW
    )
    [restored] = s.fold(ack)
    assert restored.template == "power_restored"
    assert s.directory.commands == {} and s.directory.attempts == {}


def test_subscriptions_name_the_new_notices() -> None:
    s = state()
    s.fold(opened(openid=None))
    s.fold(SubscriptionSet(project_id="p", subject_id="acc-1", account_id="acc-1",
                           templates=("power_restore_failed", "no_such_notice")))  # fmt: skip
    settings = s.settings_for("p", "acc-1")
    assert settings is not None and settings.templates == {Template.POWER_RESTORE_FAILED}
    assert s.fold(balance_cleared(AlarmKind.ARREARS, "bc-1")) == []  # not subscribed
    s.fold(close())
    assert [r.template for r in s.fold(abandoned())] == ["power_restore_failed"]


def test_a_snapshot_of_an_older_version_is_rejected_and_the_log_rebuilds_the_directory() -> None:
    s = state()
    s.fold(opened())
    settings = s.settings_for("p", "acc-1")
    old = Directory()  # before the version: the directory pickled bare, keyed by the account id alone
    old.__dict__["accounts"] = {"acc-1": settings}
    restored = state()
    with pytest.raises(SnapshotRejected):
        restored.restore(0, pickle.dumps(old))
    assert restored.directory == Directory()
    restored.restore(0, None)  # what the processor does next, before it replays the log
    restored.fold(opened())
    assert restored.settings_for("p", "acc-1") == settings
    with pytest.raises(SnapshotRejected):
        restored.restore(0, pickle.dumps((1, s.directory)))
    restored.restore(0, s.snapshot(0)())
    assert restored.settings_for("p", "acc-1") == settings


def test_a_time_zone_that_is_no_zone_keeps_shanghai() -> None:
    s = state()
    s.fold(opened())
    for zone in ("Mars/Olympus_Mons", "America", "../etc"):
        s.fold(SubscriptionSet(project_id="p", subject_id="acc-1", account_id="acc-1", timezone=zone,
                               quiet_start_minute=60, quiet_end_minute=120))  # fmt: skip
        settings = s.settings_for("p", "acc-1")
        assert settings is not None and settings.quiet_hours == QuietHours(time(1), time(2), "Asia/Shanghai")


def test_projects_sharing_account_meter_and_command_ids_are_kept_apart() -> None:
    s = state()
    east, west = "+8613800000001", "+8613900000002"
    s.fold(opened(project="east", phone=east, openid=None))
    s.fold(opened(project="west", phone=west, openid=None, holder="李四"))  # also acc-1 with m-acc-1
    s.fold(SubscriptionSet(project_id="west", subject_id="acc-1", account_id="acc-1", locale="en",
                           templates=("power_cut",)))  # fmt: skip
    in_east, in_west = s.settings_for("east", "acc-1"), s.settings_for("west", "acc-1")
    assert in_east is not None and in_west is not None
    assert (in_east.name, in_east.phone, in_east.locale, in_east.templates) == ("张三", east, "zh", None)
    assert (in_west.name, in_west.phone, in_west.locale) == ("李四", west, "en")
    assert s.settings_for("p", "acc-1") is None

    alarm = arrears().model_copy(update={"project_id": "east"})
    assert [(r.project_id, r.recipient) for r in s.fold(alarm)] == [("east", east)]
    assert s.fold(alarm.model_copy(update={"project_id": "west"})) == []  # west did not subscribe

    # command cmd-1 on meter m-acc-1 in both projects: a restore in the east, a trip in the west
    for project, action in (("east", Action.CLOSE), ("west", Action.TRIP)):
        s.fold(close().model_copy(update={"project_id": project, "action": action}))
    ack = CommandAcknowledged(
        project_id="west", subject_id="m-acc-1", command_id="cmd-1", meter_id="m-acc-1", time=NOW
    )
    [cut] = s.fold(ack)
    assert (cut.project_id, cut.template, cut.recipient, cut.locale) == ("west", "power_cut", west, "en")
    assert s.directory.commands == {("east", "cmd-1"): Action.CLOSE}  # west's answered, east's not
    refused = abandoned().model_copy(update={"project_id": "east"})
    [failed] = s.fold(refused)
    assert (failed.project_id, failed.template, failed.recipient) == ("east", "power_restore_failed", east)
    assert s.directory.commands == {}

    # a balance change of one project does not hide the other's clearing with the same change id
    cleared = balance_cleared(AlarmKind.ARREARS, "bc-1")
    s.fold(SubscriptionSet(project_id="west", subject_id="acc-1", account_id="acc-1"))  # every notice
    told = [r for p in ("east", "west") for r in s.fold(cleared.model_copy(update={"project_id": p}))]
    assert [(r.project_id, r.recipient) for r in told] == [("east", east), ("west", west)]
    # an account of a project where it was not opened is unknown: its facts wait for it there
    assert s.fold(alarm.model_copy(update={"project_id": "north"})) == []
    assert list(s.directory.waiting) == [("north", "acc-1")]


def test_a_recharge_that_ends_balance_alarms_is_told_by_the_recharge_alone() -> None:
    s = state()
    s.fold(opened(openid=None))
    [arrived] = s.fold(recharge())
    assert arrived.template == "recharge_arrived" and arrived.params["balance"] == "62.34"
    for kind in (AlarmKind.ARREARS, AlarmKind.BALANCE_LEVEL1, AlarmKind.BALANCE_LEVEL2):
        assert s.fold(balance_cleared(kind, "bc-1", cause="recharge")) == []
    # an allowance (or an adjustment, new thresholds …) sends no message of its own: told as before
    told = [r for kind in (AlarmKind.ARREARS, AlarmKind.BALANCE_LEVEL1)
            for r in s.fold(balance_cleared(kind, "bc-2", cause="allowance"))]  # fmt: skip
    assert [r.template for r in told] == ["arrears_cleared"]
    [low] = s.fold(balance_cleared(AlarmKind.BALANCE_LEVEL1, "bc-3", cause="thresholds"))
    assert low.template == "low_balance_cleared"
    # a clearing from before billing named its cause (no details): told as before
    [old] = s.fold(balance_cleared(AlarmKind.ARREARS, "bc-4"))
    assert old.template == "arrears_cleared"


def test_an_account_that_does_not_hear_recharges_is_told_the_clearing() -> None:
    s = state()
    s.fold(opened(openid=None))
    s.fold(SubscriptionSet(project_id="p", subject_id="acc-1", account_id="acc-1",
                           templates=("arrears", "arrears_cleared")))  # fmt: skip
    assert s.fold(recharge()) == []
    [told] = s.fold(balance_cleared(AlarmKind.ARREARS, "bc-1", cause="recharge"))
    assert told.template == "arrears_cleared"
