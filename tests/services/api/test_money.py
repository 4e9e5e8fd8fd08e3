"""Money movements with an Idempotency-Key: applied once, visible in the next balance read.

The slow test runs the real billing worker (a subprocess, as in production) on a broker of its
own; the fast ones check the API's side alone, where nothing books the movement (202 + Location).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from libs.events import BalanceChanged
from libs.stack.broker import EmbeddedBroker
from tests.services.api.conftest import Harness, seed, site, with_billing
from tests.services.api.test_auth import assert_problem


async def test_without_billing_a_recharge_is_202_with_a_status_link_and_keys_are_checked(
    harness: Harness,
) -> None:
    h = harness
    project = f"pm-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    _, cashier = await h.user(("cashier",), (project,))
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = await h.client.post("/accounts/a0/recharges", headers=cashier | key, json={"amount_fen": 1000})
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["status"] == "accepted" and body["balance_fen"] is None and body["amount_fen"] == 1000
    assert first.headers["location"] == f"/money-movements/{body['id']}"
    again = await h.client.post("/accounts/a0/recharges", headers=cashier | key, json={"amount_fen": 1000})
    assert again.status_code == 202 and again.json()["id"] == body["id"]
    conflict = await h.client.post("/accounts/a0/recharges", headers=cashier | key, json={"amount_fen": 999})
    assert_problem(conflict, 409)
    _, operator = await h.user(("operator",), (project,))
    reused = await h.client.post("/accounts/a0/refunds", headers=operator | key, json={"amount_fen": 1000})
    assert_problem(reused, 409)
    status = await h.client.get(first.headers["location"], headers=operator)
    assert status.status_code == 200 and status.json()["status"] == "accepted"
    assert sum(1 for m in h.views.money.values() if m.idempotency_key == key["Idempotency-Key"]) == 1
    missing = await h.client.post("/accounts/a0/recharges", headers=cashier, json={"amount_fen": 1000})
    assert_problem(missing, 422)  # no Idempotency-Key
    negative = await h.client.post("/accounts/a0/recharges", headers=cashier | key, json={"amount_fen": -5})
    assert_problem(negative, 422)


@pytest.mark.slow
async def test_recharge_posted_twice_is_applied_once_and_read_back_at_once(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async with with_billing(fresh_broker.bootstrap, tmp_path / "billing") as h:
        await _recharge_flow(h)


async def _recharge_flow(h: Harness) -> None:
    project = "p-billing"
    await h.publish(*[e for e in site(project) if not isinstance(e, BalanceChanged)])
    await h.until(lambda: h.views.accounts.get((project, "a0")))
    _, cashier = await h.user(("cashier",), (project,))
    key = {"Idempotency-Key": "pay-20240301-0001"}
    first = await h.client.post(
        "/accounts/a0/recharges", headers=cashier | key, json={"amount_fen": 10_000, "channel": "wechat"}
    )
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "applied" and first.json()["balance_fen"] == 10_000
    balance = await h.client.get("/accounts/a0/balance", headers=cashier)
    assert balance.json()["balance_fen"] == 10_000  # the very next read sees it
    retry = await h.client.post(
        "/accounts/a0/recharges", headers=cashier | key, json={"amount_fen": 10_000, "channel": "wechat"}
    )
    assert retry.status_code == 201 and retry.json() == first.json()
    second = await h.client.post(
        "/accounts/a0/recharges", headers=cashier | {"Idempotency-Key": "pay-20240301-0002"},
        json={"amount_fen": 2_500},
    )  # fmt: skip
    assert second.status_code == 201 and second.json()["balance_fen"] == 12_500
    assert (await h.client.get("/accounts/a0/balance", headers=cashier)).json()["balance_fen"] == 12_500
