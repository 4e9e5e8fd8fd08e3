"""The decider and the sender together on a real broker, sending through the real httpx provider
clients to the local provider server (which checks every signature and fails on demand)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from libs.events import (
    AccountOpened,
    AlarmRaised,
    CommandAcknowledged,
    CommandRequested,
    Event,
    NotificationDeferred,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
    NotificationSuppressed,
    SubscriptionSet,
)
from libs.events.base import event_id_for
from libs.events.billing import AlarmKind, BillingMode
from libs.events.control import Action
from libs.events.notify import Channel, DeferReason
from libs.events.topics import CATALOGUE, DEAD_LETTER, NOTIFICATIONS
from libs.settings import load
from libs.stack.broker import EmbeddedBroker, ensure_topics
from services.notify.delivery import DeliveryPolicy
from services.notify.main import channels
from services.notify.sender import Sender
from services.notify.settings import NotifySettings
from services.notify.templates import Template, render
from services.notify.testing.provider_server import ProviderServer
from services.notify.worker import NotifyState
from tests.services.notify.helpers import eventually, produce, read_topic

pytestmark = pytest.mark.slow
PHONE = "+8613800138000"


class Clock:
    """A clock the test sets by hand, or the real one when ``now`` is None."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now or datetime.now(UTC)


@pytest.fixture
def broker(fresh_broker: EmbeddedBroker) -> str:
    ensure_topics(fresh_broker.bootstrap, CATALOGUE)
    return fresh_broker.bootstrap


def settings(server: ProviderServer, **limits: Any) -> NotifySettings:
    return load(
        NotifySettings,
        notify_sms_provider="aliyun", notify_aliyun_base_url=server.url("aliyun"),
        notify_aliyun_access_key_id="ak-test", notify_aliyun_access_key_secret="sk-test",
        notify_wechat_provider="wechat", notify_wechat_base_url=server.url("wechat"),
        notify_wechat_appid="wx-app", notify_wechat_secret="wx-secret", notify_sms_sign_name="校园电费",
        **limits,
    )  # fmt: skip


class Service:
    """The decider's state and a sender over one broker, as `meterflow notify` wires them."""

    def __init__(self, broker: str, conf: NotifySettings, client: httpx.AsyncClient, clock: Clock) -> None:
        self.broker, self.clock = broker, clock
        self.state = NotifyState(max_age_s=conf.notify_max_age_s, clock=lambda: clock().timestamp())
        policy = DeliveryPolicy(conf.limits)
        self.sender = Sender(broker, channels(conf, client), self.state.settings_for, policy, clock=clock,
                             poll_s=0.05)  # fmt: skip

    async def feed(self, *facts: Event) -> None:
        """Fold facts into the decider and put its requests on the broker (the processor's job)."""
        out: list[Event] = []
        for fact in facts:
            out += self.state.fold(fact)
        await produce(self.broker, out)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Sender]:
        stop = asyncio.Event()
        task = asyncio.create_task(self.sender.run(stop))
        try:
            await eventually(lambda: self.sender.ready or task.done(), what="sender caught up")
            yield self.sender
        finally:
            stop.set()
            await task


def opened(account: str = "acc-1", phone: str | None = PHONE, openid: str | None = None) -> AccountOpened:
    return AccountOpened(
        project_id="p", subject_id=account, account_id=account, mode=BillingMode.PREPAID,
        meter_ids=(f"m-{account}",), tariff_id="t", holder="张三", phone=phone, wechat_openid=openid,
        opened_by="op",
    )  # fmt: skip


def arrears(clock: Clock, alarm_id: str = "al-1", account: str = "acc-1") -> AlarmRaised:
    return AlarmRaised(
        project_id="p", subject_id=account, alarm_id=alarm_id, kind=AlarmKind.ARREARS, severity=2,
        message="arrears", details={"balance_fen": "-1234"}, time=clock(),
    )  # fmt: skip


async def facts(broker: str) -> list[Event]:
    return [e for _, e in await read_topic(broker, NOTIFICATIONS.name)]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2.0) as http:
        yield http


