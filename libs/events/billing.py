"""Facts of money and tariffs (MISSION.md B1–B5). Money is integer fen, never float."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from libs.events.acquisition import Rate
from libs.events.base import Event, event
from libs.events.topics import ALARMS, BILLING, BINDINGS, LEDGER, TARIFFS


class BillingMode(StrEnum):
    """How an account pays."""

    PREPAID = "prepaid"
    POSTPAID = "postpaid"


@event("billing.v1.tariff_published", TARIFFS.name)
class TariffPublished(Event):
    """A version of a tariff takes effect at ``effective_from`` (subject: tariff id).

    ``definition`` is the tariff body (single, compound, proportional, time-of-use, tiered or
    combinations), validated by the billing service's tariff model.
    """

    tariff_id: str
    version: int = Field(ge=1)
    name: str
    effective_from: AwareDatetime
    definition: dict[str, Any]


@event("billing.v1.account_opened", BILLING.name)
class AccountOpened(Event):
    """An account was opened (开户) for one or more meters (subject: account id)."""

    account_id: str
    mode: BillingMode
    meter_ids: tuple[str, ...]
    tariff_id: str
    holder: str
    phone: str | None = None
    wechat_openid: str | None = None
    overdraft_fen: int = Field(default=0, ge=0)  # arrears begin at balance <= -overdraft
    opened_by: str


@event("billing.v1.meter_bound", BINDINGS.name)
class MeterBound(Event):
    """A meter is billed to ``account_id`` (subject: the meter id): one per meter of an
    ``AccountOpened`` (its ``causation_id``, whose time it carries), re-keyed by billing's router
    so that the binding meets the meter's readings on their partition. A meter named by several
    openings is bound by the latest (by ``time``, then ``causation_id``)."""

    meter_id: str
    account_id: str


@event("billing.v1.account_tariff_changed", BILLING.name)
class AccountTariffChanged(Event):
    """An account is priced by ``tariff_id`` from ``effective_from`` on (subject: account id).

    Use before it stays priced by the tariff in force then; a reading interval that spans
    ``effective_from`` is apportioned linearly in time between the two (billing's pricing
    rules). A change takes effect no earlier than it is recorded: ``effective_from`` before
    ``time`` is read as ``time`` (the use already charged is never re-priced)."""

    account_id: str
    tariff_id: str
    effective_from: AwareDatetime
    operator_id: str
    reason: str = ""

    @property
    def effective(self) -> datetime:
        """When the change takes effect: ``effective_from``, or ``time`` if that is later."""
        return max(self.effective_from, self.time)


@event("billing.v1.alarm_thresholds_set", BILLING.name)
class AlarmThresholdsSet(Event):
    """Low-balance alarm thresholds (B4) of one account, or of the whole project when
    ``account_id`` is None (subject: the account id, or the project id). An account's own
    thresholds win over its project's, which win over the service's configured default."""

    account_id: str | None = None
    level1_fen: int
    level2_fen: int
    operator_id: str

    @model_validator(mode="after")
    def _ordered(self) -> AlarmThresholdsSet:
        if self.level2_fen > self.level1_fen:
            raise ValueError(f"level 2 ({self.level2_fen}) must not exceed level 1 ({self.level1_fen})")
        return self


class MoneyEvent(Event):
    """A money movement with the caller's idempotency key; ``event_id`` derives from it."""

    account_id: str
    amount_fen: int = Field(gt=0)
    idempotency_key: str = Field(min_length=1, max_length=128)
    operator_id: str


@event("billing.v1.recharge_accepted", BILLING.name)
class RechargeAccepted(MoneyEvent):
    """Money paid in (售电); ``channel`` is cash, wechat, alipay, bank, campus_card, kiosk."""

    channel: str
    payment_order_id: str | None = None


@event("billing.v1.refund_accepted", BILLING.name)
class RefundAccepted(MoneyEvent):
    """Money paid back out (退电)."""

    reason: str = ""


@event("billing.v1.clear_accepted", BILLING.name)
class ClearAccepted(Event):
    """The balance was set to zero (清零), e.g. on account closing."""

    account_id: str
    idempotency_key: str = Field(min_length=1, max_length=128)
    operator_id: str
    reason: str = ""


