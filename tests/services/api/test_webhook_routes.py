"""Webhook subscriptions end to end: an integrator subscribes a real HTTP receiver, facts of its
project arrive signed with the secret it was given, other projects' facts and identity facts do
not, and the delivery log shows the outcome."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI, Request, Response

from libs.events import AlarmRaised, BalanceChanged, UserDisabled
from libs.events.iam import PLATFORM
from libs.stack.broker import free_port
from libs.stack.runtime import HttpServer
from services.api.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify_signature
from tests.services.api.conftest import Harness, running
from tests.services.api.test_auth import assert_problem

pytestmark = pytest.mark.slow


class Receiver:
    """An integrator's endpoint: a real HTTP server recording what it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[dict[str, str], bytes]] = []
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body()))
            return Response(status_code=204)

        self.server = HttpServer(app, "127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
async def delivering(bootstrap: str, store: Client) -> AsyncIterator[Harness]:
    async with running(bootstrap, store, api_webhooks_deliver=True) as h:
        await asyncio.wait_for(h.app.state.api.deliverer.assigned.wait(), 60)
        yield h


async def test_subscribed_facts_arrive_signed_and_nothing_else(delivering: Harness) -> None:
    h = delivering
    receiver = Receiver()
    await receiver.server.start()
    try:
        run = uuid.uuid4().hex[:8]
        mine, other = f"pw-{run}", f"px-{run}"
        _, admin = await h.user(("admin",), (mine,))
        refused = await h.client.post("/webhooks", headers=admin, json={
            "project_ids": [other], "event_types": ["billing.*"], "url": receiver.url})  # fmt: skip
        assert_problem(refused, 404)
        created = await h.client.post("/webhooks", headers=admin, json={
            "project_ids": [mine], "event_types": ["billing.v1.balance_changed", "billing.v1.alarm_*"],
            "url": receiver.url})  # fmt: skip
        assert created.status_code == 201, created.text
        hook = created.json()
        secret = hook["secret"]
        listed = await h.client.get("/webhooks", headers=admin)
        assert [w["secret"] for w in listed.json()["items"]] == [None]

        facts = [
            BalanceChanged(project_id=mine, subject_id="a0", account_id="a0", delta_fen=100, balance_fen=100,
                           reason="recharge"),
            BalanceChanged(project_id=other, subject_id="a0", account_id="a0", delta_fen=7, balance_fen=7,
                           reason="recharge"),
            AlarmRaised(project_id=mine, subject_id="a0", alarm_id=f"al-{run}", kind="arrears", severity=3,
                        message="arrears"),
            UserDisabled(project_id=PLATFORM, subject_id=str(uuid.uuid4()), disabled_by="x"),
        ]  # fmt: skip
        await h.publish(*facts)
        for _ in range(200):
            if len(receiver.received) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # nothing else may follow
        assert sorted(headers[EVENT_HEADER.lower()] for headers, _ in receiver.received) == [
            "billing.v1.alarm_raised", "billing.v1.balance_changed"]  # fmt: skip
        for headers, body in receiver.received:
            verify_signature(secret, headers[SIGNATURE_HEADER.lower()], body)
            assert headers[DELIVERY_HEADER.lower()] in {facts[0].event_id, facts[2].event_id}
            assert f'"project_id":"{mine}"'.encode() in body

        log = await h.client.get(f"/webhooks/{hook['webhook_id']}/deliveries", headers=admin)
        assert {(d["status"], d["last_status_code"]) for d in log.json()} == {("delivered", 204)}
        removed = await h.client.delete(f"/webhooks/{hook['webhook_id']}", headers=admin)
        assert removed.status_code == 200 and removed.json()["active"] is False
    finally:
        await receiver.server.stop()
