"""Request and response bodies of the API (money in integer fen)."""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import available_timezones

from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from libs.events.billing import BillingMode
from libs.events.control import Action
from libs.events.notify import Channel, DeferReason, Locale, Template
from services.api.records import MeterState
from services.api.sendlog import SendStatus

Id = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
WALL_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class MeOut(BaseModel):
    kind: Literal["user", "api_key"]
    id: str
    name: str
    roles: list[str]
    permissions: list[str]
    project_ids: list[str]
    all_projects: bool


class ProjectIn(In):
    project_id: str = Id
    name: str = Field(min_length=1, max_length=200)


class ProjectOut(BaseModel):
    project_id: str
    name: str
    meters: int
    accounts: int


class ConcentratorOut(BaseModel):
    project_id: str
    concentrator_id: str
    status: str
    since: datetime | None
    meters: int


class MeterOut(BaseModel):
    project_id: str
    meter_id: str
    address: str
    protocol: str
    model: str
    medium: str
    concentrator_id: str
    bus_id: str
    account_id: str | None
    states: list[MeterState]
    comm: str
    relay: str
    last_seen: datetime | None
    attributes: dict[str, str]


class AccountIn(In):
    project_id: str = Id
    account_id: str = Id
    mode: BillingMode = BillingMode.PREPAID
    meter_ids: list[str] = Field(min_length=1, max_length=64)
    tariff_id: str = Id
    holder: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(default=None, max_length=32)
    overdraft_fen: int = Field(default=0, ge=0, le=10**12)


class TariffChangeIn(In):
    """Move an account to another tariff from ``effective_from`` on (never backdated)."""

    tariff_id: str = Id
    effective_from: AwareDatetime | None = Field(
        default=None,
        description="when the new tariff applies: now if left out; never in the past (a few "
        "minutes' clock skew is taken as now)",
    )
    reason: str = Field(default="", max_length=500)


class TariffChangeOut(BaseModel):
    """A change of an account's tariff, in force from ``effective_at``: ``effective_from``, or when
    it was recorded if that is later."""

    id: str
    project_id: str
    account_id: str
    tariff_id: str
    effective_from: datetime
    effective_at: datetime
    recorded_at: datetime
    operator_id: str
    reason: str
    superseded: bool = Field(description="a later change took effect at the same instant and replaced it")


class AccountOut(BaseModel):
    project_id: str
    account_id: str
    mode: str
    meter_ids: list[str]
    tariff_id: str = Field(description="the tariff in force now")
    opening_tariff_id: str = Field(description="the tariff the account was opened with")
    next_tariff_change: TariffChangeOut | None = Field(description="the nearest change still to take effect")
    holder: str
    phone: str | None
    overdraft_fen: int
    opened_at: datetime
    opened_by: str
    balance_fen: int


class BalanceOut(BaseModel):
    project_id: str
    account_id: str
    balance_fen: int
    updated_at: datetime | None


class QuietHoursIn(In):
    """A local wall-clock window, ``HH:MM`` to ``HH:MM`` (it may wrap midnight): notices wait
    until it ends, but for urgent ones (a power cut)."""

    start: str = Field(pattern=WALL_TIME, examples=["22:00"])
    end: str = Field(pattern=WALL_TIME, examples=["07:00"])

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHoursIn:
        if self.start == self.end:
            raise ValueError("start equals end, an empty window: send null for no quiet hours")
        return self


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


class NotificationSettingsIn(In):
    """What an account holder is told (``templates``), where (``channels``: to the account's phone
    and WeChat openid), in which language and when; every field left out takes its default."""

    channels: list[Channel] = Field(
        default_factory=lambda: [Channel.SMS, Channel.WECHAT], max_length=len(Channel),
        description="where messages go; [] for none",
    )  # fmt: skip
    templates: list[Template] | None = Field(
        default=None, max_length=len(Template), description="the notices wanted; null for every one"
    )
    locale: Locale = Locale.ZH
    quiet_hours: QuietHoursIn | None = None
    timezone: str = Field(
        default="Asia/Shanghai", min_length=1, max_length=64, description="IANA time zone of the quiet hours"
    )

    @field_validator("channels", "templates")
    @classmethod
    def _once_each(cls, items: list[Any] | None) -> list[Any] | None:
        return None if items is None else list(dict.fromkeys(items))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in _zones():
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)")
        return value


class QuietHoursOut(BaseModel):
    start: str
    end: str


class NotificationSettingsOut(BaseModel):
    """An account's notification settings; ``updated_at`` null: never set, these are the defaults."""

    project_id: str
    account_id: str
    channels: list[Channel]
    templates: list[str] | None = Field(description="notice names; null for every notice")
    locale: str
    quiet_hours: QuietHoursOut | None
    timezone: str
    set_by: str | None
    updated_at: datetime | None


class RechargeIn(In):
    amount_fen: int = Field(gt=0, le=10**10)
    channel: Literal["cash", "wechat", "alipay", "bank", "campus_card", "kiosk"] = "cash"
    payment_order_id: str | None = Field(default=None, max_length=128)


class RefundIn(In):
    amount_fen: int = Field(gt=0, le=10**10)
    reason: str = Field(default="", max_length=500)


class ClearIn(In):
    reason: str = Field(default="", max_length=500)


class AllowanceIn(In):
    amount_fen: int = Field(gt=0, le=10**10)
    period: str = Field(min_length=1, max_length=32)


class MoneyOut(BaseModel):
    """A money movement; ``status`` is ``applied`` once billing booked it (``balance_fen`` after)."""

    id: str
    project_id: str
    account_id: str
    kind: str
    amount_fen: int
    idempotency_key: str
    operator_id: str
    time: datetime
    details: dict[str, str]
    status: Literal["accepted", "applied"]
    balance_fen: int | None


