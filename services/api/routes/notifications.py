"""The send log (D1, D3): which SMS / WeChat messages went out, failed, were suppressed or are
still waiting, per project and account — the facts of mf.notifications as the read model folded
them (:mod:`services.api.sendlog`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime

from libs.events.notify import Channel
from services.api.context import ApiDep
from services.api.lookups import send_out
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import P
from services.api.problems import ERRORS, Problem
from services.api.schemas import NotificationOut
from services.api.security import Needs, ProjectScope
from services.api.sendlog import SendFilter, SendStatus

router = APIRouter(prefix="/notifications", tags=["notifications"], responses=ERRORS)
Instant = Annotated[AwareDatetime | None, Query(description="on requested_at, with a timezone offset")]


@router.get("", response_model=Page[NotificationOut], dependencies=[Needs(P.NOTIFICATIONS_READ)])
async def list_notifications(
    api: ApiDep,
    scope: ProjectScope,
    page: Paging,
    request: Request,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    recipient: Annotated[str | None, Query(max_length=128, description="phone number or openid")] = None,
    status: SendStatus | None = None,
    channel: Channel | None = None,
    template: Annotated[str | None, Query(max_length=64)] = None,
    since: Instant = None,
    until: Instant = None,
) -> Page[NotificationOut]:
    """Notifications, newest request first; ``since`` inclusive, ``until`` exclusive. Each project
    keeps its newest ``MF_API_SENDS_KEPT`` in memory."""
    if since is not None and until is not None and until <= since:
        raise Problem(422, "until must be after since")
    wanted = SendFilter(account_id, recipient, status, channel, template, since, until)
    rows = api.readmodel.sends.query(scope.project_ids, wanted, scope.owns)
    return paginate(request, rows, page, send_out)
