"""Projects (tenants) the caller can see."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from services.api import identity
from services.api.context import Api, ApiDep
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import P
from services.api.problems import CONFLICT, ERRORS
from services.api.schemas import ProjectIn, ProjectOut
from services.api.security import Needs, Principal, ProjectScope, VisibleProjects

router = APIRouter(prefix="/projects", tags=["projects"], responses=ERRORS)


def _out(api: Api, project_id: str) -> ProjectOut:
    views = api.views
    return ProjectOut(
        project_id=project_id, name=views.projects.get(project_id) or project_id,
        meters=len(views.meters.by_project.get(project_id, {})),
        accounts=len(views.accounts.by_project.get(project_id, {})),
    )  # fmt: skip


@router.get("", response_model=Page[ProjectOut], dependencies=[Needs(P.PROJECTS_READ)])
async def list_projects(api: ApiDep, scope: ProjectScope, page: Paging, request: Request) -> Page[ProjectOut]:
    return paginate(request, scope.project_ids, page, lambda p: _out(api, p))


@router.post("", response_model=ProjectOut, status_code=201, responses=CONFLICT)
async def create_project(
    api: ApiDep, body: ProjectIn, principal: Annotated[Principal, Needs(P.PROJECTS_WRITE)]
) -> ProjectOut:
    return _out(api, await identity.create_project(api, principal, body))


@router.get("/{project_id}", response_model=ProjectOut, dependencies=[Needs(P.PROJECTS_READ)])
async def get_project(api: ApiDep, scope: VisibleProjects, project_id: str) -> ProjectOut:
    return _out(api, scope.one(project_id))
