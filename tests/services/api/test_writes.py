"""Writes through the API land as facts and read back at once: tariffs (versions), accounts (开户),
commands (single, batch, idempotent) and on-demand reads."""

from __future__ import annotations

import uuid

from libs.events import CommandAcknowledged, CommandSent
from tests.services.api.conftest import Harness, seed
from tests.services.api.test_auth import assert_problem


async def test_operator_publishes_tariff_versions_and_opens_an_account(harness: Harness) -> None:
    h = harness
    project = f"pw-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    _, op = await h.user(("operator",), (project,))
    tariff = {"project_id": project, "tariff_id": "t2", "name": "tou", "effective_from": "2024-04-01T00:00:00+08:00",
              "definition": {"kind": "single", "price_fen": "60"}}  # fmt: skip
    v1 = await h.client.post("/tariffs", headers=op, json=tariff)
    assert v1.status_code == 201, v1.text
    v2 = await h.client.post(
        "/tariffs", headers=op, json=tariff | {"definition": {"kind": "single", "price_fen": "65"}}
    )
    assert [v["version"] for v in v2.json()["versions"]] == [1, 2]
    assert v2.json()["versions"][1]["definition"]["price_fen"] == "65"

    body = {
        "project_id": project,
        "account_id": "a1",
        "meter_ids": ["m1"],
        "tariff_id": "t2",
        "holder": "Zhang",
    }
    opened = await h.client.post("/accounts", headers=op, json=body)
    assert opened.status_code == 201, opened.text
    assert opened.json()["balance_fen"] == 0 and opened.json()["opened_by"].startswith("u-")
    assert_problem(await h.client.post("/accounts", headers=op, json=body), 409)
    taken = await h.client.post(
        "/accounts", headers=op, json=body | {"account_id": "a2", "meter_ids": ["m0"]}
    )
    assert_problem(taken, 409)  # m0 belongs to a0
    unknown = await h.client.post(
        "/accounts", headers=op, json=body | {"account_id": "a3", "meter_ids": ["m9"]}
    )
    assert_problem(unknown, 422)
    meter = await h.client.get("/meters/m1", headers=op)
    assert meter.json()["account_id"] == "a1" and "uninitialised" not in meter.json()["states"]


async def test_commands_single_batch_idempotent_and_status(harness: Harness) -> None:
    h = harness
    project = f"pc-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    _, eng = await h.user(("engineer",), (project,))
    key = {"Idempotency-Key": f"trip-{uuid.uuid4().hex}"}
    trip = {"project_id": project, "meter_id": "m0", "action": "trip", "reason": "arrears"}
    one = await h.client.post("/commands", headers=eng | key, json=trip)
    assert one.status_code == 202, one.text
    assert one.headers["location"] == f"/commands/{one.json()['command_id']}"
    again = await h.client.post("/commands", headers=eng | key, json=trip)
    assert again.json()["command_id"] == one.json()["command_id"]
    command_id = one.json()["command_id"]
    await h.publish(
        CommandSent(project_id=project, subject_id="m0", command_id=command_id, meter_id="m0", attempt=1),
        CommandAcknowledged(project_id=project, subject_id="m0", command_id=command_id, meter_id="m0"),
    )
    await h.until(lambda: h.views.commands[(project, command_id)].status == "acknowledged" or None)
    status = await h.client.get(f"/commands/{command_id}", headers=eng)
    assert status.json()["status"] == "acknowledged" and status.json()["attempts"] == 1
    tripped = await h.client.get("/meters", headers=eng, params={"project_id": project, "state": "tripped"})
    assert [m["meter_id"] for m in tripped.json()["items"]] == ["m0"]

    batch = await h.client.post(
        "/commands/batch",
        headers=eng,
        json={"project_id": project, "meter_ids": ["m0", "m1"], "action": "valve_close"},
    )
    assert batch.status_code == 202 and [c["meter_id"] for c in batch.json()] == ["m0", "m1"]
    assert len({c["params"]["batch_id"] for c in batch.json()}) == 1
    bad = await h.client.post("/commands/batch", headers=eng, json={"project_id": project, "meter_ids": ["m0", "zz"],
                                                                   "action": "trip"})  # fmt: skip
    assert_problem(bad, 422)
    read = await h.client.post("/meters/m1/read", headers=eng)
    assert read.status_code == 202 and read.json()["action"] == "read" and read.json()["meter_id"] == "m1"
    listed = await h.client.get("/commands", headers=eng, params={"project_id": project, "meter_id": "m1"})
    assert {c["action"] for c in listed.json()["items"]} == {"valve_close", "read"}
