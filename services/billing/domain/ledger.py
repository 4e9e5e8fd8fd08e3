"""One account's ledger: a pure fold of money facts and charges, and decisions on commands.

- ``decide(account, command) -> [fact]`` validates a sales command (开户, 售电, 退电, 清零,
  基础金额, adjustment) and returns the fact to record, with an ``event_id`` derived from the
  idempotency key: a retried command returns ``[]`` once its fact was applied, and a fact
  delivered twice has the same id, so it moves money once.
- ``apply_money(account, fact)`` / ``apply_charge(account, charge)`` return the new account and
  the facts it emits: ``BalanceChanged`` (``causation_id`` = the money fact or the reading),
  balance alarms and arrears trip / close commands (alarms.py).
- Remembered ids: every money fact id of the account (operators' events: a few a month), never
  charge ids — those are bounded by the meter's high-water reading (consumption.py).
- A refund fact beyond the balance is still applied (the money left); ``decide`` is where
  refunds beyond the balance are refused. An allowance for a period already granted moves
  nothing, whatever its id.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from libs.events.base import Event, event_id_for
from libs.events.billing import (
    AccountOpened,
    AccountTariffChanged,
    AlarmKind,
    AllowanceAccepted,
    BalanceChanged,
    BillingMode,
    ClearAccepted,
    RechargeAccepted,
    RefundAccepted,
)
from libs.events.trusted import trusted
from services.billing.domain.alarms import AlarmPolicy, Subject, conditions, evaluate
from services.billing.domain.evolve import evolve
from services.billing.domain.facts import (
    Adjust,
    AdjustmentAccepted,
    ChargeApplied,
    Clear,
    Command,
    GrantAllowance,
    OpenAccount,
    Recharge,
    Refund,
)

MoneyFact = RechargeAccepted | RefundAccepted | ClearAccepted | AllowanceAccepted | AdjustmentAccepted


class LedgerError(ValueError):
    """A command the ledger refuses."""


class AccountNotFound(LedgerError):
    pass


class AccountAlreadyOpen(LedgerError):
    pass


class RefundExceedsBalance(LedgerError):
    pass


class AllowanceAlreadyGranted(LedgerError):
    pass


class InvalidAdjustment(LedgerError):
    pass


class AccountState(msgspec.Struct, frozen=True, gc=False):
    """One account's ledger (untracked by the cyclic GC: see :mod:`.evolve`)."""

    project_id: str
    account_id: str
    mode: BillingMode
    meter_ids: tuple[str, ...]
    tariff_id: str
    overdraft_fen: int
    opened_at: datetime
    balance_fen: int = 0
    applied: frozenset[str] = frozenset()
    allowance_periods: frozenset[str] = frozenset()
    recharges: int = 0
    tier_used: dict[str, Decimal] = msgspec.field(default_factory=dict)
    alarms: dict[AlarmKind, str] = msgspec.field(default_factory=dict)
    # (effective, tariff id) of every change after opening, in effective order
    tariff_changes: tuple[tuple[datetime, str], ...] = ()

    @property
    def subject(self) -> Subject:
        return Subject(self.project_id, self.account_id, self.meter_ids, self.overdraft_fen)

    @property
    def tariff_ids(self) -> tuple[str, ...]:
        """Every tariff the account has been priced by, the opening one first."""
        return (self.tariff_id, *(t for _, t in self.tariff_changes))

    def tariff_at(self, instant: datetime) -> str:
        """The tariff in force at ``instant``."""
        current = self.tariff_id
        for effective, tariff_id in self.tariff_changes:
            if effective > instant:
                break
            current = tariff_id
        return current

    def tariff_cuts(self, start: datetime, end: datetime) -> list[datetime]:
        """Instants strictly inside (start, end) where the tariff changes."""
        return [effective for effective, _ in self.tariff_changes if start < effective < end]


def opened(fact: AccountOpened) -> AccountState:
    return AccountState(
        project_id=fact.project_id,
        account_id=fact.account_id,
        mode=fact.mode,
        meter_ids=fact.meter_ids,
        tariff_id=fact.tariff_id,
        overdraft_fen=fact.overdraft_fen,
        opened_at=fact.time,
    )


def _moved(
    account: AccountState, delta: int, reason: str, cause: Event, policy: AlarmPolicy, **changes: Any
) -> tuple[AccountState, list[Event]]:
    """The account after ``delta`` fen (and ``changes``), its ``BalanceChanged`` and the alarms
    that change raises or clears."""
    balance = account.balance_fen + delta
    changed = trusted(  # built from validated facts: no second validation on the hot path
        BalanceChanged,
        {
            "event_id": event_id_for(account.project_id, "balance", cause.event_id),
            "project_id": account.project_id,
            "subject_id": account.account_id,
            "sequence": 0,
            "time": cause.time,
            "causation_id": cause.causation_id if isinstance(cause, ChargeApplied) else cause.event_id,
            "correlation_id": cause.correlation_id or cause.event_id,
            "account_id": account.account_id,
            "delta_fen": delta,
            "balance_fen": balance,
            "reason": reason,
        },
    )
    if account.mode is not BillingMode.PREPAID:
        return evolve(account, balance_fen=balance, **changes), [changed]
    if conditions(balance, account.overdraft_fen, policy) == account.alarms.keys():
        return evolve(account, balance_fen=balance, **changes), [changed]  # no alarm starts or ends
    alarms, emitted = evaluate(account.subject, account.alarms, balance, cause, policy)
    return evolve(account, balance_fen=balance, alarms=alarms, **changes), [changed, *emitted]