async def test_failing_provider_is_retried_then_dead_lettered_and_a_later_one_recovers(
    broker: str, providers: ProviderServer, client: httpx.AsyncClient
) -> None:
    clock = Clock()
    conf = settings(providers, notify_max_attempts=3, notify_backoff_base_s=0.05, notify_backoff_cap_s=0.1)
    service = Service(broker, conf, client, clock)
    providers.state.fail_next("server_error", 3)
    async with service.running() as sender:
        await service.feed(opened(), arrears(clock))
        await eventually(lambda: sender.stats.dead_lettered == 1, what="dead letter")
        providers.state.fail_next("throttle", 2)
        await service.feed(arrears(clock, "al-2"))
        await eventually(lambda: sender.stats.delivered == 1, what="delivery after two throttles")
        await eventually(
            lambda: sender.sendlog.counts()["failed"] == 1 and sender.sendlog.counts()["delivered"] == 1
        )
    outcome = [
        (e.attempt, e.will_retry, e.reason) for e in await facts(broker) if isinstance(e, NotificationFailed)
    ]
    assert outcome == [
        (1, True, "server:http_503"), (2, True, "server:http_503"), (3, False, "server:http_503"),
        (1, True, "throttled:isv.BUSINESS_LIMIT_CONTROL"), (2, True, "throttled:isv.BUSINESS_LIMIT_CONTROL"),
    ]  # fmt: skip
    [(headers, dead)] = await read_topic(broker, DEAD_LETTER.name)
    assert isinstance(dead, NotificationRequested) and dead.dedupe_ref == "al-1"
    assert headers["attempts"] == b"3" and headers["reason"] == b"server:http_503"
    [delivered] = [e for e in await facts(broker) if isinstance(e, NotificationDelivered)]
    assert delivered.attempt == 3 and delivered.provider == "aliyun"
    [sms] = providers.state.received  # the server records only requests whose signature it verified
    assert (sms.provider, sms.to, sms.template, sms.sign_name) == ("aliyun", PHONE, "SMS_ARREARS", "校园电费")
    params = {k: v for k, v in sms.params.items() if k != "name"}
    assert (
        render(Template.ARREARS, "zh", params, sms.params["name"])
        == "【张三】您已欠费 12.34 元，请立即充值以免停电。"
    )


