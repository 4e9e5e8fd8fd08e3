"""Notify's snapshot: a copy taken when asked for, written in pieces, read back the same."""

from __future__ import annotations

import copy
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from libs.events import AccountOpened, AlarmRaised
from libs.events.billing import AlarmKind, BillingMode
from libs.stack.snapshot import MIN_CHUNKED
from services.notify.worker import NotifyState

NOW = datetime(2026, 11, 21, 4, 0, tzinfo=UTC)


def opened(account: str) -> AccountOpened:
    return AccountOpened(
        project_id="p", subject_id=account, account_id=account, mode=BillingMode.PREPAID,
        meter_ids=(f"m-{account}",), tariff_id="t", holder="张三", phone="+8613800138000",
        wechat_openid=f"o-{account}", opened_by="op", time=NOW - timedelta(days=30),
    )  # fmt: skip


def arrears(account: str, alarm_id: str) -> AlarmRaised:
    return AlarmRaised(
        project_id="p", subject_id=account, alarm_id=alarm_id, kind=AlarmKind.ARREARS, severity=2,
        message="arrears", details={"balance_fen": "-1234"}, time=NOW,
    )  # fmt: skip


def test_a_snapshot_is_the_directory_when_taken_and_comes_back_in_order() -> None:
    s = NotifyState(max_age_s=3600, clock=lambda: NOW.timestamp())
    accounts = [f"acc-{i}" for i in range(2 * MIN_CHUNKED)]
    for account in accounts:
        s.fold(opened(account))
        assert len(s.fold(arrears(account, f"al-{account}"))) == 2  # SMS and WeChat
    s.fold(arrears("acc-unknown", "al-x"))  # waits for its account
    before = copy.deepcopy(s.directory)
    later = s.snapshot(0)
    assert len(later.containers) >= 3  # accounts, meters and emitted ids are written in pieces
    for account in accounts[:10]:  # the fold goes on while the snapshot waits for the writer
        s.fold(arrears(account, f"al2-{account}"))
    s.fold(opened("acc-unknown"))

    restored = NotifyState(max_age_s=3600, clock=lambda: NOW.timestamp())
    restored.restore(0, later())
    assert restored.directory == before != s.directory
    assert type(restored.directory.emitted) is OrderedDict
    assert list(restored.directory.emitted) == list(before.emitted)  # the oldest is dropped first
    assert restored.fold(arrears(accounts[0], f"al-{accounts[0]}")) == []  # already told
