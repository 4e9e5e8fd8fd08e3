"""Allowance plans (MISSION.md B3, 基础金额 on a calendar): "every prepaid account of the project
(on these tariffs / among these accounts) gets N fen each month / each semester", said once.

A plan is ``billing.v1.allowance_plan_set`` facts on mf.billing, keyed by the plan id; the latest
wins. Billing grants the allowances on its own (``services/billing/domain/allowances.py``): each
is an ``AllowanceAccepted`` with the idempotency key ``plan:<plan id>:<period>``, listed among the
account's money movements like an operator's. A PUT replaces the whole plan and answers it once
the read model shows it; the same plan again publishes nothing (its effective time is kept).
``active: false`` stops a plan; what it granted stays.

Refused with a 422: an invalid calendar (a yearly plan without ``starts``, a monthly one with
them, a day not in every year such as 02-29), an unknown time zone, a tariff not published in the
project, an account not open in it or not prepaid, and an ``effective_from`` in the past (beyond
clock skew: a plan never grants periods before it was set).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints, ValidationError

from libs.events.billing import AllowanceCycle, AllowancePlanSet, BillingMode
from services.api.context import Api
from services.api.problems import Problem, not_found
from services.api.schemas import In
from services.api.tariff_changes import BACKDATE_TOLERANCE

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
PlanId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
MonthDay = Annotated[str, StringConstraints(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]


class AllowancePlanIn(In):
    """A plan: ``amount_fen`` to every matched prepaid account once per period of the calendar."""

    amount_fen: int = Field(gt=0, le=10**10)
    cycle: AllowanceCycle = Field(
        description="monthly: periods are calendar months (labels 2026-09); yearly: periods begin on "
        "each of `starts` every year (labels 2026-S1, 2026-S2… by their place in `starts`)"
    )
    starts: list[MonthDay] = Field(
        default_factory=list, max_length=12, description="yearly plans: the days periods begin, MM-DD"
    )
    timezone: str = Field(
        default="Asia/Shanghai",
        min_length=1,
        max_length=64,
        description="IANA zone of the periods' midnights",
    )
    tariff_ids: list[PlanId] = Field(
        default_factory=list, max_length=100, description="only accounts on one of these tariffs ([]: any)"
    )
    account_ids: list[PlanId] = Field(
        default_factory=list, max_length=5000, description="only these accounts ([]: every account)"
    )
    effective_from: AwareDatetime | None = Field(
        default=None, description="from when the plan grants (the period under way then included); now if "
        "left out; never in the past",
    )  # fmt: skip
    active: bool = Field(default=True, description="false stops the plan (granted allowances stay)")
    reason: str = Field(default="", max_length=500)


class AllowancePlanOut(BaseModel):
    """A plan as set last; ``effective_at``: ``effective_from``, or when it was set if that is later."""

    project_id: str
    plan_id: str
    amount_fen: int
    cycle: AllowanceCycle
    starts: list[str]
    timezone: str
    tariff_ids: list[str]
    account_ids: list[str]
    effective_from: datetime | None
    effective_at: datetime
    active: bool
    operator_id: str
    reason: str
    updated_at: datetime


def plans(api: Api, project_id: str) -> list[AllowancePlanSet]:
    """The plans of a project (already in scope), by plan id."""
    by_id = api.readmodel.allowance_plans.by_project.get(project_id, {})
    return [by_id[plan_id] for plan_id in sorted(by_id)]


def plan(api: Api, project_id: str, plan_id: str) -> AllowancePlanSet:
    """One plan of a project in scope; 404 if there is none."""
    found = api.readmodel.allowance_plans.get((project_id, plan_id))
    if found is None:
        raise not_found("allowance plan", plan_id)
    return found


async def replace(
    api: Api, project_id: str, plan_id: str, body: AllowancePlanIn, operator_id: str
) -> AllowancePlanSet:
    """Publish the plan unless it is the one in force; answer it as the read model shows it."""
    _check_references(api, project_id, body)
    now = api.clock()
    if body.effective_from is not None and body.effective_from < now - BACKDATE_TOLERANCE:
        raise Problem(
            422,
            f"effective_from {body.effective_from.isoformat()} is in the past: a plan grants from the "
            f"time it is set on (the period under way then included); give a time from now on",
            "Allowance plan backdated",
        )
    try:
        fact = AllowancePlanSet(
            project_id=project_id, subject_id=plan_id, time=now, plan_id=plan_id,
            amount_fen=body.amount_fen, cycle=body.cycle, starts=tuple(body.starts), tz=body.timezone,
            tariff_ids=tuple(dict.fromkeys(body.tariff_ids)), account_ids=tuple(dict.fromkeys(body.account_ids)),
            effective_from=body.effective_from, active=body.active, operator_id=operator_id, reason=body.reason,
        )  # fmt: skip
    except ValidationError as exc:
        detail = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise Problem(422, detail, "Invalid allowance plan") from None
    readmodel = api.readmodel
    current = readmodel.allowance_plans.get((project_id, plan_id))
    if current is not None and _same(current, fact):
        return current
    return await api.publish_and_wait(
        fact,
        lambda: (
            readmodel.allowance_plans.get((project_id, plan_id))
            if fact.event_id in readmodel.allowance_plan_ids
            else None
        ),
    )  # a concurrent PUT may supersede ours before the read model answers: then that one is stored


def plan_out(fact: AllowancePlanSet) -> AllowancePlanOut:
    return AllowancePlanOut(
        project_id=fact.project_id, plan_id=fact.plan_id, amount_fen=fact.amount_fen, cycle=fact.cycle,
        starts=list(fact.starts), timezone=fact.tz, tariff_ids=list(fact.tariff_ids),
        account_ids=list(fact.account_ids), effective_from=fact.effective_from, effective_at=fact.effective,
        active=fact.active, operator_id=fact.operator_id, reason=fact.reason, updated_at=fact.time,
    )  # fmt: skip


def _check_references(api: Api, project_id: str, body: AllowancePlanIn) -> None:
    views = api.views
    for tariff_id in body.tariff_ids:
        if (project_id, tariff_id) not in views.tariffs:
            raise Problem(422, f"tariff {tariff_id!r} is not published in project {project_id!r}")
    for account_id in body.account_ids:
        account = views.accounts.get((project_id, account_id))
        if account is None:
            raise Problem(422, f"account {account_id!r} is not open in project {project_id!r}")
        if account.mode != BillingMode.PREPAID:
            raise Problem(422, f"account {account_id!r} is postpaid: allowances are for prepaid accounts")


def _same(current: AllowancePlanSet, fact: AllowancePlanSet) -> bool:
    """Whether ``fact`` asks for the plan in force (an effective time left out asks for any)."""
    fields = set(AllowancePlanSet.model_fields) - {"event_id", "time", "operator_id", "effective_from"}
    asked = fact.effective_from is None or fact.effective_from == current.effective_from
    return asked and all(getattr(current, f) == getattr(fact, f) for f in fields)
