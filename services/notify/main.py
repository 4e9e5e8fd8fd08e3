"""`meterflow notify [--check-config]`: decides and sends SMS and WeChat notifications.

One process, two halves (docs/architecture.md, "Notify"); any number of replicas, one active
(its group gives every partition to one member) and the others standing by:

- the *decider*, a stream processor (:mod:`services.notify.worker`) over mf.billing, mf.ledger, mf.alarms,
  mf.commands and mf.notifications, folds who each account is and what it wants to hear, and
  emits ``NotificationRequested`` with ids derived from their cause;
- the *sender* (:mod:`services.notify.sender`) tails mf.notifications, applies the delivery
  policy (quiet hours, dedupe, rate limits, retries with backoff), calls the providers over
  httpx, and records deferred / delivered / failed / suppressed facts and dead letters.

HTTP on ``MF_NOTIFY_HTTP_PORT``: ``/healthz``, ``/readyz``, ``/metrics`` and the send log
``GET /sends?project_id=&account_id=&recipient=&status=&limit=``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

import faust
import httpx
from fastapi import FastAPI, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from libs.events.notify import Channel
from libs.events.topics import CATALOGUE
from libs.stack.broker import ensure_topics
from libs.stack.processor import Processor, Snapshots, make_app, one_group, serve_http
from libs.stack.runtime import service_settings, setup_logging
from services.notify.delivery import DeliveryPolicy
from services.notify.dispatcher import ChannelSend, sms_channel, wechat_channel
from services.notify.providers import (
    AliyunSmsSender,
    InMemorySmsSender,
    InMemoryWeChatSender,
    ProviderReceipt,
    SmsSender,
    TencentSmsSender,
    WeChatSender,
    WeChatTemplateSender,
)
from services.notify.sender import Sender
from services.notify.sendlog import STATUSES
from services.notify.settings import NotifySettings
from services.notify.templates import Template
from services.notify.worker import INPUTS, NotifyState

log = logging.getLogger("meterflow.notify")


class LoggedSms(InMemorySmsSender):
    """The ``memory`` SMS provider: checked like a gateway would, logged, never sent."""

    provider = "log-sms"

    async def send(
        self, phone: str, template_code: str, params: Mapping[str, str], sign_name: str
    ) -> ProviderReceipt:
        receipt = await super().send(phone, template_code, params, sign_name)
        self.sent.clear()
        log.info("SMS NOT SENT (memory provider) to %s: %s %s", phone, template_code, dict(params))
        return receipt


class LoggedWeChat(InMemoryWeChatSender):
    """The ``memory`` WeChat provider: logged, never sent."""

    provider = "log-wechat"

    async def send(
        self, openid: str, template_id: str, data: Mapping[str, str], url: str | None = None
    ) -> ProviderReceipt:
        receipt = await super().send(openid, template_id, data, url)
        self.sent.clear()
        log.info("WECHAT NOT SENT (memory provider) to %s: %s %s", openid, template_id, dict(data))
        return receipt


def channels(settings: NotifySettings, client: httpx.AsyncClient) -> dict[Channel, ChannelSend]:
    """The SMS and WeChat channels the settings choose."""
    s = settings
    sms: SmsSender
    if s.notify_sms_provider == "aliyun":
        sms = AliyunSmsSender(
            client, s.notify_aliyun_access_key_id, s.notify_aliyun_access_key_secret.get_secret_value(),
            base_url=s.notify_aliyun_base_url, region_id=s.notify_aliyun_region,
        )  # fmt: skip
    elif s.notify_sms_provider == "tencent":
        sms = TencentSmsSender(
            client, s.notify_tencent_secret_id, s.notify_tencent_secret_key.get_secret_value(),
            s.notify_tencent_sdk_app_id, base_url=s.notify_tencent_base_url, region=s.notify_tencent_region,
        )  # fmt: skip
    else:
        sms = LoggedSms()
    wechat: WeChatSender
    if s.notify_wechat_provider == "wechat":
        wechat = WeChatTemplateSender(
            client, s.notify_wechat_appid, s.notify_wechat_secret.get_secret_value(),
            base_url=s.notify_wechat_base_url,
        )  # fmt: skip
    else:
        wechat = LoggedWeChat()
    sms_codes = {Template(k): v for k, v in s.notify_sms_templates.items()}
    wechat_ids = {Template(k): v for k, v in s.notify_wechat_templates.items()}
    return {
        Channel.SMS: sms_channel(sms, s.notify_sms_sign_name, sms_codes),
        Channel.WECHAT: wechat_channel(wechat, wechat_ids, s.notify_wechat_url),
    }


class SenderSlot:
    """The sender of the active replica: one runs while this replica's decider holds the
    partitions, and it is stopped (awaited) when they are revoked, before the group gives them to
    another replica, so two senders never deliver at once. Each activation builds a fresh
    :class:`Sender`, which catches up with mf.notifications before it sends."""

    def __init__(self, make: Callable[[], Sender]) -> None:
        self.make = make
        self.sender = make()
        self.task: asyncio.Task[None] | None = None
        self.stop = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.task is not None

    def start(self) -> None:
        if self.task is None:
            self.sender, self.stop = self.make(), asyncio.Event()
            self.task = asyncio.ensure_future(self.sender.run(self.stop))

    async def halt(self, timeout: float = 10.0) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        self.stop.set()
        try:
            await asyncio.wait_for(task, timeout)
        except Exception:  # already logged by the sender; stopping regardless
            log.warning("notify sender ended with an error")


@dataclass
class Notify:
    """The wired service: Faust app, decider, the sender slot and the HTTP client they share."""

    app: faust.App
    processor: Processor
    state: NotifyState
    senders: SenderSlot
    client: httpx.AsyncClient

    @property
    def sender(self) -> Sender:
        """The current (or last) sender."""
        return self.senders.sender

    @property
    def standby(self) -> bool:
        """Assigned nothing: another replica is active."""
        return self.processor.assigned and not self.processor.owned


def build(settings: NotifySettings, bootstrap: str) -> Notify:
    """The Faust app with the decider attached and the sender run while it is active.

    Notify's decider folds one global state (account- and meter-keyed facts together), so its
    group has one active member (:class:`~libs.stack.singleton.SingleActiveAssignor`): extra
    replicas stand by and take over when the active one leaves or dies."""
    state = NotifyState(max_age_s=settings.notify_max_age_s)
    app = make_app(
        "meterflow-notify",
        bootstrap,
        settings.snapshot_dir / "faust",
        settings.notify_faust_port,
        singleton=True,
    )
    processor = Processor(
        app, bootstrap, "notify", INPUTS, state, state, Snapshots(settings.snapshot_dir / "snapshots"),
        snapshot_every=settings.notify_snapshot_every_s, group_of=one_group,
    )  # fmt: skip
    client = httpx.AsyncClient(timeout=settings.notify_http_timeout_s)
    senders = SenderSlot(
        lambda: Sender(
            bootstrap, channels(settings, client), state.settings_for, DeliveryPolicy(settings.limits)
        )
    )
    notify = Notify(app, processor, state, senders, client)

    halted_at = [0]  # the processor's assignment generation when the sender was last halted

    @app.timer(0.2)
    async def activate() -> None:
        """Run the sender once this replica's decider holds its partitions (Faust's signal
        receivers do not run in order, so the processor's restore is watched, not awaited)."""
        if processor.owned and not senders.running and processor.generation > halted_at[0]:
            log.info("notify: active (the decider holds its partitions); the sender starts")
            senders.start()
        elif not processor.owned and senders.running:
            await senders.halt()

    async def revoked(sender_: object, tps: object = None, **kwargs: object) -> None:
        # no sender until the next assignment: the revoke may reach this receiver before the
        # processor's own (receivers run in no set order)
        halted_at[0] = processor.generation
        if senders.running:
            log.info("notify: partitions revoked; the sender stops")
        await senders.halt()  # before the group gives them to another replica

    async def shutdown(sender_: object, **kwargs: object) -> None:
        await senders.halt(15)
        await client.aclose()

    app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(shutdown)  # type: ignore[arg-type]
    _serve_http(notify, settings.notify_http_port)
    return notify


