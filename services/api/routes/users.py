"""Users, roles, API keys and the login log (F2, F3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from services.api import identity
from services.api.context import ApiDep
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import ROLES, P
from services.api.problems import CONFLICT, ERRORS
from services.api.records import User
from services.api.schemas import AccessIn, ApiKeyIn, ApiKeyOut, LoginOut, RoleOut, UserIn, UserOut
from services.api.security import Needs, Principal

router = APIRouter(tags=["users"], responses=ERRORS)
ReadsUsers = Annotated[Principal, Needs(P.USERS_READ)]
WritesUsers = Annotated[Principal, Needs(P.USERS_WRITE)]
WritesKeys = Annotated[Principal, Needs(P.KEYS_WRITE)]


def _out(u: User) -> UserOut:
    return UserOut(
        user_id=u.user_id, username=u.username, roles=list(u.roles), project_ids=list(u.project_ids),
        all_projects=u.all_projects, account_ids=list(u.account_ids), disabled=u.disabled, created_at=u.created_at,
    )  # fmt: skip


@router.get("/roles", response_model=list[RoleOut], dependencies=[Needs(P.USERS_READ)])
async def list_roles() -> list[RoleOut]:
    return [RoleOut(role=r, permissions=sorted(p)) for r, p in ROLES.items()]


@router.get("/users", response_model=Page[UserOut])
async def list_users(api: ApiDep, principal: ReadsUsers, page: Paging, request: Request) -> Page[UserOut]:
    users = sorted(
        (u for u in api.views.users.values() if identity.visible_user(principal, u)), key=lambda u: u.username
    )
    return paginate(request, [_out(u) for u in users], page)


@router.post("/users", response_model=UserOut, status_code=201, responses=CONFLICT)
async def create_user(api: ApiDep, principal: WritesUsers, body: UserIn) -> UserOut:
    return _out(await identity.create_user(api, principal, body))


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(api: ApiDep, principal: ReadsUsers, user_id: str) -> UserOut:
    return _out(identity.get_user(api, principal, user_id))


@router.put("/users/{user_id}/access", response_model=UserOut)
async def set_access(api: ApiDep, principal: WritesUsers, user_id: str, body: AccessIn) -> UserOut:
    """Replace a user's roles and visible projects."""
    return _out(await identity.change_access(api, principal, user_id, body))


@router.post("/users/{user_id}/disable", response_model=UserOut, responses=CONFLICT)
async def disable_user(api: ApiDep, principal: WritesUsers, user_id: str) -> UserOut:
    """Disable a user: logins and existing tokens are refused from now on."""
    return _out(await identity.set_disabled(api, principal, user_id, True))


@router.post("/users/{user_id}/enable", response_model=UserOut)
async def enable_user(api: ApiDep, principal: WritesUsers, user_id: str) -> UserOut:
    return _out(await identity.set_disabled(api, principal, user_id, False))


@router.get("/login-log", response_model=Page[LoginOut])
async def login_log(
    api: ApiDep,
    principal: ReadsUsers,
    page: Paging,
    request: Request,
    username: Annotated[str | None, Query(max_length=128)] = None,
) -> Page[LoginOut]:
    """Login attempts, newest first, with the client address."""
    views = api.views
    entries = [
        LoginOut(time=e.time, username=e.username, user_id=e.user_id, ip=e.ip, succeeded=e.succeeded, reason=e.reason)
        for e in reversed(views.logins)
        if username in (None, e.username)
        and (principal.all_projects or (e.user_id in views.users and identity.visible_user(principal, views.users[e.user_id])))
    ]  # fmt: skip
    return paginate(request, entries, page)


@router.get("/api-keys", response_model=Page[ApiKeyOut])
async def list_keys(api: ApiDep, principal: WritesKeys, page: Paging, request: Request) -> Page[ApiKeyOut]:
    keys = [identity.key_out(k) for k in api.views.keys.values() if identity.visible_key(principal, k)]
    return paginate(request, sorted(keys, key=lambda k: k.issued_at), page)


@router.post("/api-keys", response_model=ApiKeyOut, status_code=201)
async def issue_key(api: ApiDep, principal: WritesKeys, body: ApiKeyIn) -> ApiKeyOut:
    """Issue an integration key; the response's ``key`` is the only time it is shown."""
    return await identity.issue_key(api, principal, body)


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut)
async def revoke_key(api: ApiDep, principal: WritesKeys, key_id: str) -> ApiKeyOut:
    return identity.key_out(await identity.revoke_key(api, principal, key_id))
