"""Facts of identity and access (MISSION.md F1–F3): projects, users, roles, API keys, logins,
webhook subscriptions. They live on ``mf.iam`` so that every API replica rebuilds the same
users and keys from the log, and a restart loses nothing.

Platform-wide facts (users, keys, logins) carry ``project_id = PLATFORM``; a user's or key's
visible projects are in ``project_ids`` (``all_projects`` for head office / platform admins).
Secrets never travel: passwords as argon2 hashes, API keys as SHA-256 of their secret part.
"""

from __future__ import annotations

from pydantic import Field

from libs.events.base import Event, event
from libs.events.topics import IAM

PLATFORM = "_platform"


@event("iam.v1.project_created", IAM.name)
class ProjectCreated(Event):
    """A project (tenant: a campus, an estate) exists (subject: project id)."""

    name: str
    created_by: str


@event("iam.v1.user_created", IAM.name)
class UserCreated(Event):
    """An operator or consumer account (subject: user id)."""

    username: str = Field(min_length=1, max_length=64)
    password_hash: str
    roles: tuple[str, ...]
    project_ids: tuple[str, ...] = ()
    all_projects: bool = False
    account_ids: tuple[str, ...] = ()  # a consumer's own accounts (the only ones it sees)
    created_by: str


@event("iam.v1.user_access_changed", IAM.name)
class UserAccessChanged(Event):
    """A user's roles or visible projects were replaced."""

    roles: tuple[str, ...]
    project_ids: tuple[str, ...] = ()
    all_projects: bool = False
    account_ids: tuple[str, ...] = ()
    changed_by: str


@event("iam.v1.user_disabled", IAM.name)
class UserDisabled(Event):
    """A user may no longer log in or use existing tokens."""

    disabled_by: str
    reason: str = ""


@event("iam.v1.user_enabled", IAM.name)
class UserEnabled(Event):
    """A disabled user may log in again."""

    enabled_by: str


@event("iam.v1.password_changed", IAM.name)
class PasswordChanged(Event):
    """A user's password hash was replaced."""

    password_hash: str
    changed_by: str


@event("iam.v1.login_recorded", IAM.name)
class LoginRecorded(Event):
    """A login attempt (subject: the username tried) with the client's address and outcome."""

    username: str
    user_id: str | None = None
    ip: str
    succeeded: bool
    reason: str = ""


@event("iam.v1.api_key_issued", IAM.name)
class ApiKeyIssued(Event):
    """An integration key (subject: key id); ``secret_sha256`` of the secret part only."""

    name: str
    secret_sha256: str
    roles: tuple[str, ...]
    project_ids: tuple[str, ...] = ()
    all_projects: bool = False
    issued_by: str


@event("iam.v1.api_key_revoked", IAM.name)
class ApiKeyRevoked(Event):
    """An integration key stops working."""

    revoked_by: str


@event("iam.v1.webhook_subscribed", IAM.name)
class WebhookSubscribed(Event):
    """An integrator subscribed a URL to event types of some projects (subject: subscription id).

    ``secret_sealed`` is the signing secret under AES-GCM with the API's webhook key
    (``nonce || ciphertext``, base64): the deliverer needs the secret itself, so it cannot be
    hashed like a password, but it never travels in clear.
    """

    project_ids: tuple[str, ...]
    event_types: tuple[str, ...]
    url: str
    secret_sealed: str
    created_by: str


@event("iam.v1.webhook_unsubscribed", IAM.name)
class WebhookUnsubscribed(Event):
    """A subscription ended (by its owner, or because the receiver answered 410 Gone)."""

    reason: str = ""
    removed_by: str