class TariffIn(In):
    project_id: str = Id
    tariff_id: str = Id
    name: str = Field(min_length=1, max_length=200)
    effective_from: AwareDatetime
    definition: dict[str, Any]


class TariffVersionOut(BaseModel):
    version: int
    name: str
    effective_from: datetime
    definition: dict[str, Any]
    published_at: datetime


class TariffOut(BaseModel):
    project_id: str
    tariff_id: str
    versions: list[TariffVersionOut]


class CommandIn(In):
    project_id: str = Id
    meter_id: str = Id
    action: Action
    reason: str = Field(default="", max_length=500)
    params: dict[str, str] = Field(default_factory=dict, max_length=32)


class BatchCommandIn(In):
    project_id: str = Id
    meter_ids: list[str] = Field(min_length=1, max_length=1000)
    action: Action
    reason: str = Field(default="", max_length=500)
    params: dict[str, str] = Field(default_factory=dict, max_length=32)


class CommandOut(BaseModel):
    project_id: str
    command_id: str
    meter_id: str
    action: str
    requested_by: str
    reason: str
    params: dict[str, str]
    requested_at: datetime
    status: str = Field(
        description="requested, sent, acknowledged, failed, timed_out or superseded: what happened last"
    )
    attempts: int = Field(description="attempts sent (control's retries included)")
    detail: str = Field(description="the last failure's reason, or the state the meter confirmed")
    updated_at: datetime | None
    final: bool = Field(
        description="acknowledged, or abandoned by control: nothing more is tried. A failed or timed-out "
        "attempt with final false may still be retried"
    )
    ended_at: datetime | None = Field(description="when the command was acknowledged or abandoned")


class NotificationOut(BaseModel):
    """One row of the send log (``GET /notifications``)."""

    project_id: str
    notification_id: str
    account_id: str | None
    channel: Channel
    recipient: str = Field(description="phone number (sms) or openid (wechat), as the request named it")
    template: str
    status: SendStatus = Field(
        description="requested (waiting to be sent), deferred (held back by quiet hours or a rate limit until "
        "deferred_until), retrying, or final: delivered, failed (given up; on mf.dead-letter) or suppressed "
        "(a duplicate)"
    )
    final: bool = Field(description="delivered, failed or suppressed: nothing more is tried")
    attempts: int = Field(description="attempts made so far")
    provider: str | None = Field(description="the provider of the latest attempt")
    provider_message_id: str | None = Field(description="the provider's id of the delivered message")
    last_error: str | None = Field(description="the latest failed attempt's reason (kept after a delivery)")
    suppressed_reason: str | None
    deferred_reason: DeferReason | None = Field(
        description="why the latest deferral held it back: quiet_hours or rate_limited (kept after a later attempt)"
    )
    deferred_until: datetime | None = Field(description="when the latest deferral let it go again")
    requested_at: datetime
    updated_at: datetime = Field(description="time of the latest fact about it")


class AlarmOut(BaseModel):
    project_id: str
    alarm_id: str
    subject_id: str
    kind: str
    severity: int
    message: str
    raised_at: datetime
    cleared_at: datetime | None
    active: bool


class ReadingOut(BaseModel):
    time: datetime
    quantity: str
    rate: str
    kind: str
    value: Decimal


class ReportOut(BaseModel):
    report: str
    project_id: str
    columns: list[str]
    rows: list[dict[str, Any]]


class RoleOut(BaseModel):
    role: str
    permissions: list[str]


class UserIn(In):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@\-]+$")
    password: str = Field(min_length=8, max_length=256)
    roles: list[str] = Field(min_length=1, max_length=8)
    project_ids: list[str] = Field(default_factory=list, max_length=1000)
    all_projects: bool = False
    account_ids: list[str] = Field(
        default_factory=list, max_length=100, description="a consumer's own accounts"
    )


class AccessIn(In):
    roles: list[str] = Field(min_length=1, max_length=8)
    project_ids: list[str] = Field(default_factory=list, max_length=1000)
    all_projects: bool = False
    account_ids: list[str] = Field(
        default_factory=list, max_length=100, description="a consumer's own accounts"
    )


class UserOut(BaseModel):
    user_id: str
    username: str
    roles: list[str]
    project_ids: list[str]
    all_projects: bool
    account_ids: list[str]
    disabled: bool
    created_at: datetime


class LoginOut(BaseModel):
    time: datetime
    username: str
    user_id: str | None
    ip: str
    succeeded: bool
    reason: str


class ApiKeyIn(In):
    name: str = Field(min_length=1, max_length=100)
    roles: list[str] = Field(min_length=1, max_length=8)
    project_ids: list[str] = Field(default_factory=list, max_length=1000)
    all_projects: bool = False


class ApiKeyOut(BaseModel):
    key_id: str
    name: str
    roles: list[str]
    project_ids: list[str]
    all_projects: bool
    issued_at: datetime
    revoked: bool
    key: str | None = Field(default=None, description="the key itself: shown once, at issue")


class WebhookIn(In):
    project_ids: list[str] = Field(min_length=1, max_length=100)
    event_types: list[str] = Field(
        min_length=1, max_length=50, description="type names, or families ending in * (billing.*)"
    )
    url: AnyHttpUrl


class WebhookOut(BaseModel):
    webhook_id: str
    project_ids: list[str]
    event_types: list[str]
    url: str
    active: bool
    created_by: str
    created_at: datetime
    secret: str | None = Field(default=None, description="the signing secret: shown once, at creation")


class DeliveryOut(BaseModel):
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
