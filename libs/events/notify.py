"""Facts of notifications to tenants and operators (MISSION.md D1–D3)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from libs.events.base import Event, event
from libs.events.topics import NOTIFICATIONS


class Channel(StrEnum):
    """Where a notification goes."""

    SMS = "sms"
    WECHAT = "wechat"


class Template(StrEnum):
    """What a notification says: the names ``NotificationRequested.template`` and
    ``SubscriptionSet.templates`` take. The texts, and the facts each is rendered from, are the
    notify service's (services/notify/templates.py); the API validates subscriptions against this."""

    LOW_BALANCE_1 = "low_balance_1"
    LOW_BALANCE_2 = "low_balance_2"
    ARREARS = "arrears"
    RECHARGE_ARRIVED = "recharge_arrived"
    POWER_CUT = "power_cut"
    POWER_RESTORED = "power_restored"
    VALVE_CLOSED = "valve_closed"
    METER_LOST_CONTACT = "meter_lost_contact"
    ARREARS_CLEARED = "arrears_cleared"
    LOW_BALANCE_CLEARED = "low_balance_cleared"
    METER_CONTACT_RESTORED = "meter_contact_restored"
    POWER_RESTORE_FAILED = "power_restore_failed"
    VALVE_OPEN_FAILED = "valve_open_failed"


class Locale(StrEnum):
    """The languages every template is written in."""

    ZH = "zh"
    EN = "en"


@event("notify.v1.notification_requested", NOTIFICATIONS.name)
class NotificationRequested(Event):
    """A message should reach ``recipient`` (subject: recipient)."""

    notification_id: str
    channel: Channel
    recipient: str
    template: str
    params: dict[str, str] = Field(default_factory=dict)
    locale: str = "zh"
    account_id: str | None = None
    dedupe_ref: str = ""  # the occurrence (alarm id, recharge id, command id) behind the request


@event("notify.v1.notification_delivered", NOTIFICATIONS.name)
class NotificationDelivered(Event):
    """The provider accepted the message."""

    notification_id: str
    channel: Channel
    provider: str
    provider_message_id: str = ""
    attempt: int = Field(ge=1)


@event("notify.v1.notification_failed", NOTIFICATIONS.name)
class NotificationFailed(Event):
    """An attempt failed; after the last one the message goes to the dead-letter topic."""

    notification_id: str
    channel: Channel
    provider: str
    reason: str
    attempt: int = Field(ge=1)
    will_retry: bool


class DeferReason(StrEnum):
    """Why the sender held a request back (``DeliveryPolicy.admit`` in services/notify)."""

    QUIET_HOURS = "quiet_hours"  # the account's quiet hours; it goes out when they end
    RATE_LIMITED = "rate_limited"  # the recipient had its burst of messages; one more per interval


@event("notify.v1.notification_deferred", NOTIFICATIONS.name)
class NotificationDeferred(Event):
    """The sender held a request back until ``until`` (subject: recipient, as the request's).

    ``attempt`` is the attempts made before the deferral (0: none yet), so a deferral read back
    after a later attempt's outcome is recognised as older (see :func:`send_step`). The event id
    is derived from project, notification id and ``until``: the same deferral decided again after
    a restart is the same fact.
    """

    notification_id: str
    channel: Channel
    reason: DeferReason
    until: AwareDatetime
    attempt: int = Field(ge=0)

    @property
    def detail(self) -> str:
        """The deferral as the send logs show it: ``quiet_hours until 2026-11-22T07:00:00+08:00``."""
        return f"{self.reason} until {self.until.isoformat()}"


@event("notify.v1.notification_suppressed", NOTIFICATIONS.name)
class NotificationSuppressed(Event):
    """A request was not sent because the same notice already reached the recipient (dedupe)."""

    notification_id: str
    channel: Channel
    reason: str


@event("notify.v1.subscription_set", NOTIFICATIONS.name)
class SubscriptionSet(Event):
    """An account's notification preferences (subject: account id); the latest one wins.

    ``templates`` None means every template, else names of :class:`Template` (kept as text: a
    name this consumer does not know is ignored, not an error); quiet hours are minutes of the
    local day in ``timezone`` (the window may wrap midnight), both None for none.
    """

    account_id: str
    channels: tuple[Channel, ...] = (Channel.SMS, Channel.WECHAT)
    templates: tuple[str, ...] | None = None
    locale: str = "zh"
    quiet_start_minute: int | None = Field(default=None, ge=0, le=1439)
    quiet_end_minute: int | None = Field(default=None, ge=0, le=1439)
    timezone: str = "Asia/Shanghai"
    set_by: str = ""


SEND_FINAL = frozenset({"delivered", "failed", "suppressed"})
SendOutcome = NotificationDelivered | NotificationFailed | NotificationDeferred | NotificationSuppressed


def send_step(status: str, attempts: int, outcome: SendOutcome) -> tuple[str, int] | None:
    """The status and attempt count a notification moves to on ``outcome``, or None when the
    outcome changes nothing. One rule for every send log folded from these facts (notify's own,
    the API's):

    - a final status (delivered, failed, suppressed) is never left;
    - a failed attempt older than the attempts already seen (read back late) is ignored;
    - a deferral moves a pending notification (requested, deferred, retrying) to ``deferred``
      with its attempt count unchanged, unless it is older than the attempts already seen: one
      decided before attempt n carries ``attempt`` < n and, read back after that attempt's
      outcome, changes nothing (it would otherwise hide a later ``retrying``).
    """
    if status in SEND_FINAL:
        return None
    if isinstance(outcome, NotificationDelivered):
        return "delivered", max(attempts, outcome.attempt)
    if isinstance(outcome, NotificationFailed):
        if outcome.attempt < attempts:
            return None
        return ("retrying" if outcome.will_retry else "failed"), outcome.attempt
    if isinstance(outcome, NotificationDeferred):
        return None if outcome.attempt < attempts else ("deferred", attempts)
    return "suppressed", attempts
