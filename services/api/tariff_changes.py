"""Moving an account to another tariff after it was opened: ``billing.v1.account_tariff_changed``
facts on mf.billing, keyed by the account.

Billing prices use after the change's effective instant by the new tariff and apportions a
reading interval that spans it; use already charged is never re-priced, so a change is never
backdated. The API refuses an ``effective_from`` more than :data:`BACKDATE_TOLERANCE` in the past
(less is clock skew: billing reads any past ``effective_from`` as the time the fact was
recorded). The event id is ``event_id_for(project, "tariff_change", key)`` of the caller's
``Idempotency-Key``, as for money: the same key again answers the change already made, the same
key with a different request is a 409.
"""

from __future__ import annotations

from datetime import timedelta

from libs.events.base import event_id_for
from libs.events.billing import AccountTariffChanged
from services.api.context import Api
from services.api.lookups import find_account, tariff_change_out
from services.api.problems import Problem
from services.api.records import TariffChange
from services.api.schemas import TariffChangeIn, TariffChangeOut
from services.api.security import Scope

BACKDATE_TOLERANCE = timedelta(minutes=5)
"""How far in the past ``effective_from`` may lie (clock skew), taken as "now"."""


def history(api: Api, scope: Scope, account_id: str) -> list[TariffChange]:
    """The changes of an account in scope (404 otherwise), in effective order."""
    return api.views.tariff_changes_of(find_account(scope, api.views, account_id))


async def change(
    api: Api, scope: Scope, account_id: str, idempotency_key: str, body: TariffChangeIn
) -> TariffChangeOut:
    """Publish the change once per idempotency key and answer it as the read model shows it."""
    views = api.views
    account = find_account(scope, views, account_id)
    project = account.project_id
    event_id = event_id_for(project, "tariff_change", idempotency_key)
    done = views.tariff_changes.get(event_id)
    if done is not None:  # a retry: answered before the checks, which its own effect would fail
        return _same_request(done, account_id, body)
    if (project, body.tariff_id) not in views.tariffs:
        raise Problem(422, f"tariff {body.tariff_id!r} is not published in project {project!r}")
    now = api.clock()
    effective_from = body.effective_from or now
    if effective_from < now - BACKDATE_TOLERANCE:
        raise Problem(
            422,
            f"effective_from {effective_from.isoformat()} is in the past: a tariff change is never "
            f"backdated (use already charged is not re-priced); give a time from now on",
            "Tariff change backdated",
        )
    effective = max(effective_from, now)
    first = min(v.effective_from for v in views.tariffs[(project, body.tariff_id)].versions.values())
    if first > effective:  # billing charges nothing before a tariff's first version
        raise Problem(
            422,
            f"tariff {body.tariff_id!r} has no version in force at {effective.isoformat()} (its first "
            f"takes effect at {first.isoformat()}): the use in between would not be charged",
            "Tariff not yet in force",
        )
    if views.tariff_at(account, effective) == body.tariff_id:
        raise Problem(
            422,
            f"account {account_id!r} is already on tariff {body.tariff_id!r} from {effective.isoformat()}",
        )
    fact = AccountTariffChanged(
        event_id=event_id, project_id=project, subject_id=account_id, time=now, account_id=account_id,
        tariff_id=body.tariff_id, effective_from=effective_from, operator_id=scope.principal.name,
        reason=body.reason,
    )  # fmt: skip
    stored = await api.publish_and_wait(fact, lambda: views.tariff_changes.get(event_id))
    return _same_request(stored, account_id, body)  # a concurrent POST with the key may have won


def _same_request(c: TariffChange, account_id: str, body: TariffChangeIn) -> TariffChangeOut:
    """The stored change of this key, unless it was made by a different request (409)."""
    asked = body.effective_from is None or body.effective_from == c.effective_from
    if (c.account_id, c.tariff_id, c.reason) != (account_id, body.tariff_id, body.reason) or not asked:
        raise Problem(
            409, "this Idempotency-Key was already used for a different request", "Idempotency key reused"
        )
    return tariff_change_out(c)
