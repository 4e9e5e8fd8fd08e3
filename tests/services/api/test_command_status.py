"""A command's status (C7): control's retries count for the command they retry, and a failure is
final only once control abandons the command (``CommandAbandoned``) — the API restates no retry
rule. The fold alone, then the routes on the real broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.events import (
    CommandAbandoned,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    CommandSent,
    CommandTimedOut,
    Event,
    Outcome,
)
from libs.events.control import Action
from services.api.views import Views
from tests.services.api.conftest import Harness, seed
from tests.services.api.test_auth import assert_problem

P = "p1"
T = datetime(2026, 11, 21, 9, tzinfo=UTC)


def at(n: int) -> datetime:
    return T + timedelta(seconds=n)


def on(command_id: str, cls: type[Any], n: int, **kw: Any) -> Any:
    return cls(project_id=P, subject_id="m0", command_id=command_id, meter_id="m0", time=at(n), **kw)


def request(command_id: str, n: int = 0, **params: str) -> CommandRequested:
    return on(command_id, CommandRequested, n, action=Action.CLOSE, requested_by="policy:prepaid",
              reason="recharged", params=params)  # fmt: skip


def failure(command_id: str, n: int, reason: str = "no_reply: 3 tries") -> CommandFailed:
    return on(command_id, CommandFailed, n, attempt=1, reason=reason, will_retry=False)  # acquisition's


def abandoned(
    command_id: str,
    n: int,
    outcome: Outcome = Outcome.FAILED,
    reason: str = "no_reply: 3 tries",
    attempts: int = 3,
) -> CommandAbandoned:
    return on(command_id, CommandAbandoned, n, action=Action.CLOSE, outcome=outcome, attempts=attempts,
              reason=reason, requested_by="policy:prepaid")  # fmt: skip


def retried_until_abandoned() -> list[Event]:
    """c1 fails, is retried twice by control (its attempts a2, a3), and control gives up."""
    return [
        request("c1"), on("c1", CommandSent, 1, attempt=1), failure("c1", 2),
        request("a2", 12, retry_of="c1", attempt="2"), on("a2", CommandSent, 13, attempt=1), failure("a2", 14),
        request("a3", 34, retry_of="c1", attempt="3"), on("a3", CommandSent, 35, attempt=1),
        on("c1", CommandTimedOut, 65, attempt=3, deadline=at(65)), abandoned("c1", 65, Outcome.TIMED_OUT),
    ]  # fmt: skip


def fold(events: list[Event], views: Views | None = None) -> Views:
    views = views or Views()
    for e in events:
        views.apply(e)
    return views


def status(views: Views, command_id: str = "c1") -> tuple[str, int, bool, datetime | None]:
    c = views.commands[(P, command_id)]
    return c.status, c.attempts, c.final, c.ended_at


def test_a_failure_is_not_final_until_control_abandons_the_command() -> None:
    history = retried_until_abandoned()
    views = fold(history[:3])
    assert status(views) == ("failed", 1, False, None)  # control may retry it
    fold(history[3:5], views)
    assert status(views) == ("sent", 2, False, None)  # attempt 2 counts for c1
    fold(history[5:9], views)
    assert status(views) == ("timed_out", 3, False, None)
    fold(history[9:], views)
    assert status(views) == ("timed_out", 3, True, at(65))
    assert views.commands[(P, "c1")].detail == "no_reply: 3 tries"
    assert list(views.commands) == [(P, "c1")]  # the attempts are no commands of their own
    assert status(fold(history + history)) == status(views)  # redelivered: the same


def test_a_refusal_abandoned_at_once_and_a_late_acknowledgement() -> None:
    views = fold([request("c1"), on("c1", CommandSent, 1, attempt=1), failure("c1", 2, "rejected: relay fault"),
                  abandoned("c1", 2, reason="rejected: relay fault", attempts=1)])  # fmt: skip
    assert status(views) == ("failed", 1, True, at(2))
    fold([on("c1", CommandSent, 3, attempt=1)], views)
    assert status(views) == ("failed", 1, True, at(2))  # an ended command is not reopened
    fold([on("c1", CommandAcknowledged, 9, confirmed_state="closed")], views)
    assert status(views) == ("acknowledged", 1, True, at(2))  # the meter did act, late


def test_acknowledged_and_superseded_commands_are_final() -> None:
    views = fold([request("c1"), on("c1", CommandSent, 1, attempt=1), on("c1", CommandAcknowledged, 2)])
    assert status(views) == ("acknowledged", 1, True, at(2))
    fold([request("c2", 3), abandoned("c2", 4, Outcome.SUPERSEDED, "superseded by c3", attempts=0)], views)
    assert status(views, "c2") == ("superseded", 0, True, at(4))


async def test_the_routes_show_whether_a_failed_command_is_final(harness: Harness) -> None:
    h = harness
    project = f"pf-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    _, eng = await h.user(("engineer",), (project,))
    body = {"project_id": project, "meter_id": "m0", "action": "close", "reason": "recharged"}
    refused = await h.client.post("/commands", headers=eng, json=body | {"params": {"retry_of": "x"}})
    assert_problem(refused, 422)  # control's parameter
    issued = await h.client.post("/commands", headers=eng, json=body)
    assert issued.status_code == 202, issued.text
    assert (issued.json()["final"], issued.json()["ended_at"]) == (False, None)
    cid = issued.json()["command_id"]

    def ours(e: Any) -> Event:
        update = {"project_id": project, "command_id": cid if e.command_id == "c1" else e.command_id}
        if isinstance(e, CommandRequested):
            update["params"] = {**e.params, "retry_of": cid}
        return e.model_copy(update=update)

    history = [ours(e) for e in retried_until_abandoned()[1:]]
    await h.publish(*history[:2])
    await h.until(lambda: h.views.commands[(project, cid)].status == "failed" or None)
    view = (await h.client.get(f"/commands/{cid}", headers=eng)).json()
    assert (view["status"], view["final"], view["detail"]) == ("failed", False, "no_reply: 3 tries")
    await h.publish(*history[2:])
    await h.until(lambda: h.views.commands[(project, cid)].final or None)
    view = (await h.client.get(f"/commands/{cid}", headers=eng)).json()
    assert (view["status"], view["attempts"], view["final"]) == ("timed_out", 3, True)
    assert datetime.fromisoformat(view["ended_at"]) == at(65)

    def listed(**params: str) -> Any:
        return h.client.get("/commands", headers=eng, params={"project_id": project, **params})

    given_up = (await listed(status="timed_out", final="true")).json()["items"]
    assert [c["command_id"] for c in given_up] == [cid]
    assert cid not in {c["command_id"] for c in (await listed(final="false")).json()["items"]}
    assert {c["command_id"] for c in (await listed()).json()["items"]} == {cid, f"cmd-{project}"}
