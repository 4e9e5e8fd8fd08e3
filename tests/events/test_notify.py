"""``send_step``, the one rule both send logs fold by: deferrals move pending notifications only,
never a final one, and never one whose later attempt was already seen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from libs.events.base import event_id_for
from libs.events.codec import Codec
from libs.events.notify import (
    Channel,
    DeferReason,
    NotificationDeferred,
    NotificationDelivered,
    NotificationFailed,
    NotificationSuppressed,
    SendOutcome,
    send_step,
)

T = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
IDS = {"project_id": "p", "subject_id": "+8613800138000", "notification_id": "n1", "channel": Channel.SMS}


def deferred(attempt: int = 0, reason: DeferReason = DeferReason.QUIET_HOURS) -> NotificationDeferred:
    return NotificationDeferred(**IDS, reason=reason, until=T + timedelta(hours=8), attempt=attempt, time=T)


def delivered(attempt: int) -> NotificationDelivered:
    return NotificationDelivered(**IDS, provider="aliyun", attempt=attempt)


def failed(attempt: int, will_retry: bool) -> NotificationFailed:
    return NotificationFailed(
        **IDS, provider="aliyun", reason="server:http_503", attempt=attempt, will_retry=will_retry
    )


SUPPRESSED = NotificationSuppressed(**IDS, reason="duplicate")

STEPS: list[tuple[str, int, SendOutcome, tuple[str, int] | None]] = [
    ("requested", 0, deferred(), ("deferred", 0)),
    ("requested", 0, deferred(reason=DeferReason.RATE_LIMITED), ("deferred", 0)),
    ("deferred", 0, deferred(), ("deferred", 0)),  # deferred again (rate limit, then quiet hours)
    ("deferred", 0, delivered(1), ("delivered", 1)),
    ("deferred", 0, failed(1, True), ("retrying", 1)),
    ("deferred", 0, SUPPRESSED, ("suppressed", 0)),
    ("retrying", 1, deferred(attempt=1), ("deferred", 1)),  # a retry held back by quiet hours
    ("deferred", 1, delivered(2), ("delivered", 2)),
    # read back after a later attempt's outcome: older, so it changes nothing
    ("retrying", 2, deferred(attempt=1), None),
    ("retrying", 1, deferred(attempt=0), None),
    # a final status is never left
    ("delivered", 1, deferred(), None),
    ("delivered", 1, deferred(attempt=5), None),
    ("failed", 3, deferred(attempt=3), None),
    ("suppressed", 0, deferred(), None),
]


@pytest.mark.parametrize(("status", "attempts", "outcome", "expected"), STEPS)
def test_send_step_with_deferrals(
    status: str, attempts: int, outcome: SendOutcome, expected: tuple[str, int] | None
) -> None:
    assert send_step(status, attempts, outcome) == expected


def test_a_deferral_reads_as_the_sender_logs_it_and_round_trips() -> None:
    until = datetime(2026, 11, 22, 7, 0, tzinfo=timezone(timedelta(hours=8)))
    fact = NotificationDeferred(
        **IDS, event_id=event_id_for("p", "notification_deferred", "n1", until.astimezone(UTC).isoformat()),
        reason=DeferReason.QUIET_HOURS, until=until, attempt=0,
    )  # fmt: skip
    assert fact.detail == "quiet_hours until 2026-11-22T07:00:00+08:00"
    assert fact.TYPE == "notify.v1.notification_deferred" and fact.TOPIC == "mf.notifications"
    codec = Codec()
    [back] = codec.decode(codec.encode(fact))
    assert back == fact and isinstance(back, NotificationDeferred) and back.reason is DeferReason.QUIET_HOURS
    with pytest.raises(ValueError, match="reason"):
        NotificationDeferred(**IDS, reason="bored", until=until, attempt=0)
