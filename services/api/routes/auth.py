"""``POST /auth/token`` (OAuth2 password flow) and ``GET /auth/me``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from services.api import identity
from services.api.context import ApiDep
from services.api.problems import ERRORS, Problem
from services.api.schemas import MeOut, TokenOut
from services.api.security import CurrentPrincipal

router = APIRouter(prefix="/auth", tags=["auth"], responses=ERRORS)


@router.post("/token", response_model=TokenOut)
async def token(
    api: ApiDep, request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> TokenOut:
    ip = request.client.host if request.client else "unknown"
    issued = await identity.login(api, form.username, form.password, ip)
    if issued is None:
        raise Problem(401, "wrong username or password, or the account is disabled")
    return TokenOut(access_token=issued, expires_in=api.settings.api_token_ttl_s)


@router.get("/me", response_model=MeOut)
async def me(principal: CurrentPrincipal) -> MeOut:
    return MeOut(
        kind=principal.kind, id=principal.subject, name=principal.name, roles=list(principal.roles),
        permissions=sorted(principal.permissions), project_ids=sorted(principal.project_ids),
        all_projects=principal.all_projects,
    )  # fmt: skip