def _serve_http(notify: Notify, port: int) -> None:
    registry = CollectorRegistry()
    rows = Gauge("mf_notify_sends", "send-log rows by status", ["status"], registry=registry)
    outcomes = Gauge("mf_notify_outcomes", "outcomes since start", ["outcome"], registry=registry)
    waiting = Gauge("mf_notify_waiting", "requests waiting for their account", registry=registry)
    dead = Counter("mf_notify_dead_letters", "decider inputs parked on mf.dead-letter", registry=registry)
    seen = {"dead_letters": 0}
    web = FastAPI(title="meterflow notify", docs_url=None, redoc_url=None)
    processor = notify.processor

    @web.get("/healthz")
    def healthz(response: Response) -> dict[str, str]:
        sender = notify.sender
        if notify.senders.running and sender.error is not None:  # the sender loop died: restart the process
            response.status_code = 503
            return {"status": "sender stopped", "error": repr(sender.error)}
        return {"status": "ok"}

    @web.get("/readyz")
    def readyz(response: Response) -> dict[str, object]:
        # A standby is ready (idle); the active one once its decider caught up and its sender
        # caught up with the log.
        sender, standby = notify.sender, notify.standby
        active = bool(processor.owned) and not processor.catching_up and sender.ready and sender.error is None
        ready = standby or active
        response.status_code = 200 if ready else 503
        return {
            "ready": ready,
            "role": "standby" if standby else "active",
            "decider_events": processor.stats.events,
            "sender_caught_up": sender.ready,
            "sender_error": repr(sender.error) if sender.error else None,
            "waiting": sender.waiting,
            "dead_letters": processor.stats.dead_letters,  # parked, not fatal: still ready
        }

    @web.get("/metrics")
    def metrics() -> Response:
        sender = notify.sender
        for status, count in sender.sendlog.counts().items():
            rows.labels(status).set(count)
        stats = sender.stats
        for name in ("deferred", "delivered", "failed", "dead_lettered", "suppressed"):
            outcomes.labels(name).set(getattr(stats, name))
        waiting.set(sender.waiting)
        dead.inc(processor.stats.dead_letters - seen["dead_letters"])
        seen["dead_letters"] = processor.stats.dead_letters
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @web.get("/sends")
    def sends(
        response: Response,
        project_id: str | None = None,
        account_id: str | None = None,
        recipient: str | None = None,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, object]]:
        if status is not None and status not in STATUSES:
            response.status_code = 422
            return [{"error": f"status must be one of {sorted(STATUSES)}"}]
        return notify.sender.sendlog.query(account_id, recipient, status, limit, project_id)

    serve_http(notify.app, web, port)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow notify`."""
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow notify`."""
    settings = service_settings(NotifySettings, "notify", args.check_config)
    if isinstance(settings, int):
        return settings
    assert settings.kafka_bootstrap is not None
    setup_logging(settings.log_level)
    for kind, provider in (
        ("SMS", settings.notify_sms_provider),
        ("WECHAT", settings.notify_wechat_provider),
    ):
        if provider == "memory":
            log.warning("MF_NOTIFY_%s_PROVIDER=memory: messages are logged, NOT sent", kind)
    ensure_topics(settings.kafka_bootstrap, CATALOGUE)
    notify = build(settings, settings.kafka_bootstrap)
    worker = faust.Worker(notify.app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()
    return 0
