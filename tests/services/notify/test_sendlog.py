"""The send log: folded from facts, filtered by project, account, recipient and status, never
regressing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from libs.events.notify import (
    Channel,
    DeferReason,
    NotificationDeferred,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
    NotificationSuppressed,
)
from services.notify.sendlog import SendLog

T = datetime(2026, 11, 21, 4, 0, tzinfo=UTC)


def requested(
    nid: str, account: str = "acc-1", recipient: str = "+8613800138000", project: str = "p"
) -> NotificationRequested:
    return NotificationRequested(
        project_id=project, subject_id=recipient, notification_id=nid, channel=Channel.SMS, recipient=recipient,
        template="arrears", account_id=account, time=T,
    )  # fmt: skip


def failed(nid: str, attempt: int, will_retry: bool) -> NotificationFailed:
    return NotificationFailed(
        project_id="p", subject_id="x", notification_id=nid, channel=Channel.SMS, provider="aliyun",
        reason="server:http_503", attempt=attempt, will_retry=will_retry, time=T + timedelta(seconds=attempt),
    )  # fmt: skip


def deferred(nid: str, attempt: int, reason: DeferReason, until: datetime) -> NotificationDeferred:
    return NotificationDeferred(
        project_id="p", subject_id="x", notification_id=nid, channel=Channel.SMS, reason=reason, until=until,
        attempt=attempt, time=T + timedelta(seconds=attempt, milliseconds=500),
    )  # fmt: skip


def test_statuses_follow_the_facts_and_final_ones_stay() -> None:
    sends = SendLog()
    sends.apply(requested("n1"))
    sends.apply(failed("n1", 1, True))
    assert sends.query()[0]["status"] == "retrying"
    sends.apply(deferred("n1", 1, DeferReason.RATE_LIMITED, T + timedelta(minutes=10)))
    row = sends.query()[0]
    assert (row["status"], row["attempts"]) == ("deferred", 1)
    assert row["detail"] == "rate_limited until 2026-11-21T04:10:00+00:00"
    assert row["updated_at"] == T + timedelta(seconds=1, milliseconds=500)
    delivered = NotificationDelivered(
        project_id="p", subject_id="x", notification_id="n1", channel=Channel.SMS, provider="aliyun",
        provider_message_id="biz-1", attempt=2,
    )  # fmt: skip
    sends.apply(delivered)
    sends.apply(failed("n1", 1, True))  # a late read-back of an older attempt
    sends.apply(deferred("n1", 1, DeferReason.QUIET_HOURS, T))  # and of a deferral
    row = sends.query()[0]
    assert (row["status"], row["attempts"], row["provider_message_id"]) == ("delivered", 2, "biz-1")
    sends.apply(requested("n1"))  # a replayed request does not reset the row
    assert sends.query()[0]["status"] == "delivered"


def test_query_filters_and_orders_newest_first() -> None:
    sends = SendLog(capacity=3)
    for nid, account, recipient in [
        ("a", "acc-1", "+1"),
        ("b", "acc-2", "+2"),
        ("c", "acc-1", "+3"),
        ("d", "acc-1", "+3"),
    ]:
        sends.apply(requested(nid, account, recipient))
    sends.apply(failed("c", 5, False))
    sends.apply(NotificationSuppressed(project_id="p", subject_id="x", notification_id="d", channel=Channel.SMS,
                                       reason="duplicate"))  # fmt: skip
    assert [r["notification_id"] for r in sends.query()] == ["d", "c", "b"]  # "a" fell out (capacity 3)
    assert [r["notification_id"] for r in sends.query(account_id="acc-1")] == ["d", "c"]
    assert [r["notification_id"] for r in sends.query(recipient="+3", status="failed")] == ["c"]
    assert [r["notification_id"] for r in sends.query(status="suppressed")] == ["d"]
    assert sends.query(limit=1)[0]["notification_id"] == "d"
    assert sends.counts()["failed"] == 1 and sends.counts()["requested"] == 1


def test_an_account_id_is_told_apart_by_its_project() -> None:
    sends = SendLog()
    sends.apply(requested("n1", project="east"))
    sends.apply(requested("n2", project="west"))
    assert [r["notification_id"] for r in sends.query(account_id="acc-1", project_id="east")] == ["n1"]
    assert [r["project_id"] for r in sends.query(account_id="acc-1")] == ["west", "east"]


def test_a_deferral_shows_until_when_and_an_older_one_read_back_late_changes_nothing() -> None:
    sends = SendLog()
    sends.apply(requested("n1"))
    shanghai = timezone(timedelta(hours=8))
    sends.apply(deferred("n1", 0, DeferReason.QUIET_HOURS, datetime(2026, 11, 22, 7, 0, tzinfo=shanghai)))
    row = sends.query(status="deferred")[0]
    assert (row["status"], row["attempts"], row["detail"]) == (
        "deferred", 0, "quiet_hours until 2026-11-22T07:00:00+08:00"
    )  # fmt: skip
    sends.apply(failed("n1", 1, True))
    sends.apply(deferred("n1", 0, DeferReason.QUIET_HOURS, T))  # decided before attempt 1
    row = sends.query()[0]
    assert (row["status"], row["attempts"], row["detail"]) == ("retrying", 1, "server:http_503")
    assert sends.counts()["retrying"] == 1 and sends.counts()["deferred"] == 0
