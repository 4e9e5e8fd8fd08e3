"""`meterflow notify` as a process on a real broker, sending to the local provider server: an
arrears alarm becomes one signed Aliyun SMS however often it is delivered, a recharge becomes a
WeChat template message, the send log answers over HTTP, and a restart re-sends nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from libs.events import AccountOpened, AlarmRaised, BalanceChanged, SubscriptionSet
from libs.events.billing import AlarmKind, BillingMode
from libs.events.notify import Channel
from libs.events.topics import CATALOGUE
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port
from services.notify.testing.provider_server import ProviderServer
from tests.processes import stop
from tests.services.notify.helpers import produce

pytestmark = pytest.mark.slow
PHONE = "+8613800138000"


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.cli", "notify"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def wait_for(condition: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def account(account_id: str, holder: str, phone: str | None, openid: str | None) -> AccountOpened:
    return AccountOpened(
        project_id="p", subject_id=account_id, account_id=account_id, mode=BillingMode.PREPAID,
        meter_ids=(f"m-{account_id}",), tariff_id="t", holder=holder, phone=phone, wechat_openid=openid,
        opened_by="op",
    )  # fmt: skip


def arrears(alarm_id: str) -> AlarmRaised:
    return AlarmRaised(
        project_id="p", subject_id="acc-1", alarm_id=alarm_id, kind=AlarmKind.ARREARS, severity=2,
        message="arrears", details={"balance_fen": "-1234"},
    )  # fmt: skip


def test_notify_service_sends_once_answers_the_send_log_and_survives_a_restart(
    fresh_broker: EmbeddedBroker, providers: ProviderServer, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap
    ensure_topics(bootstrap, CATALOGUE)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(
        MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(tmp_path / "state"), MF_NOTIFY_HTTP_PORT=str(port),
        MF_NOTIFY_FAUST_PORT=str(free_port()), MF_NOTIFY_SNAPSHOT_EVERY_S="1",
        MF_NOTIFY_SMS_PROVIDER="aliyun", MF_NOTIFY_ALIYUN_BASE_URL=providers.url("aliyun"),
        MF_NOTIFY_ALIYUN_ACCESS_KEY_ID="ak-test", MF_NOTIFY_ALIYUN_ACCESS_KEY_SECRET="sk-test",
        MF_NOTIFY_WECHAT_PROVIDER="wechat", MF_NOTIFY_WECHAT_BASE_URL=providers.url("wechat"),
        MF_NOTIFY_WECHAT_APPID="wx-app", MF_NOTIFY_WECHAT_SECRET="wx-secret", MF_NOTIFY_SMS_SIGN_NAME="校园电费",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    alarm = arrears("al-1")
    recharge = BalanceChanged(
        project_id="p", subject_id="acc-2", account_id="acc-2", delta_fen=5000, balance_fen=6234,
        reason="recharge", causation_id="recharge-1",
    )  # fmt: skip
    sms_only = SubscriptionSet(
        project_id="p", subject_id="acc-1", account_id="acc-1", channels=(Channel.SMS,)
    )
    asyncio.run(produce(bootstrap, [
        account("acc-1", "张三", PHONE, "oStu1"), sms_only, account("acc-2", "李四", None, "oStu2"),
    ]))  # fmt: skip
    received = providers.state.received
    log = tmp_path / "notify.log"
    worker = start(env, log)
    try:
        # preferences and alarms travel on different topics: let the preferences land first
        wait_for(lambda: (r := get(f"{base}/readyz")) is not None and r.json()["decider_events"] >= 3, 90,
                 "the accounts folded", log)  # fmt: skip
        asyncio.run(produce(bootstrap, [alarm, alarm, recharge]))
        wait_for(lambda: len(received) >= 2, 90, "an SMS and a WeChat message", log)
        sms = next(r for r in received if r.provider == "aliyun")
        assert (sms.to, sms.template, sms.sign_name) == (PHONE, "SMS_ARREARS", "校园电费")
        assert sms.params == {"name": "张三", "balance": "-12.34", "arrears": "12.34"}
        wechat = next(r for r in received if r.provider == "wechat")
        assert (wechat.to, wechat.template) == ("oStu2", "TPL_RECHARGE_ARRIVED")
        assert wechat.params["first"] == "【李四】充值 50.00 元已到账，当前余额 62.34 元。"

        def delivered(account_id: str) -> bool:
            answer = get(f"{base}/sends?account_id={account_id}&status=delivered")
            return answer is not None and len(answer.json()) == 1

        wait_for(lambda: delivered("acc-1") and delivered("acc-2"), 20, "the send log", log)
        [row] = httpx.get(f"{base}/sends", params={"recipient": PHONE}).json()
        assert (row["channel"], row["template"], row["provider"], row["attempts"]) == (
            "sms",
            "arrears",
            "aliyun",
            1,
        )
        assert httpx.get(f"{base}/sends", params={"status": "bogus"}).status_code == 422
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert 'mf_notify_sends{status="delivered"} 2.0' in httpx.get(f"{base}/metrics").text

        asyncio.run(produce(bootstrap, [alarm]))  # delivered once more by the broker
        time.sleep(3)
        assert len(received) == 2

        stop(worker)
        worker = start(env, log)
        wait_for(
            lambda: (r := get(f"{base}/readyz")) is not None and r.status_code == 200, 90, "readiness", log
        )
        wait_for(lambda: delivered("acc-1") and delivered("acc-2"), 20, "the send log rebuilt", log)
        time.sleep(3)
        assert len(received) == 2  # nothing re-sent
        asyncio.run(produce(bootstrap, [arrears("al-2")]))  # the restarted service still sends
        wait_for(lambda: len(received) == 3, 30, "the SMS of a new alarm", log)
        assert received[2].to == PHONE
    finally:
        stop(worker)
