"""Payment notifications through the API: a verified WeChat Pay / Alipay notice credits the amount
paid to the account named in the signed attach, once however often the provider delivers it;
anything unverified credits nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from clickhouse_connect.driver.client import Client

from services.api.context import Notifiers
from services.api.payment_notices import order_attach
from services.api.payments import AlipayNotifier, WechatPayNotifier
from services.api.payments.testing import FakeAlipay, FakeWechatPay
from tests.services.api.conftest import Harness, running, seed

WECHAT, ALIPAY = FakeWechatPay(), FakeAlipay()


@pytest.fixture
async def paying(bootstrap: str, store: Client) -> AsyncIterator[Harness]:
    notifiers = Notifiers(
        WechatPayNotifier(WECHAT.api_v3_key, {WECHAT.serial: WECHAT.public_key}, mchid=WECHAT.mchid),
        AlipayNotifier(ALIPAY.app_id, ALIPAY.public_key, seller_id=ALIPAY.seller_id),
    )
    async with running(bootstrap, store, notifiers) as h:
        yield h


def _credited(h: Harness, project: str) -> list[tuple[str, int, str, str | None]]:
    return sorted(
        (m.details["channel"], m.amount_fen, m.operator_id, m.details.get("payment_order_id"))
        for m in h.views.money.values()
        if m.project_id == project
    )


async def test_wechat_notice_credits_once_and_forgeries_credit_nothing(paying: Harness) -> None:
    h = paying
    project = f"pp-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    txn = WECHAT.transaction("order-1", 3_000, attach=order_attach(project, "a0"))
    headers, body = WECHAT.notification(txn)
    for _ in range(2):  # WeChat Pay retries until acknowledged
        ack = await h.client.post("/payments/wechat/notify", headers=headers, content=body)
        assert ack.status_code == 200 and ack.json()["code"] == "SUCCESS", ack.text
    await h.until(lambda: _credited(h, project) or None)
    assert _credited(h, project) == [("wechat", 3_000, "payment:wechat", "order-1")]

    forged_headers, forged_body = FakeWechatPay(
        api_v3_key=WECHAT.api_v3_key, serial=WECHAT.serial
    ).notification(WECHAT.transaction("order-2", 999_999, attach=order_attach(project, "a0")))
    forged = await h.client.post("/payments/wechat/notify", headers=forged_headers, content=forged_body)
    assert forged.status_code == 401 and forged.json()["code"] == "FAIL"
    unpaid_headers, unpaid_body = WECHAT.notification(
        WECHAT.transaction("order-3", 100, trade_state="NOTPAY", attach=order_attach(project, "a0"))
    )
    assert (
        await h.client.post("/payments/wechat/notify", headers=unpaid_headers, content=unpaid_body)
    ).status_code == 400
    stranger_headers, stranger_body = WECHAT.notification(
        WECHAT.transaction("order-4", 100, attach=order_attach(project, "no-such-account"))
    )
    retry_later = await h.client.post(
        "/payments/wechat/notify", headers=stranger_headers, content=stranger_body
    )
    assert retry_later.status_code == 500  # money was paid: never drop it, let WeChat Pay retry
    assert _credited(h, project) == [("wechat", 3_000, "payment:wechat", "order-1")]


async def test_alipay_success_then_finished_credits_once(paying: Harness) -> None:
    h = paying
    project = f"pq-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    paid = ALIPAY.notification("order-9", "12.34", passback=order_attach(project, "a0"))
    finished = ALIPAY.sign(paid | {"trade_status": "TRADE_FINISHED"})
    for params in (paid, paid, finished):
        ack = await h.client.post(
            "/payments/alipay/notify", content=ALIPAY.form_body(params),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert ack.status_code == 200 and ack.text == "success"
    await h.until(lambda: _credited(h, project) or None)
    assert _credited(h, project) == [("alipay", 1_234, "payment:alipay", "order-9")]
    tampered = paid | {"total_amount": "9999.00"}
    ack = await h.client.post("/payments/alipay/notify", content=ALIPAY.form_body(tampered))
    assert ack.text == "failure"
    assert _credited(h, project) == [("alipay", 1_234, "payment:alipay", "order-9")]


async def test_unconfigured_provider_is_a_404_problem(harness: Harness) -> None:
    response = await harness.client.post("/payments/wechat/notify", content=b"{}")
    assert response.status_code == 404 and response.json()["detail"] == "WeChat Pay is not configured"
