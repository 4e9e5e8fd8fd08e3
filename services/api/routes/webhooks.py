"""Webhook subscriptions for integrators and their recent deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from services.api import webhook_subscriptions as subs
from services.api.context import ApiDep
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import P
from services.api.problems import ERRORS, not_found
from services.api.schemas import DeliveryOut, WebhookIn, WebhookOut
from services.api.security import Needs, Principal

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=ERRORS)
Integrator = Annotated[Principal, Needs(P.WEBHOOKS_WRITE)]


@router.get("", response_model=Page[WebhookOut])
async def list_webhooks(
    api: ApiDep, principal: Integrator, page: Paging, request: Request
) -> Page[WebhookOut]:
    hooks = sorted(
        (h for h in api.views.webhooks.values() if subs.visible(principal, h)), key=lambda h: h.created_at
    )
    return paginate(request, [subs.out(h) for h in hooks], page)


@router.post("", response_model=WebhookOut, status_code=201)
async def subscribe(api: ApiDep, principal: Integrator, body: WebhookIn) -> WebhookOut:
    """Subscribe a URL; the answer's ``secret`` (shown once) verifies ``X-Meterflow-Signature``."""
    return await subs.subscribe(api, principal, body)


@router.delete("/{webhook_id}", response_model=WebhookOut)
async def unsubscribe(api: ApiDep, principal: Integrator, webhook_id: str) -> WebhookOut:
    return subs.out(await subs.unsubscribe(api, principal, webhook_id))


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut])
async def deliveries(api: ApiDep, principal: Integrator, webhook_id: str) -> list[DeliveryOut]:
    """Recent deliveries of this subscription made by this replica, newest first."""
    hook = api.views.webhooks.get(webhook_id)
    if hook is None or not subs.visible(principal, hook):
        raise not_found("webhook", webhook_id)
    results = api.deliverer.results if api.deliverer is not None else ()
    return [
        DeliveryOut(webhook_id=r.subscription_id, event_id=r.event_id, event_type=r.event_type, status=r.status,
                    attempts=len(r.attempts), last_status_code=r.last_status_code, last_error=r.last_error)
        for r in reversed(results) if r.subscription_id == webhook_id
    ][:500]  # fmt: skip
