"""Writes of identity and access (F1, F2): projects, users, roles, API keys and the login log,
all as facts on ``mf.iam`` (:mod:`libs.events.iam`), so every replica rebuilds them at start.

A principal can only hand out what it holds: roles it has itself (admins hold every permission)
and projects it sees; only an all-projects principal can create another.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from libs.events import iam
from libs.events.base import Event, event_id_for, new_event_id
from services.api.context import Api
from services.api.permissions import ROLES
from services.api.problems import Problem, not_found
from services.api.records import ApiKey, User
from services.api.schemas import AccessIn, ApiKeyIn, ApiKeyOut, ProjectIn, UserIn
from services.api.security import (
    CONSUMER,
    Principal,
    hash_password,
    issue_token,
    new_api_key,
    verify_password,
)

log = logging.getLogger(__name__)


async def login(api: Api, username: str, password: str, ip: str) -> str | None:
    """A token for valid credentials of an enabled user, None otherwise; every attempt is logged."""
    views = api.views
    user = views.users.get(views.usernames.get(username, ""))
    ok = verify_password(user.password_hash if user else None, password)
    reason = "" if ok and user and not user.disabled else ("disabled" if ok else "bad credentials")
    record = iam.LoginRecorded(
        project_id=iam.PLATFORM, subject_id=username[:128] or "-", username=username[:128],
        user_id=user.user_id if user else None, ip=ip, succeeded=not reason, reason=reason,
    )  # fmt: skip
    await api.writer.publish(record)
    if reason or user is None:
        return None
    return issue_token(
        user.user_id, api.settings.api_jwt_secret.get_secret_value(), api.settings.api_token_ttl_s
    )


def _grant(
    by: Principal,
    roles: list[str],
    project_ids: list[str],
    all_projects: bool,
    account_ids: Sequence[str] = (),
) -> None:
    if CONSUMER in roles and (not account_ids or all_projects):
        raise Problem(422, "a consumer needs its own account_ids and cannot see all projects")
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise Problem(422, f"unknown roles: {', '.join(unknown)}")
    held = by.permissions
    if any(not ROLES[r] <= held for r in roles):
        raise Problem(403, "cannot grant a role with permissions you do not hold")
    if all_projects and not by.all_projects:
        raise Problem(403, "only an all-projects principal can grant all projects")
    hidden = [p for p in project_ids if not by.sees(p)]
    if hidden:
        raise Problem(403, f"cannot grant projects you do not see: {', '.join(hidden[:10])}")


def visible_user(by: Principal, user: User) -> bool:
    """Users are listed to principals that see every project the user sees."""
    if by.all_projects:
        return True
    return not user.all_projects and all(by.sees(p) for p in user.project_ids)


async def create_user(api: Api, by: Principal, body: UserIn) -> User:
    _grant(by, body.roles, body.project_ids, body.all_projects, body.account_ids)
    views = api.views
    if body.username in views.usernames:
        raise Problem(409, f"user {body.username!r} already exists")
    user_id = new_event_id()
    fact = iam.UserCreated(
        project_id=iam.PLATFORM, subject_id=user_id, username=body.username,
        password_hash=hash_password(body.password), roles=tuple(body.roles),
        project_ids=tuple(body.project_ids), all_projects=body.all_projects, account_ids=tuple(body.account_ids),
        created_by=by.name,
    )  # fmt: skip
    await api.publish_and_wait(fact, lambda: views.users.get(user_id))
    created = views.users.get(user_id)
    if created is None:  # another replica created the same username first
        raise Problem(409, f"user {body.username!r} already exists")
    return created


def get_user(api: Api, by: Principal, user_id: str) -> User:
    user = api.views.users.get(user_id)
    if user is None or not visible_user(by, user):
        raise not_found("user", user_id)
    return user


async def change_access(api: Api, by: Principal, user_id: str, body: AccessIn) -> User:
    user = get_user(api, by, user_id)
    _grant(by, body.roles, body.project_ids, body.all_projects, body.account_ids)
    fact = iam.UserAccessChanged(
        project_id=iam.PLATFORM, subject_id=user.user_id, roles=tuple(body.roles),
        project_ids=tuple(body.project_ids), all_projects=body.all_projects, account_ids=tuple(body.account_ids),
        changed_by=by.name,
    )  # fmt: skip
    wanted = (tuple(body.roles), tuple(body.project_ids), body.all_projects, tuple(body.account_ids))

    def applied() -> User | None:
        return user if (user.roles, user.project_ids, user.all_projects, user.account_ids) == wanted else None

    await api.publish_and_wait(fact, applied)
    return user


async def set_disabled(api: Api, by: Principal, user_id: str, disabled: bool) -> User:
    user = get_user(api, by, user_id)
    if user.user_id == by.subject and disabled:
        raise Problem(409, "you cannot disable yourself")
    fact: Event = (
        iam.UserDisabled(project_id=iam.PLATFORM, subject_id=user.user_id, disabled_by=by.name)
        if disabled
        else iam.UserEnabled(project_id=iam.PLATFORM, subject_id=user.user_id, enabled_by=by.name)
    )
    await api.publish_and_wait(fact, lambda: user if user.disabled == disabled else None)
    return user


async def issue_key(api: Api, by: Principal, body: ApiKeyIn) -> ApiKeyOut:
    _grant(by, body.roles, body.project_ids, body.all_projects)
    key_id, key, digest = new_api_key()
    fact = iam.ApiKeyIssued(
        project_id=iam.PLATFORM, subject_id=key_id, name=body.name, secret_sha256=digest,
        roles=tuple(body.roles), project_ids=tuple(body.project_ids), all_projects=body.all_projects,
        issued_by=by.name,
    )  # fmt: skip
    views = api.views
    issued = await api.publish_and_wait(fact, lambda: views.keys.get(key_id))
    return key_out(issued, key)


def visible_key(by: Principal, key: ApiKey) -> bool:
    return by.all_projects or (not key.all_projects and all(by.sees(p) for p in key.project_ids))


async def revoke_key(api: Api, by: Principal, key_id: str) -> ApiKey:
    key = api.views.keys.get(key_id)
    if key is None or not visible_key(by, key):
        raise not_found("API key", key_id)
    fact = iam.ApiKeyRevoked(project_id=iam.PLATFORM, subject_id=key_id, revoked_by=by.name)
    return await api.publish_and_wait(fact, lambda: key if key.revoked else None)


def key_out(k: ApiKey, key: str | None = None) -> ApiKeyOut:
    return ApiKeyOut(
        key_id=k.key_id, name=k.name, roles=list(k.roles), project_ids=list(k.project_ids),
        all_projects=k.all_projects, issued_at=k.issued_at, revoked=k.revoked, key=key,
    )  # fmt: skip


async def create_project(api: Api, by: Principal, body: ProjectIn) -> str:
    if not by.all_projects:
        raise Problem(403, "only an all-projects principal can create projects")
    views = api.views
    if views.projects.get(body.project_id):
        raise Problem(409, f"project {body.project_id!r} already exists")
    fact = iam.ProjectCreated(
        event_id=event_id_for(body.project_id, "project_created"), project_id=body.project_id,
        subject_id=body.project_id, name=body.name, created_by=by.name,
    )  # fmt: skip
    await api.publish_and_wait(fact, lambda: body.project_id if views.projects.get(body.project_id) else None)
    return body.project_id


async def bootstrap_admin(api: Api) -> None:
    """On a fresh install (no users at all) create the configured administrator, once: the
    deterministic event id makes concurrent replicas' facts one."""
    settings = api.settings
    password = settings.api_admin_password.get_secret_value()
    if api.views.users or not password:
        return
    user_id = event_id_for(iam.PLATFORM, "bootstrap-admin", settings.api_admin_user)
    fact = iam.UserCreated(
        event_id=user_id, project_id=iam.PLATFORM, subject_id=user_id, username=settings.api_admin_user,
        password_hash=hash_password(password), roles=("admin",), all_projects=True, created_by="bootstrap",
    )  # fmt: skip
    views = api.views
    await api.publish_and_wait(fact, lambda: views.users.get(user_id))
    log.info("created the first administrator %r", settings.api_admin_user)