async def test_quiet_hours_defer_but_a_power_cut_goes_out_at_once(
    broker: str, providers: ProviderServer, client: httpx.AsyncClient
) -> None:
    clock = Clock(datetime(2026, 11, 21, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai
    service = Service(broker, settings(providers), client, clock)
    quiet = SubscriptionSet(
        project_id="p", subject_id="acc-1", account_id="acc-1", channels=(Channel.SMS,),
        quiet_start_minute=22 * 60, quiet_end_minute=7 * 60,
    )  # fmt: skip
    trip = CommandRequested(
        project_id="p", subject_id="m-acc-1", command_id="cmd-1", meter_id="m-acc-1", action=Action.TRIP,
        requested_by="policy:arrears", reason="arrears",
    )  # fmt: skip
    ack = CommandAcknowledged(
        project_id="p", subject_id="m-acc-1", command_id="cmd-1", meter_id="m-acc-1", time=clock()
    )
    async with service.running() as sender:
        await service.feed(opened(openid="oStu1"), quiet, arrears(clock), trip, ack)
        await eventually(lambda: len(providers.state.received) == 1, what="the power-cut SMS")
        assert providers.state.received[0].template == "SMS_POWER_CUT"
        # the send log learns of the deferral from its fact, read back from the broker
        await eventually(lambda: len(sender.sendlog.query(status="deferred")) == 1, what="deferred row")
        [row] = sender.sendlog.query(status="deferred")
        assert row["template"] == "arrears" and row["detail"] == "quiet_hours until 2026-11-21T23:00:00+00:00"
        await asyncio.sleep(0.5)  # many passes: the held request is not deferred again
        assert len(providers.state.received) == 1
        [deferral] = [e for e in await facts(broker) if isinstance(e, NotificationDeferred)]
        nid = row["notification_id"]
        assert (deferral.notification_id, deferral.subject_id, deferral.project_id) == (nid, PHONE, "p")
        assert (deferral.reason, deferral.until, deferral.attempt) == (
            DeferReason.QUIET_HOURS, datetime(2026, 11, 21, 23, 0, tzinfo=UTC), 0
        )  # fmt: skip
        assert deferral.event_id == event_id_for(
            "p", "notification_deferred", nid, "2026-11-21T23:00:00+00:00"
        )
        assert sender.stats.deferred == 1
        clock.now = datetime(2026, 11, 21, 23, 0, 1, tzinfo=UTC)  # 07:00:01 in Shanghai
        await eventually(lambda: len(providers.state.received) == 2, what="the deferred SMS")
        await eventually(lambda: sender.sendlog.counts()["delivered"] == 2, what="both rows delivered")
        [row] = [r for r in sender.sendlog.query() if r["notification_id"] == nid]
        assert (row["status"], row["attempts"], row["detail"]) == ("delivered", 1, "")
        assert sender.sendlog.counts()["deferred"] == 0 and sender.stats.deferred == 1
    assert providers.state.received[1].template == "SMS_ARREARS"
    assert all(r.provider == "aliyun" for r in providers.state.received)  # SMS only, as subscribed


async def test_a_deferral_survives_a_restart_and_decided_again_is_the_same_fact(
    broker: str, providers: ProviderServer, client: httpx.AsyncClient
) -> None:
    clock = Clock(datetime(2026, 11, 21, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai
    conf = settings(providers)
    quiet = SubscriptionSet(
        project_id="p", subject_id="acc-1", account_id="acc-1", quiet_start_minute=22 * 60,
        quiet_end_minute=7 * 60,
    )  # fmt: skip
    first = Service(broker, conf, client, clock)
    async with first.running() as sender:
        await first.feed(opened(), quiet, arrears(clock))
        await eventually(lambda: sender.sendlog.counts()["deferred"] == 1, what="the deferral")

    second = Service(broker, conf, client, clock)  # a new process: nothing but the log
    for fact in (opened(), quiet):
        second.state.fold(fact)
    async with second.running() as sender:
        [row] = sender.sendlog.query()  # folded while catching up
        assert (row["status"], row["detail"]) == ("deferred", "quiet_hours until 2026-11-21T23:00:00+00:00")
        await eventually(lambda: sender.stats.deferred == 1, what="the resumed request deferred again")
        await asyncio.sleep(0.3)
        assert sender.sendlog.counts()["deferred"] == 1 and not providers.state.received
    first_deferral, again = [e for e in await facts(broker) if isinstance(e, NotificationDeferred)]
    assert again == first_deferral  # same id and fields: consumers apply it once


async def test_duplicates_are_sent_once_and_a_restart_resends_nothing(
    broker: str, providers: ProviderServer, client: httpx.AsyncClient
) -> None:
    clock = Clock()
    conf = settings(providers, notify_max_attempts=3, notify_backoff_base_s=3600)
    first = Service(broker, conf, client, clock)
    alarm = arrears(clock)
    async with first.running() as sender:
        await first.feed(opened(openid="oStu1"), alarm)
        await eventually(lambda: sender.stats.delivered == 2, what="SMS and WeChat")
        requests = [e for e in await facts(broker) if isinstance(e, NotificationRequested)]
        await produce(broker, requests)  # the broker redelivers both requests
        replayed = NotifyState(clock=lambda: clock().timestamp())  # a decider replaying the log
        replayed.fold(opened(openid="oStu1"))
        await produce(broker, replayed.fold(alarm))
        providers.state.fail_next("server_error")
        await first.feed(opened("acc-2"), arrears(clock, "al-9", "acc-2"))  # fails once; retry due in ~1 h
        await eventually(lambda: sender.stats.failed == 1)
        await asyncio.sleep(0.5)
        assert len(providers.state.received) == 2
    assert sorted(r.provider for r in providers.state.received) == ["aliyun", "wechat"]
    [wechat] = [r for r in providers.state.received if r.provider == "wechat"]
    assert wechat.params["first"] == "【张三】您已欠费 12.34 元，请立即充值以免停电。"

    second = Service(broker, conf, client, clock)  # a new process: nothing but the log
    for fact in (opened(openid="oStu1"), opened("acc-2")):
        second.state.fold(fact)
    async with second.running() as sender:
        # the pending retry resumes (its backoff is not kept across a restart): attempt 2
        await eventually(lambda: sender.stats.delivered == 1, what="the resumed retry")
        # the same phone, template and alarm under another account's request: deduplicated
        # from the deliveries read back from the log
        await produce(broker, second.state.fold(arrears(clock, "al-1", "acc-2")))
        await eventually(lambda: sender.stats.suppressed == 1, what="suppression")
        await asyncio.sleep(0.5)
    assert len(providers.state.received) == 3
    assert providers.state.received[2].to == PHONE
    log = await facts(broker)
    delivered = [e for e in log if isinstance(e, NotificationDelivered)]
    assert sorted(e.attempt for e in delivered) == [1, 1, 2]
    [suppressed] = [e for e in log if isinstance(e, NotificationSuppressed)]
    assert suppressed.reason.startswith("duplicate: sent at")
    assert len({e.notification_id for e in log if isinstance(e, NotificationRequested)}) == 4
    assert timedelta(0) <= datetime.now(UTC) - delivered[-1].time < timedelta(minutes=1)


async def test_tencent_sms_is_chosen_by_settings_and_signed_with_tc3(
    broker: str, providers: ProviderServer, client: httpx.AsyncClient
) -> None:
    clock = Clock()
    conf = load(
        NotifySettings,
        notify_sms_provider="tencent", notify_tencent_base_url=providers.url("tencent"),
        notify_tencent_secret_id="AKIDtest", notify_tencent_secret_key="tc-secret",
        notify_tencent_sdk_app_id="1400006666", notify_sms_templates={t.value: "2028001" for t in Template},
    )  # fmt: skip
    service = Service(broker, conf, client, clock)
    async with service.running() as sender:
        await service.feed(opened(), arrears(clock))
        await eventually(lambda: sender.stats.delivered == 1, what="the SMS")
    [sms] = providers.state.received  # recorded only after the TC3 signature checked out
    assert (sms.provider, sms.to, sms.template) == ("tencent", PHONE, "2028001")
    assert sms.params == {"1": "张三", "2": "-12.34", "3": "12.34"}  # positional, in template order
