"""Concentrators and meters (filter by state), on-demand reads, readings over a time range."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from services.api import commands, reporting
from services.api.analytics import queries as q
from services.api.context import ApiDep
from services.api.lookups import command_out, find, find_meter, in_scope, meter_out
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import P
from services.api.problems import ERRORS, Problem
from services.api.records import MeterState
from services.api.schemas import CommandOut, ConcentratorOut, MeterOut, ReadingOut
from services.api.security import Needs, ProjectScope

router = APIRouter(tags=["topology"], responses=ERRORS)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)]


@router.get("/concentrators", response_model=Page[ConcentratorOut], dependencies=[Needs(P.TOPOLOGY_READ)])
async def list_concentrators(
    api: ApiDep, scope: ProjectScope, page: Paging, request: Request
) -> Page[ConcentratorOut]:
    items = [
        ConcentratorOut(project_id=c.project_id, concentrator_id=c.concentrator_id, status=c.status,
                        since=c.since, meters=len(c.meters))
        for c in in_scope(scope, api.views.concentrators)
    ]  # fmt: skip
    return paginate(request, items, page)


@router.get("/meters", response_model=Page[MeterOut], dependencies=[Needs(P.TOPOLOGY_READ)])
async def list_meters(
    api: ApiDep,
    scope: ProjectScope,
    page: Paging,
    request: Request,
    state: Annotated[MeterState | None, Query(description="only meters in this state")] = None,
    concentrator_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[MeterOut]:
    views = api.views
    meters = [
        m for m in in_scope(scope, views.meters)
        if (state is None or state in views.states(m)) and concentrator_id in (None, m.concentrator_id)
    ]  # fmt: skip
    return paginate(request, meters, page, lambda m: meter_out(views, m))


@router.get("/meters/{meter_id}", response_model=MeterOut, dependencies=[Needs(P.TOPOLOGY_READ)])
async def get_meter(api: ApiDep, scope: ProjectScope, meter_id: str) -> MeterOut:
    return meter_out(api.views, find(scope, api.views.meters, meter_id, "meter"))


@router.post(
    "/meters/{meter_id}/read",
    response_model=CommandOut,
    status_code=202,
    dependencies=[Needs(P.METERS_READ_NOW)],
)
async def read_meter_now(
    api: ApiDep, scope: ProjectScope, meter_id: str, response: Response, key: IdempotencyKey = None
) -> CommandOut:
    """Ask for an on-demand read; follow ``Location`` for the command's status, then read the
    value from ``/meters/{id}/readings``."""
    command = await commands.read_now(api, scope, meter_id, key)
    response.headers["Location"] = f"/commands/{command.command_id}"
    return command_out(command)


@router.get(
    "/meters/{meter_id}/readings", response_model=list[ReadingOut], dependencies=[Needs(P.READINGS_READ)]
)
async def meter_readings(
    api: ApiDep,
    scope: ProjectScope,
    meter_id: str,
    start: datetime,
    end: datetime,
    quantity: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> list[ReadingOut]:
    """Register and instant values of one meter in ``[start, end)`` from the analytics store."""
    meter = find_meter(scope, api.views, meter_id)
    if start.tzinfo is None or end.tzinfo is None:
        raise Problem(422, "start and end need a timezone offset")
    if end <= start:
        raise Problem(422, "end must be after start")
    if not (start.year >= 1970 and end.year <= 2199):
        raise Problem(422, "times must lie between 1970 and 2199")
    _, rows = await reporting.run(
        api.clickhouse, q.meter_readings(meter.project_id, meter.meter_id, start, end, quantity, limit)
    )
    return [ReadingOut.model_validate(r) for r in rows]
