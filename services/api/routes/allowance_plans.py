"""A project's allowance plans (基础金额 each month or semester, granted by billing on its own);
see :mod:`services.api.allowance_plans`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from services.api import allowance_plans
from services.api.allowance_plans import ID_PATTERN, AllowancePlanIn, AllowancePlanOut, plan_out
from services.api.context import ApiDep
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import P
from services.api.problems import ERRORS
from services.api.security import Needs, VisibleProjects

router = APIRouter(
    prefix="/projects/{project_id}/allowance-plans", tags=["allowance plans"], responses=ERRORS
)
PlanId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="the plan's id")]


@router.get("", response_model=Page[AllowancePlanOut], dependencies=[Needs(P.ALLOWANCE_PLANS_READ)])
async def list_plans(
    api: ApiDep, scope: VisibleProjects, project_id: str, page: Paging, request: Request
) -> Page[AllowancePlanOut]:
    """The project's allowance plans (active or not), by plan id."""
    return paginate(request, allowance_plans.plans(api, scope.one(project_id)), page, plan_out)


@router.get("/{plan_id}", response_model=AllowancePlanOut, dependencies=[Needs(P.ALLOWANCE_PLANS_READ)])
async def get_plan(api: ApiDep, scope: VisibleProjects, project_id: str, plan_id: PlanId) -> AllowancePlanOut:
    return plan_out(allowance_plans.plan(api, scope.one(project_id), plan_id))


@router.put("/{plan_id}", response_model=AllowancePlanOut, dependencies=[Needs(P.ALLOWANCE_PLANS_WRITE)])
async def set_plan(
    api: ApiDep,
    scope: VisibleProjects,
    project_id: str,
    plan_id: PlanId,
    body: AllowancePlanIn,
) -> AllowancePlanOut:
    """Create or replace the plan (a ``billing.v1.allowance_plan_set`` fact billing follows): from
    ``effective_from`` (default now) on, every prepaid account it matches gets ``amount_fen`` once
    per period, the period under way included; ``active: false`` stops it."""
    project = scope.one(project_id)
    return plan_out(await allowance_plans.replace(api, project, plan_id, body, scope.principal.name))
