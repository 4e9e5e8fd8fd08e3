"""Alarms raised by billing and acquisition, active or historical."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from services.api.context import ApiDep
from services.api.lookups import alarm_out, in_scope
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import P
from services.api.problems import ERRORS
from services.api.schemas import AlarmOut
from services.api.security import Needs, ProjectScope

router = APIRouter(prefix="/alarms", tags=["alarms"], responses=ERRORS)


@router.get("", response_model=Page[AlarmOut], dependencies=[Needs(P.ALARMS_READ)])
async def list_alarms(
    api: ApiDep,
    scope: ProjectScope,
    page: Paging,
    request: Request,
    active: Annotated[bool | None, Query(description="only active (true) or cleared (false)")] = None,
    subject_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Page[AlarmOut]:
    items = [
        a for a in in_scope(scope, api.views.alarms)
        if (active is None or active == (a.cleared_at is None)) and subject_id in (None, a.subject_id)
    ]  # fmt: skip
    items.sort(key=lambda a: a.raised_at)
    return paginate(request, items, page, alarm_out)
