"""Settings written through the API are the ones the notify service follows: the API publishes the
``SubscriptionSet``, the decider folds it as it comes off the broker, and the sender sends — or
does not — to the local provider server accordingly; another project's account with the same
ids keeps its own holder and settings."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from libs.events import (
    AccountOpened,
    AlarmRaised,
    CommandAbandoned,
    CommandFailed,
    CommandRequested,
    NotificationRequested,
)
from libs.events.billing import AlarmKind, BillingMode
from libs.events.control import Action, Outcome
from libs.events.topics import BILLING, NOTIFICATIONS
from libs.stack.broker import EmbeddedBroker
from services.notify.testing.provider_server import ProviderServer
from tests.services.api.conftest import running
from tests.services.notify.helpers import eventually, read_topic
from tests.services.notify.test_sender import PHONE, Clock, Service
from tests.services.notify.test_sender import settings as notify_settings

pytestmark = pytest.mark.slow
PROJECT = "p-settings"
OTHER = "p-other"  # has an account a1 with meter m1 too
OTHER_PHONE = "+8613900139000"


def alarm(clock: Clock, kind: AlarmKind, balance_fen: int, project: str = PROJECT) -> AlarmRaised:
    return AlarmRaised(
        project_id=project, subject_id="a1", alarm_id=f"al-{kind}", kind=kind, severity=1, message="",
        details={"balance_fen": str(balance_fen)}, time=clock(),
    )  # fmt: skip


async def test_settings_put_through_the_api_decide_what_is_sent(
    fresh_broker: EmbeddedBroker, store: Client, providers: ProviderServer
) -> None:
    bootstrap, clock = fresh_broker.bootstrap, Clock()
    opened = AccountOpened(
        project_id=PROJECT, subject_id="a1", account_id="a1", mode=BillingMode.PREPAID, meter_ids=("m1",),
        tariff_id="t1", holder="李四", phone=PHONE, wechat_openid="oLi4", opened_by="test",
    )  # fmt: skip
    async with running(bootstrap, store) as api:
        await api.publish(opened)
        await api.until(lambda: api.views.accounts.get((PROJECT, "a1")))
        _, operator = await api.user(("operator",), (PROJECT,))
        body = {
            "channels": ["wechat"],
            "templates": ["low_balance_1", "power_restore_failed"],
            "locale": "en",
        }
        put = await api.client.put("/accounts/a1/notifications", headers=operator, json=body)
        assert put.status_code == 200, put.text

    # what the notify service's decider reads: the account on mf.billing, the settings on
    # mf.notifications (each topic in its order; the decider copes with either arriving first)
    facts = [e for topic in (BILLING.name, NOTIFICATIONS.name) for _, e in await read_topic(bootstrap, topic)]
    assert [e.TYPE for e in facts] == ["billing.v1.account_opened", "notify.v1.subscription_set"]
    close = CommandRequested(
        project_id=PROJECT, subject_id="m1", command_id="cmd-1", meter_id="m1", action=Action.CLOSE,
        requested_by="policy:arrears", reason="recharged", time=clock(),
    )  # fmt: skip
    refused = CommandFailed(
        project_id=PROJECT, subject_id="m1", command_id="cmd-1", meter_id="m1", attempt=1,
        reason="rejected: relay fault", will_retry=False, time=clock(),
    )  # fmt: skip
    gave_up = CommandAbandoned(  # control's verdict on the refusal
        project_id=PROJECT, subject_id="m1", command_id="cmd-1", meter_id="m1", action=Action.CLOSE,
        outcome=Outcome.FAILED, attempts=1, reason=refused.reason, requested_by=close.requested_by,
        causation_id=refused.event_id, time=clock(),
    )  # fmt: skip
    other = opened.model_copy(
        update={
            "event_id": "opened-p-other",
            "project_id": OTHER,
            "holder": "王五",
            "phone": OTHER_PHONE,
            "wechat_openid": "oWang5",
        }
    )
    async with httpx.AsyncClient(timeout=2.0) as client:
        service = Service(bootstrap, notify_settings(providers), client, clock)
        async with service.running() as sender:
            await service.feed(
                *facts,
                other,  # after the settings: it must not take over a1 of PROJECT
                alarm(clock, AlarmKind.BALANCE_LEVEL1, 1230),
                alarm(clock, AlarmKind.ARREARS, -500),  # not subscribed
                alarm(clock, AlarmKind.ARREARS, -500, OTHER),  # every notice, both channels
                close,
                refused,
                gave_up,
            )
            await eventually(lambda: sender.stats.delivered == 4, what="three WeChat messages and an SMS")
            await asyncio.sleep(0.5)
    requested = [
        e for _, e in await read_topic(bootstrap, NOTIFICATIONS.name) if isinstance(e, NotificationRequested)
    ]
    assert sorted((r.project_id, r.channel, r.template, r.locale) for r in requested) == [
        (OTHER, "sms", "arrears", "zh"), (OTHER, "wechat", "arrears", "zh"),
        (PROJECT, "wechat", "low_balance_1", "en"), (PROJECT, "wechat", "power_restore_failed", "en"),
    ]  # fmt: skip
    others = sorted((r.provider, r.to) for r in providers.state.received if r.template.endswith("ARREARS"))
    assert others == [("aliyun", OTHER_PHONE), ("wechat", "oWang5")]
    received = {r.template: r for r in providers.state.received if not r.template.endswith("ARREARS")}
    assert sorted(received) == ["TPL_LOW_BALANCE_1", "TPL_POWER_RESTORE_FAILED"]  # WeChat only
    assert all(r.provider == "wechat" and r.to == "oLi4" for r in received.values())
    assert (
        received["TPL_LOW_BALANCE_1"].params["first"]
        == "[李四] Low balance: 12.30 yuan left. Please recharge soon."
    )
    assert received["TPL_POWER_RESTORE_FAILED"].params["first"] == (
        "[李四] Power could not be restored to meter m1; our staff have been told."
    )

    # the API's send log (GET /notifications) shows what the sender did, as notify's own log does
    fields = ("project_id", "notification_id", "channel", "recipient", "template", "status", "attempts",
              "provider", "provider_message_id")  # fmt: skip
    own = sorted(tuple(row[f] for f in fields) for row in sender.sendlog.query(limit=100))
    async with running(bootstrap, store) as api:
        _, cashier = await api.user(("cashier",), (PROJECT, OTHER))
        response = await api.client.get("/notifications", headers=cashier)
        assert response.status_code == 200, response.text
        shown = sorted(tuple(item[f] for f in fields) for item in response.json()["items"])
        _, theirs = await api.user(("cashier",), (OTHER,))
        other_rows = (await api.client.get("/notifications", headers=theirs)).json()["items"]
    assert len(shown) == 4 and shown == own
    assert {row[5] for row in shown} == {"delivered"} and all(row[8] for row in shown)
    assert sorted((i["channel"], i["recipient"]) for i in other_rows) == [
        ("sms", OTHER_PHONE),
        ("wechat", "oWang5"),
    ]
