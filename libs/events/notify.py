"""Facts of notifications to tenants and operators (MISSION.md D1–D3)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from libs.events.base import Event, event
from libs.events.topics import NOTIFICATIONS


class Channel(StrEnum):
    """Where a notification goes."""

    SMS = "sms"
    WECHAT = "wechat"


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
