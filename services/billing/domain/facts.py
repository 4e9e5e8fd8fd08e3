"""Facts and commands the billing domain needs that libs/events does not define yet.

The facts subclass :class:`libs.events.base.Event` (same envelope) but are *not registered*:
they cannot go on the wire until they move to ``libs/events/billing.py`` (see NEEDS.md).
Commands are requests to :func:`services.billing.domain.ledger.decide`; they are not facts.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from libs.events.acquisition import Rate
from libs.events.base import Event
from libs.events.billing import BillingMode


class ChargeLine(BaseModel):
    """One priced line: ``amount_fen = round_half_up(units × price_fen)`` (see pricing.py)."""

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


class ChargeApplied(Event):
    """Consumption of one meter between two readings was charged to an account (NEEDS.md)."""

    account_id: str
    meter_id: str
    start: AwareDatetime
    end: AwareDatetime
    lines: tuple[ChargeLine, ...]
    amount_fen: int = Field(ge=0)


class AdjustmentAccepted(Event):
    """A manual, signed correction of a balance by an operator (NEEDS.md)."""

    account_id: str
    amount_fen: int  # signed; never 0
    idempotency_key: str = Field(min_length=1, max_length=128)
    operator_id: str
    reason: str = ""


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    project_id: str
    account_id: str
    idempotency_key: str = Field(min_length=1, max_length=128)
    operator_id: str
    time: AwareDatetime


class OpenAccount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    project_id: str
    account_id: str
    mode: BillingMode
    meter_ids: tuple[str, ...] = Field(min_length=1)
    tariff_id: str
    holder: str
    overdraft_fen: int = Field(default=0, ge=0)
    operator_id: str
    time: AwareDatetime


class Recharge(_Command):
    amount_fen: int = Field(gt=0)
    channel: str = "cash"
    payment_order_id: str | None = None


class Refund(_Command):
    amount_fen: int = Field(gt=0)
    reason: str = ""


class Clear(_Command):
    reason: str = ""


class GrantAllowance(_Command):
    amount_fen: int = Field(gt=0)
    period: str = Field(min_length=1)


class Adjust(_Command):
    amount_fen: int
    reason: str = Field(min_length=1)


Command = OpenAccount | Recharge | Refund | Clear | GrantAllowance | Adjust