@event("billing.v1.allowance_accepted", BILLING.name)
class AllowanceAccepted(MoneyEvent):
    """A base allowance (基础金额) was granted, e.g. a free quota for the semester ``period``.

    An account gets one allowance per ``period`` label, whoever grants it: an operator, or billing
    itself for an :class:`AllowancePlanSet` (idempotency key ``plan:<plan id>:<period>``)."""

    period: str


class AllowanceCycle(StrEnum):
    """The calendar of an allowance plan."""

    MONTHLY = "monthly"  # calendar months; periods labelled YYYY-MM
    YEARLY = "yearly"  # periods begin on the plan's ``starts`` (MM-DD) each year; YYYY-S1, YYYY-S2…


@event("billing.v1.allowance_plan_set", BILLING.name)
class AllowancePlanSet(Event):
    """A base-allowance plan was set or replaced (subject: the plan id); its latest fact wins.

    Billing grants ``amount_fen`` (an ``AllowanceAccepted`` it emits onto mf.billing) to every
    prepaid account of the project that the filters match — on one of ``tariff_ids`` (none: any
    tariff) and among ``account_ids`` (none: any account) — once per period of the calendar, for
    each period that has begun since the later of the plan's :attr:`effective` time and the
    account's opening: the period under way then included. Periods start at local midnight in
    ``tz``: monthly on the 1st (label ``2026-09``); yearly on each ``starts`` date (``MM-DD``, kept
    sorted), labelled by the year the period starts in and the date's place in ``starts``
    (``["02-20", "09-01"]``: ``2026-S1`` from 2026-02-20, ``2026-S2`` from 2026-09-01 to
    2027-02-20). ``active=False`` stops the plan; granted allowances stay.
    """

    plan_id: str = Field(min_length=1, max_length=64)
    amount_fen: int = Field(gt=0)
    cycle: AllowanceCycle
    starts: tuple[str, ...] = ()
    tz: str = "Asia/Shanghai"
    tariff_ids: tuple[str, ...] = ()
    account_ids: tuple[str, ...] = ()
    effective_from: AwareDatetime | None = None  # None, or earlier than ``time``: from ``time``
    active: bool = True
    operator_id: str
    reason: str = ""

    @field_validator("starts")
    @classmethod
    def _month_days(cls, starts: tuple[str, ...]) -> tuple[str, ...]:
        for text in starts:
            try:
                datetime.strptime(f"2001-{text}", "%Y-%m-%d")  # not a leap year: 02-29 is refused
            except ValueError:
                raise ValueError(f"start {text!r} is not a day of every year as MM-DD") from None
            if len(text) != 5:
                raise ValueError(f"start {text!r} is not written MM-DD")
        return tuple(sorted(set(starts)))

    @field_validator("tz")
    @classmethod
    def _zone(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(f"unknown timezone {tz!r}") from None
        return tz

    @model_validator(mode="after")
    def _calendar(self) -> AllowancePlanSet:
        if self.cycle is AllowanceCycle.YEARLY and not self.starts:
            raise ValueError("a yearly plan needs one or more starts (MM-DD)")
        if self.cycle is AllowanceCycle.MONTHLY and self.starts:
            raise ValueError("a monthly plan takes no starts (its periods begin on the 1st)")
        return self

    @property
    def effective(self) -> datetime:
        """When the plan takes effect: ``effective_from``, or ``time`` if that is later or unset."""
        return self.time if self.effective_from is None else max(self.effective_from, self.time)


class ChargeLine(BaseModel):
    """One priced line: ``amount_fen = round_half_up(units × price_fen)`` (billing pricing rules)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tariff_id: str
    version: int
    category: str = ""  # proportional share, "" otherwise
    component: str = "energy"
    rate: Rate
    tier: int = 0  # 0 = untiered, 1.. = tier number
    units: Decimal
    price_fen: Decimal
    amount_fen: int


@event("billing.v1.charge_applied", LEDGER.name)
class ChargeApplied(Event):
    """Consumption of one meter between two readings was charged to an account; the ledger entry
    behind a ``BalanceChanged(reason="charge")``, with its priced lines (causation: the reading)."""

    account_id: str
    meter_id: str
    start: AwareDatetime
    end: AwareDatetime
    lines: tuple[ChargeLine, ...]
    amount_fen: int = Field(ge=0)


@event("billing.v1.settlement_issued", LEDGER.name)
class SettlementIssued(Event):
    """The monthly bill of a postpaid account (月结, subject: account id).

    ``lines`` merge the month's charge lines per (tariff, version, category, component, rate, tier,
    price), summing units and the already-rounded amounts, so ``total_fen`` equals the sum of the
    charges the ledger deducted in ``period``, to the fen. Issued once every meter of the account
    has been charged for a later month (see services/billing/domain/settlement.py).
    """

    account_id: str
    period: str  # YYYY-MM in the billing timezone
    lines: tuple[ChargeLine, ...]
    units: Decimal  # units of the energy component
    total_fen: int
    charges: int = Field(ge=0)  # how many charges the bill covers


class FreezeKind(StrEnum):
    """Which configured freeze instant a snapshot belongs to."""

    DAILY = "daily"
    MONTHLY = "monthly"


@event("billing.v1.meter_frozen", LEDGER.name)
class MeterFrozen(Event):
    """A platform-side freeze (冻结) of one meter's registers and its account's balance at a
    configured daily or monthly instant (subject: the account id).

    ``registers`` are the last ones read at or before ``at`` (read at ``read_at``), exact whatever
    the arrival order. ``balance_fen`` is the account's balance after the charge of that reading
    as billing held it then: money facts fold in arrival order, so a recharge paid just before
    the instant but delivered after the meter's next reading is not in it.
    """

    account_id: str
    meter_id: str
    kind: FreezeKind
    label: str  # YYYY-MM-DD (daily) or YYYY-MM (monthly): the local date of the instant
    at: AwareDatetime
    read_at: AwareDatetime
    registers: dict[str, dict[Rate, Decimal]]
    balance_fen: int


@event("billing.v1.adjustment_accepted", BILLING.name)
class AdjustmentAccepted(Event):
    """A manual, signed correction of a balance by an operator."""

    account_id: str
    amount_fen: int  # signed; never 0
    idempotency_key: str = Field(min_length=1, max_length=128)
    operator_id: str
    reason: str = ""


@event("billing.v1.balance_changed", LEDGER.name)
class BalanceChanged(Event):
    """The ledger moved: ``delta_fen`` caused by event ``causation_id``; ``balance_fen`` after it."""

    account_id: str
    delta_fen: int
    balance_fen: int
    reason: str  # recharge | refund | clear | allowance | charge | adjustment


class AlarmKind(StrEnum):
    """What an alarm is about."""

    BALANCE_LEVEL1 = "balance_level1"
    BALANCE_LEVEL2 = "balance_level2"
    ARREARS = "arrears"
    OVERLOAD = "overload"
    MALIGNANT_LOAD = "malignant_load"
    LOST_CONTACT = "lost_contact"
    CONSUMPTION_ANOMALY = "consumption_anomaly"
    PURCHASE_COUNT_MISMATCH = "purchase_count_mismatch"
    COMMAND_TIMEOUT = "command_timeout"


# Billing's consequences, on mf.ledger: re-derived on every replay, never causes of anything billing
# or control decide — both skip them before validation (on mf.billing in logs older than mf.ledger).
LEDGER_FACTS = (ChargeApplied, SettlementIssued, MeterFrozen, BalanceChanged)


@event("billing.v1.alarm_raised", ALARMS.name)
class AlarmRaised(Event):
    """An alarm started (subject: the account or meter it concerns)."""

    alarm_id: str
    kind: AlarmKind
    severity: int = Field(ge=1, le=3)
    message: str
    details: dict[str, str] = Field(default_factory=dict)


@event("billing.v1.alarm_cleared", ALARMS.name)
class AlarmCleared(Event):
    """An alarm ended. A balance alarm's ``details`` name the ``balance_fen`` and the money
    movement that ended it (``cause``: recharge, refund, clear, allowance, adjustment or charge)."""

    alarm_id: str
    kind: AlarmKind
    reason: str
    details: dict[str, str] = Field(default_factory=dict)