def apply_money(
    account: AccountState, fact: MoneyFact, policy: AlarmPolicy
) -> tuple[AccountState, list[Event]]:
    """Fold one money fact; an id already applied changes nothing and emits nothing."""
    if fact.event_id in account.applied:
        return account, []
    account = evolve(account, applied=account.applied | {fact.event_id})
    if isinstance(fact, RechargeAccepted):
        account = evolve(account, recharges=account.recharges + 1)
        return _moved(account, fact.amount_fen, "recharge", fact, policy)
    if isinstance(fact, RefundAccepted):
        return _moved(account, -fact.amount_fen, "refund", fact, policy)
    if isinstance(fact, ClearAccepted):
        return _moved(account, -account.balance_fen, "clear", fact, policy)
    if isinstance(fact, AllowanceAccepted):
        if fact.period in account.allowance_periods:
            return account, []
        account = evolve(account, allowance_periods=account.allowance_periods | {fact.period})
        return _moved(account, fact.amount_fen, "allowance", fact, policy)
    return _moved(account, fact.amount_fen, "adjustment", fact, policy)


def change_tariff(account: AccountState, fact: AccountTariffChanged) -> AccountState:
    """Record a tariff change (idempotent by id; a later change at the same instant wins)."""
    if fact.event_id in account.applied:
        return account
    kept = [(at, t) for at, t in account.tariff_changes if at != fact.effective]
    changes = tuple(sorted([*kept, (fact.effective, fact.tariff_id)], key=lambda c: c[0]))
    return evolve(account, applied=account.applied | {fact.event_id}, tariff_changes=changes)


def apply_charge(
    account: AccountState, charge: ChargeApplied, tier_used: dict[str, Decimal], policy: AlarmPolicy
) -> tuple[AccountState, list[Event]]:
    """Fold a charge (already deduplicated by the meter's high-water mark)."""
    if charge.amount_fen == 0:
        return evolve(account, tier_used=tier_used), [charge]
    account, emitted = _moved(account, -charge.amount_fen, "charge", charge, policy, tier_used=tier_used)
    return account, [charge, *emitted]


def decide(account: AccountState | None, command: Command) -> list[Event]:
    """The fact a command records, ``[]`` if it was already applied, or a :class:`LedgerError`."""
    if isinstance(command, OpenAccount):
        if account is not None:
            if account.opened_at == command.time and account.meter_ids == command.meter_ids:
                return []
            raise AccountAlreadyOpen(f"account {command.account_id} is already open")
        return [
            AccountOpened(
                event_id=event_id_for(command.project_id, "open", command.account_id),
                project_id=command.project_id,
                subject_id=command.account_id,
                time=command.time,
                account_id=command.account_id,
                mode=command.mode,
                meter_ids=command.meter_ids,
                tariff_id=command.tariff_id,
                holder=command.holder,
                overdraft_fen=command.overdraft_fen,
                opened_by=command.operator_id,
            )
        ]
    if account is None:
        raise AccountNotFound(f"account {command.account_id} is not open")
    kind = type(command).__name__.lower()
    event_id = event_id_for(command.project_id, kind, command.account_id, command.idempotency_key)
    if event_id in account.applied:
        return []
    common = {
        "event_id": event_id,
        "project_id": command.project_id,
        "subject_id": command.account_id,
        "time": command.time,
        "account_id": command.account_id,
        "idempotency_key": command.idempotency_key,
        "operator_id": command.operator_id,
    }
    if isinstance(command, Recharge):
        return [
            RechargeAccepted.model_validate(
                {**common, "amount_fen": command.amount_fen, "channel": command.channel}
                | {"payment_order_id": command.payment_order_id}
            )
        ]
    if isinstance(command, Refund):
        if command.amount_fen > account.balance_fen:
            raise RefundExceedsBalance(
                f"refund of {command.amount_fen} fen exceeds balance {account.balance_fen} fen"
            )
        return [
            RefundAccepted.model_validate(
                {**common, "amount_fen": command.amount_fen, "reason": command.reason}
            )
        ]
    if isinstance(command, Clear):
        return [ClearAccepted.model_validate({**common, "reason": command.reason})]
    if isinstance(command, GrantAllowance):
        if command.period in account.allowance_periods:
            raise AllowanceAlreadyGranted(f"allowance for {command.period} was already granted")
        return [
            AllowanceAccepted.model_validate(
                {**common, "amount_fen": command.amount_fen, "period": command.period}
            )
        ]
    assert isinstance(command, Adjust)
    if command.amount_fen == 0:
        raise InvalidAdjustment("an adjustment of 0 fen moves nothing")
    return [
        AdjustmentAccepted.model_validate(
            {**common, "amount_fen": command.amount_fen, "reason": command.reason}
        )
    ]
