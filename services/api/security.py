"""Who is calling and what they may see: passwords (argon2), access tokens (JWT, HS256), API keys
(``mf_<key id>_<secret>``, stored as SHA-256 of the secret), the :class:`Principal`, and the
FastAPI dependencies ``CurrentPrincipal``, ``ProjectScope`` and :func:`require`.

Roles and disabled flags are read from the read model on every request, not from the token, so
disabling a user or changing their roles takes effect at once; a token only proves identity.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Query, Request

from services.api.context import Api, ApiDep
from services.api.permissions import Permission, permissions_of
from services.api.problems import Problem

ALGORITHM = "HS256"
CONSUMER = "consumer"  # the role whose users see only their own accounts (F7 self-service)
KEY_PREFIX = "mf_"
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; an unknown user costs the same time as a wrong password."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def issue_token(user_id: str, secret: str, ttl_s: int, now: float | None = None) -> str:
    """A signed access token for ``user_id`` valid for ``ttl_s`` seconds."""
    issued = int(now if now is not None else time.time())
    return jwt.encode({"sub": user_id, "iat": issued, "exp": issued + ttl_s}, secret, algorithm=ALGORITHM)


def token_subject(token: str, secret: str) -> str | None:
    """The user id of a valid, unexpired token; None otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None


def new_api_key() -> tuple[str, str, str]:
    """(key id, the full key to hand out once, SHA-256 of its secret to store)."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(key: str) -> tuple[str, str] | None:
    """(key id, SHA-256 of the secret) of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX) or key.count("_") < 2:
        return None
    key_id, secret = key[len(KEY_PREFIX) :].split("_", 1)
    return key_id, hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user or an API key, its roles, and the projects it may see."""

    kind: Literal["user", "api_key"]
    subject: str  # user id or key id
    name: str
    roles: tuple[str, ...]
    project_ids: frozenset[str]
    all_projects: bool
    account_ids: frozenset[str] | None = None  # None = every account of the visible projects

    @property
    def permissions(self) -> frozenset[Permission]:
        return permissions_of(self.roles)

    def sees(self, project_id: str) -> bool:
        """True if the principal may see ``project_id``'s data."""
        return self.all_projects or project_id in self.project_ids

    def visible(self, known: Iterable[str]) -> list[str]:
        """The projects of ``known`` this principal may see, sorted."""
        return sorted(p for p in known if self.sees(p))


SECURITY_SCHEMES = {
    "OAuth2PasswordBearer": {"type": "oauth2", "flows": {"password": {"tokenUrl": "/auth/token", "scopes": {}}}},
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "integration key mf_<id>_<secret>"},
}  # fmt: skip
"""Documented by the app factory on every protected operation. The credentials are read in one
plain dependency (:func:`_current`) rather than through FastAPI's security classes: on the
balance-lookup hot path each dependency costs tens of microseconds."""


def authenticate(api: Api, token: str | None, api_key: str | None) -> Principal:
    """The principal of a bearer token or API key; :class:`Problem` 401 when neither is valid."""
    views = api.views
    if api_key:
        parts = split_api_key(api_key)
        key = views.keys.get(parts[0]) if parts else None
        if (
            key is None
            or parts is None
            or key.revoked
            or not hmac.compare_digest(key.secret_sha256, parts[1])
        ):
            raise Problem(401, "invalid API key")
        return Principal(
            "api_key", key.key_id, key.name, key.roles, frozenset(key.project_ids), key.all_projects
        )
    if token:
        user_id = token_subject(token, api.settings.api_jwt_secret.get_secret_value())
        user = views.users.get(user_id) if user_id else None
        if user is None:
            raise Problem(401, "invalid or expired token")
        if user.disabled:
            raise Problem(401, "account disabled")
        own = frozenset(user.account_ids) if CONSUMER in user.roles else None
        return Principal(
            "user",
            user.user_id,
            user.username,
            user.roles,
            frozenset(user.project_ids),
            user.all_projects,
            own,
        )
    raise Problem(401, "not authenticated: send a bearer token or an X-API-Key header")


async def _current(request: Request) -> Principal:
    authorization = request.headers.get("authorization")
    token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
    return authenticate(request.app.state.api, token, request.headers.get("x-api-key"))


CurrentPrincipal = Annotated[Principal, Depends(_current)]


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting principals whose roles grant ``permission`` (403 otherwise).

    The returned callable carries ``.permission``: the app documents it as ``x-permission`` and
    the permission-matrix test reads it from the route table.
    """

    async def check(principal: CurrentPrincipal) -> Principal:
        if permission not in principal.permissions:
            raise Problem(403, f"permission {permission.value!r} required")
        return principal

    check.permission = permission  # type: ignore[attr-defined]
    return check


def Needs(permission: Permission) -> Any:
    """``dependencies=[Needs(P.X)]`` in a route decorator."""
    return Depends(require(permission))


@dataclass(frozen=True)
class Scope:
    """The projects one request may read or write: visible to the principal and, when the
    caller asked for one project, only that one."""

    principal: Principal
    project_ids: tuple[str, ...]

    def owns(self, account_id: str | None) -> bool:
        """True if the principal may see ``account_id`` (consumers: only their own)."""
        own = self.principal.account_ids
        return own is None or (account_id is not None and account_id in own)

    def __contains__(self, project_id: object) -> bool:
        return project_id in self.project_ids

    def one(self, project_id: str) -> str:
        """``project_id`` if in scope; 404 (never 403: existence is not revealed) otherwise."""
        if project_id not in self.project_ids:
            raise Problem(404, f"project {project_id!r} not found")
        return project_id


async def _scope(
    api: ApiDep,
    principal: CurrentPrincipal,
    project_id: Annotated[str | None, Query(max_length=64, description="only this project")] = None,
) -> Scope:
    known = api.views.projects
    visible = principal.visible(known)
    if project_id is not None:
        if project_id not in visible:
            raise Problem(404, f"project {project_id!r} not found")
        visible = [project_id]
    return Scope(principal, tuple(visible))


ProjectScope = Annotated[Scope, Depends(_scope)]


async def _visible(api: ApiDep, principal: CurrentPrincipal) -> Scope:
    return Scope(principal, tuple(principal.visible(api.views.projects)))


VisibleProjects = Annotated[Scope, Depends(_visible)]
"""Every project the principal sees (for routes whose path names the project)."""
