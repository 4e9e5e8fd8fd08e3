"""Writes of the money side (B1–B3): open accounts, publish tariff versions, and accept money
movements with the caller's ``Idempotency-Key``.

A money movement's event id is ``event_id_for(project, "money", key)``: POSTing the same key
again yields the same fact (billing applies an id once) and the same answer; the same key with a
different body is a 409. After publishing, the API waits (at most ``MF_API_APPLY_TIMEOUT_S``)
until billing's ``BalanceChanged`` caused by that fact reaches the read model, and answers 201
with the balance after it; if billing is slower the answer is 202 with a ``Location`` of
``GET /money-movements/{id}``, which turns ``applied`` when the balance is booked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libs.events import billing as bil
from libs.events.base import Event, event_id_for
from services.api.context import Api
from services.api.lookups import find_account, money_out
from services.api.problems import Problem, not_found
from services.api.records import Account, Money, Tariff
from services.api.schemas import (
    AccountIn,
    AllowanceIn,
    ClearIn,
    MoneyOut,
    RechargeIn,
    RefundIn,
    TariffIn,
)
from services.api.security import Scope
from services.api.views import Views

MoneyIn = RechargeIn | RefundIn | ClearIn | AllowanceIn
_KIND = {RechargeIn: "recharge", RefundIn: "refund", ClearIn: "clear", AllowanceIn: "allowance"}


async def open_account(api: Api, scope: Scope, body: AccountIn) -> Account:
    """Publish ``AccountOpened`` (开户) and wait until the read model has the account."""
    project = scope.one(body.project_id)
    views = api.views
    key = (project, body.account_id)
    if key in views.accounts:
        raise Problem(409, f"account {body.account_id!r} already exists")
    for meter_id in body.meter_ids:
        if (project, meter_id) not in views.meters:
            raise Problem(422, f"meter {meter_id!r} is not registered in project {project!r}")
        owner = views.meter_accounts.get((project, meter_id))
        if owner is not None:
            raise Problem(409, f"meter {meter_id!r} already belongs to account {owner!r}")
    if (project, body.tariff_id) not in views.tariffs:
        raise Problem(422, f"tariff {body.tariff_id!r} is not published in project {project!r}")
    fact = bil.AccountOpened(
        event_id=event_id_for(project, "account_opened", body.account_id), project_id=project,
        subject_id=body.account_id, account_id=body.account_id, mode=body.mode, meter_ids=tuple(body.meter_ids),
        tariff_id=body.tariff_id, holder=body.holder, phone=body.phone, overdraft_fen=body.overdraft_fen,
        opened_by=scope.principal.name,
    )  # fmt: skip
    return await api.publish_and_wait(fact, lambda: views.accounts.get(key))


async def publish_tariff(api: Api, scope: Scope, body: TariffIn) -> Tariff:
    """Publish the next version of a tariff (versions are never edited, only superseded)."""
    project = scope.one(body.project_id)
    views = api.views
    key = (project, body.tariff_id)
    current = views.tariffs.get(key)
    version = max(current.versions, default=0) + 1 if current else 1
    fact = bil.TariffPublished(
        event_id=event_id_for(project, "tariff", body.tariff_id, str(version)), project_id=project,
        subject_id=body.tariff_id, tariff_id=body.tariff_id, version=version, name=body.name,
        effective_from=body.effective_from, definition=body.definition,
    )  # fmt: skip

    def published() -> Tariff | None:
        tariff = views.tariffs.get(key)
        return tariff if tariff and version in tariff.versions else None

    return await api.publish_and_wait(fact, published)


@dataclass(frozen=True)
class MoneyResult:
    movement: MoneyOut
    applied: bool


async def move_money(
    api: Api, scope: Scope, account_id: str, idempotency_key: str, body: MoneyIn
) -> MoneyResult:
    """Accept a recharge / refund / clear / allowance once per idempotency key."""
    account = find_account(scope, api.views, account_id)
    project, kind = account.project_id, _KIND[type(body)]
    event_id = event_id_for(project, "money", idempotency_key)
    fact = _money_fact(body, event_id, account, idempotency_key, scope.principal.name)
    existing = api.views.money.get(event_id)
    if existing is not None:
        _same_request(existing, kind, account_id, fact)
    else:
        await api.writer.publish(fact)
    views = api.views

    def booked() -> Money | None:
        m = views.money.get(event_id)
        return m if m is not None and m.balance_fen is not None else None

    done = await api.readmodel.wait_until(booked, api.settings.api_apply_timeout_s)
    if done is not None:
        _same_request(done, kind, account_id, fact)  # a concurrent POST with the key may have won
        return MoneyResult(money_out(done), True)
    seen = views.money.get(event_id)
    if seen is not None:
        _same_request(seen, kind, account_id, fact)
        return MoneyResult(money_out(seen), False)
    return MoneyResult(_pending(fact, kind), False)


def money_status(api: Api, scope: Scope, event_id: str) -> MoneyOut:
    """The movement ``event_id`` (the status link of a 202)."""
    m = api.views.money.get(event_id)
    if m is None or m.project_id not in scope:
        raise not_found("money movement", event_id)
    return money_out(m)


def _money_fact(body: MoneyIn, event_id: str, account: Account, key: str, operator: str) -> Event:
    common: dict[str, Any] = {
        "event_id": event_id, "project_id": account.project_id, "subject_id": account.account_id,
        "account_id": account.account_id, "idempotency_key": key, "operator_id": operator,
    }  # fmt: skip
    if isinstance(body, RechargeIn):
        return bil.RechargeAccepted(
            **common, amount_fen=body.amount_fen, channel=body.channel, payment_order_id=body.payment_order_id
        )
    if isinstance(body, RefundIn):
        return bil.RefundAccepted(**common, amount_fen=body.amount_fen, reason=body.reason)
    if isinstance(body, AllowanceIn):
        return bil.AllowanceAccepted(**common, amount_fen=body.amount_fen, period=body.period)
    return bil.ClearAccepted(**common, reason=body.reason)


def _same_request(m: Money, kind: str, account_id: str, fact: Event) -> None:
    """409 unless the stored movement of this key is the request being repeated."""
    amount = getattr(fact, "amount_fen", 0)
    details = _pending(fact, kind).details
    if (m.kind, m.account_id, m.amount_fen, m.details) != (kind, account_id, amount, details):
        raise Problem(
            409, "this Idempotency-Key was already used for a different request", "Idempotency key reused"
        )


def _pending(fact: Event, kind: str) -> MoneyOut:
    """The body of a movement published but not yet in the read model."""
    scratch = Views()
    scratch.apply(fact)
    return money_out(scratch.money[fact.event_id])
