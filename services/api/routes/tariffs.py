"""Tariffs: list, get, publish a new version."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.api import sales
from services.api.context import ApiDep
from services.api.lookups import find, in_scope, tariff_out
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import P
from services.api.problems import ERRORS
from services.api.schemas import TariffIn, TariffOut
from services.api.security import Needs, ProjectScope

router = APIRouter(prefix="/tariffs", tags=["tariffs"], responses=ERRORS)


@router.get("", response_model=Page[TariffOut], dependencies=[Needs(P.TARIFFS_READ)])
async def list_tariffs(api: ApiDep, scope: ProjectScope, page: Paging, request: Request) -> Page[TariffOut]:
    return paginate(request, in_scope(scope, api.views.tariffs), page, tariff_out)


@router.post("", response_model=TariffOut, status_code=201, dependencies=[Needs(P.TARIFFS_PUBLISH)])
async def publish_tariff(api: ApiDep, scope: ProjectScope, body: TariffIn) -> TariffOut:
    """Publish the next version of a tariff, effective from ``effective_from``."""
    return tariff_out(await sales.publish_tariff(api, scope, body))


@router.get("/{tariff_id}", response_model=TariffOut, dependencies=[Needs(P.TARIFFS_READ)])
async def get_tariff(api: ApiDep, scope: ProjectScope, tariff_id: str) -> TariffOut:
    return tariff_out(find(scope, api.views.tariffs, tariff_id, "tariff"))
