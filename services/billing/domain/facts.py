"""Commands of the billing domain (requests to :func:`services.billing.domain.ledger.decide`;
not facts), and the billing facts re-exported from :mod:`libs.events.billing`."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from libs.events.billing import AdjustmentAccepted, BillingMode, ChargeApplied, ChargeLine

__all__ = ["AdjustmentAccepted", "ChargeApplied", "ChargeLine"]


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
