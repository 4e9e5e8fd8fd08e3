"""Accounts (open, list), balances (one and many), money movements with ``Idempotency-Key``, and
each account's notification settings.

A movement answers 201 with the balance after it once billing booked it (read-your-writes), or
202 with ``Location: /money-movements/{id}`` when billing has not booked it within
``MF_API_APPLY_TIMEOUT_S``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from services.api import notification_settings, sales
from services.api.context import ApiDep
from services.api.lookups import account_out, accounts_in_scope, balance_out, find_account
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import P
from services.api.problems import CONFLICT, ERRORS
from services.api.schemas import (
    AccountIn,
    AccountOut,
    AllowanceIn,
    BalanceOut,
    ClearIn,
    MoneyOut,
    NotificationSettingsIn,
    NotificationSettingsOut,
    RechargeIn,
    RefundIn,
)
from services.api.security import Needs, ProjectScope

router = APIRouter(tags=["accounts"], responses=ERRORS)
IdempotencyKey = Annotated[
    str,
    Header(alias="Idempotency-Key", min_length=1, max_length=128, description="one per intended movement"),
]
_MOVED = {**CONFLICT, 202: {"description": "accepted; not yet booked — follow Location", "model": MoneyOut}}


@router.get("/accounts", response_model=Page[AccountOut], dependencies=[Needs(P.ACCOUNTS_READ)])
async def list_accounts(api: ApiDep, scope: ProjectScope, page: Paging, request: Request) -> Page[AccountOut]:
    return paginate(request, accounts_in_scope(scope, api.views), page, account_out)


@router.post("/accounts", response_model=AccountOut, status_code=201, responses=CONFLICT,
             dependencies=[Needs(P.ACCOUNTS_WRITE)])  # fmt: skip
async def open_account(api: ApiDep, scope: ProjectScope, body: AccountIn) -> AccountOut:
    """Open an account (开户) for registered meters with a published tariff."""
    return account_out(await sales.open_account(api, scope, body))


@router.get("/accounts/{account_id}", response_model=AccountOut, dependencies=[Needs(P.ACCOUNTS_READ)])
async def get_account(api: ApiDep, scope: ProjectScope, account_id: str) -> AccountOut:
    return account_out(find_account(scope, api.views, account_id))


@router.get(
    "/accounts/{account_id}/balance", response_model=BalanceOut, dependencies=[Needs(P.BALANCES_READ)]
)
async def get_balance(api: ApiDep, scope: ProjectScope, account_id: str) -> BalanceOut:
    return balance_out(find_account(scope, api.views, account_id))


@router.get("/accounts/{account_id}/notifications", response_model=NotificationSettingsOut,
            dependencies=[Needs(P.NOTIFICATIONS_READ)])  # fmt: skip
async def get_notification_settings(
    api: ApiDep, scope: ProjectScope, account_id: str
) -> NotificationSettingsOut:
    """What the holder is told, where and when (the defaults until set)."""
    return notification_settings.current(api, scope, account_id)


@router.put("/accounts/{account_id}/notifications", response_model=NotificationSettingsOut,
            dependencies=[Needs(P.NOTIFICATIONS_WRITE)])  # fmt: skip
async def set_notification_settings(
    api: ApiDep, scope: ProjectScope, account_id: str, body: NotificationSettingsIn
) -> NotificationSettingsOut:
    """Replace the notification settings (a ``notify.v1.subscription_set`` fact the notify service
    follows); fields left out take their defaults."""
    return await notification_settings.replace(api, scope, account_id, body)


@router.get("/balances", response_model=Page[BalanceOut], dependencies=[Needs(P.BALANCES_READ)])
async def list_balances(
    api: ApiDep,
    scope: ProjectScope,
    page: Paging,
    request: Request,
    account_id: Annotated[list[str] | None, Query(max_length=500, description="only these accounts")] = None,
) -> Page[BalanceOut]:
    """Many balances at once: every account in scope, or the ones named (unknown ids are left out)."""
    accounts = accounts_in_scope(scope, api.views)
    if account_id:
        wanted = set(account_id)
        accounts = [a for a in accounts if a.account_id in wanted]
    return paginate(request, accounts, page, balance_out)


async def _move(
    api: ApiDep, scope: ProjectScope, account_id: str, key: str, body: sales.MoneyIn, response: Response
) -> MoneyOut:
    result = await sales.move_money(api, scope, account_id, key, body)
    response.headers["Location"] = f"/money-movements/{result.movement.id}"
    if not result.applied:
        response.status_code = 202
    return result.movement


@router.post("/accounts/{account_id}/recharges", response_model=MoneyOut, status_code=201, responses=_MOVED,
             dependencies=[Needs(P.MONEY_RECHARGE)])  # fmt: skip
async def recharge(
    api: ApiDep,
    scope: ProjectScope,
    account_id: str,
    key: IdempotencyKey,
    body: RechargeIn,
    response: Response,
) -> MoneyOut:
    """Recharge (售电)."""
    return await _move(api, scope, account_id, key, body, response)


@router.post("/accounts/{account_id}/refunds", response_model=MoneyOut, status_code=201, responses=_MOVED,
             dependencies=[Needs(P.MONEY_REFUND)])  # fmt: skip
async def refund(
    api: ApiDep, scope: ProjectScope, account_id: str, key: IdempotencyKey, body: RefundIn, response: Response
) -> MoneyOut:
    """Refund (退电)."""
    return await _move(api, scope, account_id, key, body, response)


@router.post("/accounts/{account_id}/clears", response_model=MoneyOut, status_code=201, responses=_MOVED,
             dependencies=[Needs(P.MONEY_CLEAR)])  # fmt: skip
async def clear(
    api: ApiDep, scope: ProjectScope, account_id: str, key: IdempotencyKey, body: ClearIn, response: Response
) -> MoneyOut:
    """Clear the balance to zero (清零)."""
    return await _move(api, scope, account_id, key, body, response)


@router.post("/accounts/{account_id}/allowances", response_model=MoneyOut, status_code=201, responses=_MOVED,
             dependencies=[Needs(P.MONEY_ALLOWANCE)])  # fmt: skip
async def allowance(
    api: ApiDep,
    scope: ProjectScope,
    account_id: str,
    key: IdempotencyKey,
    body: AllowanceIn,
    response: Response,
) -> MoneyOut:
    """Grant a base allowance (基础金额) for a period; once per period."""
    return await _move(api, scope, account_id, key, body, response)


@router.get("/money-movements/{movement_id}", response_model=MoneyOut, dependencies=[Needs(P.ACCOUNTS_READ)])
async def get_movement(api: ApiDep, scope: ProjectScope, movement_id: str) -> MoneyOut:
    """A money movement: ``status`` is ``applied`` with ``balance_fen`` once billing booked it."""
    return sales.money_status(api, scope, movement_id)
