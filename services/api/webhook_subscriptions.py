"""Webhook subscriptions (F3) as facts on mf.iam, with their signing secrets sealed.

The integrator gets the secret once, in the answer to ``POST /webhooks``; the log keeps it under
AES-GCM with ``MF_API_WEBHOOK_KEY`` (replicas share the key, as they share the JWT secret).
A subscription names its projects explicitly and only projects its creator sees.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from libs.events import iam
from libs.events.base import new_event_id
from services.api.context import Api
from services.api.problems import Problem, not_found
from services.api.records import Webhook
from services.api.schemas import WebhookIn, WebhookOut
from services.api.security import Principal
from services.api.webhooks import Subscription


def _aead(key: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"meterflow webhook secrets\x00" + key.encode()).digest())


def seal(key: str, secret: str, subscription_id: str) -> str:
    """``secret`` encrypted for the log, bound to its subscription id."""
    nonce = os.urandom(12)
    return base64.b64encode(
        nonce + _aead(key).encrypt(nonce, secret.encode(), subscription_id.encode())
    ).decode()


def unseal(key: str, sealed: str, subscription_id: str) -> str:
    """The secret :func:`seal` sealed (raises ``cryptography.exceptions.InvalidTag`` on a wrong key)."""
    raw = base64.b64decode(sealed)
    return _aead(key).decrypt(raw[:12], raw[12:], subscription_id.encode()).decode()


def subscription(api: Api, hook: Webhook) -> Subscription:
    """The delivery form of a subscription, secret unsealed."""
    secret = unseal(api.settings.api_webhook_key.get_secret_value(), hook.secret_sealed, hook.webhook_id)
    return Subscription(
        id=hook.webhook_id, project_ids=hook.project_ids, event_types=hook.event_types, url=hook.url,
        secret=secret, active=hook.active,
    )  # fmt: skip


def visible(by: Principal, hook: Webhook) -> bool:
    return all(by.sees(p) for p in hook.project_ids)


def out(hook: Webhook, secret: str | None = None) -> WebhookOut:
    return WebhookOut(
        webhook_id=hook.webhook_id, project_ids=list(hook.project_ids), event_types=list(hook.event_types),
        url=hook.url, active=hook.active, created_by=hook.created_by, created_at=hook.created_at, secret=secret,
    )  # fmt: skip


async def subscribe(api: Api, by: Principal, body: WebhookIn) -> WebhookOut:
    hidden = [p for p in body.project_ids if not by.sees(p)]
    if hidden:
        raise Problem(404, f"project {hidden[0]!r} not found")
    if any(t.startswith(("iam.", "*")) for t in body.event_types):
        raise Problem(422, "identity facts (iam.*) are never delivered; name the event types or families")
    hook_id, secret = new_event_id(), secrets.token_urlsafe(32)
    fact = iam.WebhookSubscribed(
        project_id=iam.PLATFORM, subject_id=hook_id, project_ids=tuple(body.project_ids),
        event_types=tuple(body.event_types), url=str(body.url),
        secret_sealed=seal(api.settings.api_webhook_key.get_secret_value(), secret, hook_id), created_by=by.name,
    )  # fmt: skip
    views = api.views
    hook = await api.publish_and_wait(fact, lambda: views.webhooks.get(hook_id))
    return out(hook, secret)


async def unsubscribe(api: Api, by: Principal, hook_id: str, reason: str = "") -> Webhook:
    hook = api.views.webhooks.get(hook_id)
    if hook is None or not visible(by, hook):
        raise not_found("webhook", hook_id)
    fact = iam.WebhookUnsubscribed(
        project_id=iam.PLATFORM, subject_id=hook_id, reason=reason, removed_by=by.name
    )
    return await api.publish_and_wait(fact, lambda: hook if not hook.active else None)
