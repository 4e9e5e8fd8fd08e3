"""Tenant isolation: two projects with the same ids (m0, m1, a0, t1, c1); a principal of one never
sees the other's data in lists, id lookups, balances, readings, reports or writes — and a
head-office principal of both sees both, disambiguating equal ids by project."""

from __future__ import annotations

import uuid

from libs.events import AccountOpened, RechargeAccepted
from tests.services.api.conftest import Harness, seed, site_readings
from tests.services.api.test_auth import assert_problem

LISTS = [
    "/projects",
    "/concentrators",
    "/meters",
    "/accounts",
    "/balances",
    "/tariffs",
    "/commands",
    "/alarms",
]


async def test_a_principal_of_one_project_never_sees_another(harness: Harness) -> None:
    h = harness
    run = uuid.uuid4().hex[:8]
    a, b = f"pa-{run}", f"pb-{run}"
    await seed(h, a)
    await seed(h, b)
    h.readings(site_readings(a, "100") + site_readings(b, "900"))
    other = RechargeAccepted(project_id=b, subject_id="a0", account_id="a0", amount_fen=500,
                             idempotency_key=f"k-{run}", operator_id="op", channel="cash")  # fmt: skip
    await h.publish(other)
    await h.until(lambda: h.views.money.get(other.event_id))
    _, mine = await h.user(("admin",), (a,))

    for path in LISTS:
        response = await h.client.get(path, headers=mine, params={"limit": 500})
        assert response.status_code == 200, (path, response.text)
        items = response.json()["items"]
        assert items, path
        assert {i["project_id"] for i in items} == {a}, path
        assert_problem(await h.client.get(path, headers=mine, params={"project_id": b}), 404)

    for path in ["/meters/m0", "/accounts/a0", "/accounts/a0/balance", "/tariffs/t1", f"/commands/cmd-{a}"]:
        response = await h.client.get(path, headers=mine)
        assert response.status_code == 200 and response.json()["project_id"] == a, path
    assert (await h.client.get("/accounts/a0/balance", headers=mine)).json()["balance_fen"] == -150
    for path in [f"/commands/cmd-{b}", f"/projects/{b}", f"/money-movements/{other.event_id}"]:
        assert_problem(await h.client.get(path, headers=mine), 404)
    assert (await h.client.get(f"/projects/{a}", headers=mine)).json()["meters"] == 2

    span = {"start": "2024-03-01T00:00:00Z", "end": "2024-03-02T00:00:00Z"}
    readings = await h.client.get("/meters/m0/readings", headers=mine, params=span)
    assert readings.status_code == 200, readings.text
    assert [r["value"] for r in readings.json()] == ["100.000000", "101.000000", "102.000000"]
    assert_problem(
        await h.client.get("/meters/m0/readings", headers=mine, params={**span, "project_id": b}), 404
    )
    report = await h.client.get("/reports/accounts-opened", headers=mine, params={"project_id": b})
    assert_problem(report, 404)

    # writes into the other project are refused as if it did not exist
    assert_problem(await h.client.post("/tariffs", headers=mine, json={
        "project_id": b, "tariff_id": "t9", "name": "x", "effective_from": "2024-01-01T00:00:00Z",
        "definition": {"kind": "single", "price_fen": "1"}}), 404)  # fmt: skip
    assert_problem(await h.client.post("/commands", headers=mine, json={
        "project_id": b, "meter_id": "m0", "action": "trip"}), 404)  # fmt: skip
    recharge = await h.client.post(
        "/accounts/a0/recharges", headers={**mine, "Idempotency-Key": f"k-{run}"},
        json={"amount_fen": 500, "channel": "cash"},
    )  # fmt: skip
    assert recharge.status_code in (201, 202) and recharge.json()["project_id"] == a  # a's own a0, not b's
    assert recharge.json()["id"] != other.event_id  # the key is per project


async def test_head_office_sees_both_and_chooses_by_project(harness: Harness) -> None:
    h = harness
    run = uuid.uuid4().hex[:8]
    a, b, c = f"pa-{run}", f"pb-{run}", f"pc-{run}"
    for p in (a, b, c):
        await seed(h, p)
    _, office = await h.user(("viewer",), (a, b))
    meters = (await h.client.get("/meters", headers=office, params={"limit": 500})).json()["items"]
    assert {m["project_id"] for m in meters} == {a, b}
    assert_problem(await h.client.get("/meters/m0", headers=office), 409)  # m0 exists in both
    for p in (a, b):
        one = await h.client.get("/meters/m0", headers=office, params={"project_id": p})
        assert one.status_code == 200 and one.json()["project_id"] == p
    assert_problem(await h.client.get("/meters/m0", headers=office, params={"project_id": c}), 404)
    many = await h.client.get("/balances", headers=office, params={"account_id": ["a0", "zz"], "limit": 500})
    assert {(x["project_id"], x["balance_fen"]) for x in many.json()["items"]} == {(a, -150), (b, -150)}


async def test_meter_states_filter(harness: Harness) -> None:
    h = harness
    project = f"ps-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    _, viewer = await h.user(("viewer",), (project,))

    async def ids(state: str) -> list[str]:
        response = await h.client.get(
            "/meters", headers=viewer, params={"state": state, "project_id": project}
        )
        assert response.status_code == 200, response.text
        return [m["meter_id"] for m in response.json()["items"]]

    assert await ids("online") == ["m0"]
    assert await ids("lost-contact") == ["m1"]
    assert await ids("uninitialised") == ["m1"]
    assert await ids("arrears") == ["m0"]  # its account's arrears alarm
    assert await ids("alarm-1") == []
    assert await ids("tripped") == []
    assert_problem(await h.client.get("/meters", headers=viewer, params={"state": "purple"}), 422)


async def test_a_consumer_sees_only_its_own_accounts_and_meters(harness: Harness) -> None:
    h = harness
    project = f"pk-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    await h.publish(AccountOpened(project_id=project, subject_id="a1", account_id="a1", mode="prepaid",
                                  meter_ids=("m1",), tariff_id="t1", holder="neighbour", opened_by="test"))  # fmt: skip
    await h.until(lambda: h.views.accounts.get((project, "a1")))
    h.readings(site_readings(project, "5"))
    _, me = await h.user(("consumer",), (project,), accounts=("a0",))
    assert (await h.client.get("/accounts/a0/balance", headers=me)).json()["balance_fen"] == -150
    assert_problem(await h.client.get("/accounts/a1/balance", headers=me), 404)
    many = await h.client.get("/balances", headers=me, params={"limit": 500})
    assert [b["account_id"] for b in many.json()["items"]] == ["a0"]
    span = {"start": "2024-03-01T00:00:00Z", "end": "2024-03-02T00:00:00Z"}
    mine = await h.client.get("/meters/m0/readings", headers=me, params=span)
    assert mine.status_code == 200 and len(mine.json()) == 3
    assert_problem(await h.client.get("/meters/m1/readings", headers=me, params=span), 404)
    assert_problem(await h.client.get("/accounts", headers=me), 403)
