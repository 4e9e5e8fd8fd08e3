"""Relay / valve / parameter commands, single and batch, and their status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from services.api import commands
from services.api.command_status import STATUSES
from services.api.context import ApiDep
from services.api.lookups import command_out, find, in_scope
from services.api.pagination import Page, Paging, paginate
from services.api.permissions import P
from services.api.problems import ERRORS
from services.api.routes.topology import IdempotencyKey
from services.api.schemas import BatchCommandIn, CommandIn, CommandOut
from services.api.security import Needs, ProjectScope

router = APIRouter(prefix="/commands", tags=["commands"], responses=ERRORS)


@router.post("", response_model=CommandOut, status_code=202, dependencies=[Needs(P.COMMANDS_ISSUE)])
async def issue_command(
    api: ApiDep, scope: ProjectScope, body: CommandIn, response: Response, key: IdempotencyKey = None
) -> CommandOut:
    """Request one command (trip, close, keep-power, valve …); follow ``Location`` for its status."""
    (command,) = await commands.request_commands(
        api, scope, body.project_id, [body.meter_id], body.action, body.reason, body.params, key
    )
    response.headers["Location"] = f"/commands/{command.command_id}"
    return command_out(command)


@router.post(
    "/batch", response_model=list[CommandOut], status_code=202, dependencies=[Needs(P.COMMANDS_ISSUE)]
)
async def issue_batch(
    api: ApiDep, scope: ProjectScope, body: BatchCommandIn, key: IdempotencyKey = None
) -> list[CommandOut]:
    """The same command for many meters (C5); each gets its own id and status."""
    issued = await commands.request_commands(
        api, scope, body.project_id, body.meter_ids, body.action, body.reason, body.params, key
    )
    return [command_out(c) for c in issued]


@router.get("", response_model=Page[CommandOut], dependencies=[Needs(P.COMMANDS_READ)])
async def list_commands(
    api: ApiDep,
    scope: ProjectScope,
    page: Paging,
    request: Request,
    meter_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(pattern=f"^({'|'.join(STATUSES)})$")] = None,
    final: bool | None = None,
) -> Page[CommandOut]:
    """Commands, oldest first; ``status=failed&final=true``: those control gave up on."""
    items = [
        c for c in in_scope(scope, api.views.commands)
        if meter_id in (None, c.meter_id) and status in (None, c.status) and final in (None, c.final)
    ]  # fmt: skip
    items.sort(key=lambda c: c.requested_at)
    return paginate(request, items, page, command_out)


@router.get("/{command_id}", response_model=CommandOut, dependencies=[Needs(P.COMMANDS_READ)])
async def get_command(api: ApiDep, scope: ProjectScope, command_id: str) -> CommandOut:
    return command_out(find(scope, api.views.commands, command_id, "command"))
