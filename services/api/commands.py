"""Writes of the control side (C1, C5–C7): single and batch commands, and on-demand reads (a
``CommandRequested`` with action ``read``, which acquisition executes).

With an ``Idempotency-Key`` the command id derives from it (per meter in a batch), so a retried
request does not trip a meter twice; without one each request is a new command. ``retry_of`` is
control's parameter (an attempt of an earlier command) and refused here. What becomes of a command
— sent, acknowledged, failed and whether control retries it — is folded in
:mod:`services.api.command_status`.
"""

from __future__ import annotations

from libs.events.base import event_id_for, new_event_id
from libs.events.control import Action, CommandRequested
from services.api.command_status import Command
from services.api.context import Api
from services.api.lookups import find
from services.api.problems import Problem
from services.api.security import Scope

RESERVED_PARAMS = frozenset({"retry_of"})  # control's: its retries carry the command they retry


async def request_commands(
    api: Api,
    scope: Scope,
    project_id: str,
    meter_ids: list[str],
    action: Action,
    reason: str,
    params: dict[str, str],
    idempotency_key: str | None,
) -> list[Command]:
    """Publish one ``CommandRequested`` per meter; return the commands as the read model has them."""
    project = scope.one(project_id)
    views = api.views
    missing = [m for m in meter_ids if (project, m) not in views.meters]
    if missing:
        raise Problem(422, f"meters not registered in project {project!r}: {', '.join(missing[:10])}")
    if len(set(meter_ids)) != len(meter_ids):
        raise Problem(422, "a meter appears twice in the batch")
    if reserved := sorted(RESERVED_PARAMS & params.keys()):
        raise Problem(422, f"params {', '.join(reserved)} are set by control, not by a request")
    batch = idempotency_key or new_event_id()
    facts = []
    for meter_id in meter_ids:
        command_id = event_id_for(project, "command", batch, meter_id)
        facts.append(CommandRequested(
            event_id=command_id, project_id=project, subject_id=meter_id, command_id=command_id,
            meter_id=meter_id, action=action, requested_by=scope.principal.name, reason=reason,
            params={**params, "batch_id": batch} if len(meter_ids) > 1 else dict(params),
        ))  # fmt: skip
    fresh = [f for f in facts if (project, f.command_id) not in views.commands]
    if fresh:
        await api.writer.publish(*fresh)
    keys = [(project, f.command_id) for f in facts]

    def all_visible() -> list[Command] | None:
        return [views.commands[k] for k in keys] if all(k in views.commands for k in keys) else None

    done = await api.readmodel.wait_until(all_visible, api.settings.api_apply_timeout_s)
    if done is None:
        raise Problem(503, "commands published, but not yet visible; list them shortly", "Not yet visible")
    return done


async def read_now(api: Api, scope: Scope, meter_id: str, idempotency_key: str | None) -> Command:
    """Ask acquisition to read ``meter_id`` now; the reading arrives on mf.readings."""
    meter = find(scope, api.views.meters, meter_id, "meter")
    commands = await request_commands(
        api, scope, meter.project_id, [meter.meter_id], Action.READ, "on-demand read", {}, idempotency_key
    )
    return commands[0]
