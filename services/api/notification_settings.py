"""Notification settings of an account (MISSION.md D1): what its holder is told, where and when.

They are ``notify.v1.subscription_set`` facts on mf.notifications, keyed by the account, which the
notify service folds into its directory (``services.notify.worker.settings_from``); the latest
fact of an account wins. A PUT replaces the whole settings; an account that never had one hears
every notice on both channels, in Chinese, at any hour — the fact's own defaults. Phone and WeChat
openid are the account's (from ``AccountOpened``), not settings.
"""

from __future__ import annotations

from libs.events.notify import SubscriptionSet
from services.api.context import Api
from services.api.lookups import find_account
from services.api.records import Account
from services.api.schemas import NotificationSettingsIn, NotificationSettingsOut, QuietHoursOut
from services.api.security import Scope

_DEFAULTS = SubscriptionSet(project_id="-", subject_id="-", account_id="-")


def current(api: Api, scope: Scope, account_id: str) -> NotificationSettingsOut:
    """The settings of an account in scope (404 otherwise), the defaults if none were set."""
    account = find_account(scope, api.views, account_id)
    return settings_out(account, api.views.subscriptions.get((account.project_id, account.account_id)))


async def replace(
    api: Api, scope: Scope, account_id: str, body: NotificationSettingsIn
) -> NotificationSettingsOut:
    """Publish the account's new settings and answer them once the read model shows them."""
    account = find_account(scope, api.views, account_id)
    fact = settings_fact(account, body, scope.principal.name)
    views, key = api.views, (account.project_id, account.account_id)
    # a concurrent PUT may supersede ours before the read model answers: then that one is stored
    stored = await api.publish_and_wait(
        fact, lambda: views.subscriptions.get(key) if fact.event_id in views.subscription_ids else None
    )
    return settings_out(account, stored)


def settings_fact(account: Account, body: NotificationSettingsIn, set_by: str) -> SubscriptionSet:
    """The ``SubscriptionSet`` a request body stands for."""
    quiet = body.quiet_hours
    return SubscriptionSet(
        project_id=account.project_id, subject_id=account.account_id, account_id=account.account_id,
        channels=tuple(body.channels), templates=None if body.templates is None else tuple(body.templates),
        locale=body.locale, quiet_start_minute=_minute(quiet.start) if quiet else None,
        quiet_end_minute=_minute(quiet.end) if quiet else None, timezone=body.timezone, set_by=set_by,
    )  # fmt: skip


def settings_out(account: Account, fact: SubscriptionSet | None) -> NotificationSettingsOut:
    s = fact or _DEFAULTS
    quiet = None
    if s.quiet_start_minute is not None and s.quiet_end_minute is not None:
        quiet = QuietHoursOut(start=_wall(s.quiet_start_minute), end=_wall(s.quiet_end_minute))
    return NotificationSettingsOut(
        project_id=account.project_id, account_id=account.account_id, channels=list(s.channels),
        templates=None if s.templates is None else list(s.templates), locale=s.locale, quiet_hours=quiet,
        timezone=s.timezone, set_by=fact.set_by if fact else None, updated_at=fact.time if fact else None,
    )  # fmt: skip


def _minute(wall: str) -> int:
    hours, minutes = wall.split(":")
    return int(hours) * 60 + int(minutes)


def _wall(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
