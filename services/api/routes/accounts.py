"""Accounts (open, list), balances (one and many), money movements and tariff changes with
``Idempotency-Key``, and each account's notification settings.

A movement answers 201 with the balance after it once billing booked it (read-your-writes), or
202 with ``Location: /money-movements/{id}`` when billing has not booked it within
``MF_API_APPLY_TIMEOUT_S``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from services.api import notification_settings, sales, tariff_changes
from services.api.context import ApiDep
from services.api.lookups import (
    account_out,
    accounts_in_scope,
    balance_out,
    find_account,
    tariff_change_out,
)
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
    TariffChangeIn,
    TariffChangeOut,
)
from services.api.security import Needs, ProjectScope

router = APIRouter(tags=["accounts"], responses=ERRORS)
IdempotencyKey = Annotated[
    str,
    Header(alias="Idempotency-Key", min_length=1, max_length=128, description="one per intended write"),
]
_MOVED = {**CONFLICT, 202: {"description": "accepted; not yet booked — follow Location", "model": MoneyOut}}


@router.get("/accounts", response_model=Page[AccountOut], dependencies=[Needs(P.ACCOUNTS_READ)])
async def list_accounts(api: ApiDep, scope: ProjectScope, page: Paging, request: Request) -> Page[AccountOut]:
    views, now = api.views, api.clock()
    return paginate(request, accounts_in_scope(scope, views), page, lambda a: account_out(views, a, now))


@router.post("/accounts", response_model=AccountOut, status_code=201, responses=CONFLICT,
             dependencies=[Needs(P.ACCOUNTS_WRITE)])  # fmt: skip
async def open_account(api: ApiDep, scope: ProjectScope, body: AccountIn) -> AccountOut:
    """Open an account (开户) for registered meters with a published tariff."""
    return account_out(api.views, await sales.open_account(api, scope, body), api.clock())


@router.get("/accounts/{account_id}", response_model=AccountOut, dependencies=[Needs(P.ACCOUNTS_READ)])
async def get_account(api: ApiDep, scope: ProjectScope, account_id: str) -> AccountOut:
    """The account with its tariff in force now and the next tariff change, if one is pending."""
    return account_out(api.views, find_account(scope, api.views, account_id), api.clock())


@router.get("/accounts/{account_id}/tariff-changes", response_model=Page[TariffChangeOut], responses=CONFLICT,
            dependencies=[Needs(P.ACCOUNTS_READ)])  # fmt: skip
async def list_tariff_changes(
    api: ApiDep, scope: ProjectScope, account_id: str, page: Paging, request: Request
) -> Page[TariffChangeOut]:
    """The account's tariff changes in effective order (a superseded one stays, marked)."""
    return paginate(request, tariff_changes.history(api, scope, account_id), page, tariff_change_out)


@router.post("/accounts/{account_id}/tariff-changes", response_model=TariffChangeOut, status_code=201,
             responses=CONFLICT, dependencies=[Needs(P.ACCOUNTS_WRITE)])  # fmt: skip
async def change_tariff(
    api: ApiDep, scope: ProjectScope, account_id: str, key: IdempotencyKey, body: TariffChangeIn
) -> TariffChangeOut:
    """Move the account to another published tariff from ``effective_from`` (default now) on; never
    backdated. Billing prices use from then on by the new tariff."""
    return await tariff_changes.change(api, scope, account_id, key, body)


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
