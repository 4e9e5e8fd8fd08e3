"""A project's allowance plans (``PUT/GET /projects/{id}/allowance-plans``): set, replaced, stopped,
checked (problem+json 422), scoped to the caller's projects, and published as the fact billing
follows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.events import AccountOpened
from libs.events.billing import AllowanceCycle, AllowancePlanSet
from tests.services.api.conftest import Harness, seed
from tests.services.api.test_auth import assert_problem

SEMESTERS = {"amount_fen": 3000, "cycle": "yearly", "starts": ["09-01", "02-20"], "tariff_ids": ["t1"],
             "reason": "free quota each semester"}  # fmt: skip


async def test_a_plan_is_set_read_replaced_and_stopped(harness: Harness) -> None:
    h, api = harness, harness.app.state.api
    project = f"pa-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    name, admin = await h.user(("admin",), (project,))
    path = f"/projects/{project}/allowance-plans"
    now = datetime.now(UTC).replace(microsecond=0)
    api.clock = lambda: now

    async def put(plan_id: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await h.client.put(f"{path}/{plan_id}", headers=admin, json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    semester = await put("semester", SEMESTERS)
    assert semester == {
        "project_id": project, "plan_id": "semester", "amount_fen": 3000, "cycle": "yearly",
        "starts": ["02-20", "09-01"], "timezone": "Asia/Shanghai", "tariff_ids": ["t1"], "account_ids": [],
        "effective_from": None, "effective_at": semester["effective_at"], "active": True, "operator_id": name,
        "reason": "free quota each semester", "updated_at": semester["updated_at"],
    }  # fmt: skip
    assert (
        datetime.fromisoformat(semester["effective_at"])
        == datetime.fromisoformat(semester["updated_at"])
        == now
    )
    fact = h.app.state.api.readmodel.allowance_plans[(project, "semester")]
    assert isinstance(fact, AllowancePlanSet) and fact.TOPIC == "mf.billing" and fact.subject_id == "semester"
    assert (fact.cycle, fact.starts, fact.tz) == (AllowanceCycle.YEARLY, ("02-20", "09-01"), "Asia/Shanghai")

    api.clock = lambda: now + timedelta(hours=1)
    assert await put("semester", SEMESTERS) == semester  # the plan in force: nothing published
    assert h.app.state.api.readmodel.allowance_plans[(project, "semester")] is fact
    start = now + timedelta(days=3)
    monthly = await put(
        "monthly", {"amount_fen": 500, "cycle": "monthly", "account_ids": ["a0", "a0"], "timezone": "UTC",
                    "effective_from": start.isoformat()},
    )  # fmt: skip
    assert monthly["account_ids"] == ["a0"] and datetime.fromisoformat(monthly["effective_at"]) == start

    listed = (await h.client.get(path, headers=admin)).json()
    assert [p["plan_id"] for p in listed["items"]] == ["monthly", "semester"] and listed["total"] == 2
    assert (await h.client.get(f"{path}/monthly", headers=admin)).json() == monthly

    stopped = await put("semester", SEMESTERS | {"active": False, "amount_fen": 2000})
    assert (stopped["active"], stopped["amount_fen"]) == (False, 2000)
    assert datetime.fromisoformat(stopped["updated_at"]) == now + timedelta(hours=1)
    assert (await h.client.get(f"{path}/semester", headers=admin)).json() == stopped


async def test_bad_plans_are_refused_with_a_problem(harness: Harness) -> None:
    h, api = harness, harness.app.state.api
    project = f"pb-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    postpaid = AccountOpened(project_id=project, subject_id="post", account_id="post", mode="postpaid",
                             meter_ids=("m1",), tariff_id="t1", holder="h", opened_by="test")  # fmt: skip
    await h.publish(postpaid)
    await h.until(lambda: (project, "post") in h.views.accounts or None)
    _, admin = await h.user(("admin",), (project,))
    path = f"/projects/{project}/allowance-plans/p1"
    now = datetime.now(UTC)
    api.clock = lambda: now
    refused = {
        "no starts": ({"cycle": "yearly", "starts": []}, "needs one or more starts"),
        "starts on a monthly plan": ({"cycle": "monthly"}, "takes no starts"),
        "not every year": ({"starts": ["02-29"]}, "not a day of every year"),
        "unknown zone": ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        "unknown tariff": ({"tariff_ids": ["t9"]}, "tariff 't9' is not published"),
        "unknown account": ({"account_ids": ["a9"]}, "account 'a9' is not open"),
        "postpaid account": ({"account_ids": ["post"]}, "is postpaid"),
        "backdated": ({"effective_from": (now - timedelta(hours=1)).isoformat()}, "in the past"),
    }
    for case, (change, detail) in refused.items():
        response = await h.client.put(path, headers=admin, json=SEMESTERS | change)
        body = assert_problem(response, 422)
        assert detail in str(body["detail"]), (case, body)
    for change in ({"amount_fen": 0}, {"starts": ["9-1"]}, {"cycle": "weekly"}, {"surprise": 1}):
        assert_problem(await h.client.put(path, headers=admin, json=SEMESTERS | change), 422)
    assert_problem(await h.client.put(f"/projects/{project}/allowance-plans/-bad", headers=admin,
                                      json=SEMESTERS), 422)  # fmt: skip
    assert_problem(await h.client.get(path, headers=admin), 404)  # nothing was set
    assert (project, "p1") not in api.readmodel.allowance_plans


async def test_plans_are_scoped_to_the_callers_projects_and_roles(harness: Harness) -> None:
    h = harness
    mine, theirs = f"pm-{uuid.uuid4().hex[:8]}", f"pt-{uuid.uuid4().hex[:8]}"
    await seed(h, mine)
    await seed(h, theirs)
    _, admin = await h.user(("admin",), (theirs,))
    assert (
        await h.client.put(f"/projects/{theirs}/allowance-plans/q", headers=admin, json=SEMESTERS)
    ).is_success
    _, operator = await h.user(("operator",), (mine,))
    _, viewer = await h.user(("viewer",), (mine,))
    _, cashier = await h.user(("cashier",), (mine,))
    for path in (f"/projects/{theirs}/allowance-plans", f"/projects/{theirs}/allowance-plans/q"):
        assert_problem(await h.client.get(path, headers=operator), 404)  # exists, but not for them
    assert_problem(await h.client.put(f"/projects/{theirs}/allowance-plans/q", headers=operator,
                                      json=SEMESTERS), 404)  # fmt: skip
    assert (
        await h.client.put(f"/projects/{mine}/allowance-plans/q", headers=operator, json=SEMESTERS)
    ).is_success
    assert (await h.client.get(f"/projects/{mine}/allowance-plans", headers=viewer)).json()["total"] == 1
    assert_problem(
        await h.client.put(f"/projects/{mine}/allowance-plans/q", headers=viewer, json=SEMESTERS), 403
    )
    assert_problem(await h.client.get(f"/projects/{mine}/allowance-plans", headers=cashier), 403)
