"""Delivering facts to webhook subscriptions (F3): one consumer group across API replicas
(``meterflow-api-webhooks``), so each fact is delivered by one replica; offsets are committed
after every batch has been delivered (at-least-once — receivers deduplicate by the
``X-Meterflow-Delivery`` event id, see :mod:`services.api.webhooks`).

A new group starts at the end of the log: subscriptions receive facts from when delivery first
ran, not the history. Identity facts (mf.iam) and raw readings (mf.readings) are never delivered.
Retries happen in line with a short policy (a dead receiver delays the others by at most about a
minute per fact); the outcome of each delivery is kept in memory for ``GET /webhooks/{id}/deliveries``,
and a receiver answering 410 Gone is unsubscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import httpx
from aiokafka import AIOKafkaConsumer

from libs.events import iam
from libs.events.base import Event
from libs.events.codec import Codec, EventDecodeError
from libs.events.topics import ALARMS, BILLING, COMM, COMMANDS, LEDGER, REGISTRY_TOPIC, TARIFFS
from services.api import webhook_subscriptions
from services.api.context import Api
from services.api.webhooks import DeliveryResult, RetryPolicy, Subscription, WebhookSender, matching

log = logging.getLogger(__name__)
GROUP = "meterflow-api-webhooks"
TOPICS = tuple(t.name for t in (REGISTRY_TOPIC, COMM, TARIFFS, BILLING, LEDGER, ALARMS, COMMANDS))
POLICY = RetryPolicy(max_attempts=4, base_delay=2.0, max_delay=30.0)
KEPT = 10_000


class Deliverer:
    """Consumes the fact topics in a group and sends each fact to its matching subscriptions."""

    def __init__(self, api: Api, bootstrap: str, policy: RetryPolicy = POLICY) -> None:
        self.api, self.bootstrap, self.policy = api, bootstrap, policy
        self.results: deque[DeliveryResult] = deque(maxlen=KEPT)
        self.assigned = asyncio.Event()
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="api-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            *TOPICS, bootstrap_servers=self.bootstrap, group_id=GROUP, enable_auto_commit=False,
            auto_offset_reset="latest", session_timeout_ms=10_000, heartbeat_interval_ms=3_000,
        )  # fmt: skip
        codec = Codec()
        try:
            await consumer.start()
            async with httpx.AsyncClient() as client:
                sender = WebhookSender(client, self.policy)
                while True:
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                    if consumer.assignment():
                        self.assigned.set()
                    for records in batch.values():
                        for record in records:
                            try:
                                events = codec.decode(record.value) if record.value is not None else []
                            except EventDecodeError:
                                continue  # the read model logs undecodable records
                            for event in events:
                                await self._deliver(sender, event)
                    if batch:
                        await consumer.commit()
        finally:
            await consumer.stop()

    def _subscriptions(self) -> list[Subscription]:
        hooks = [h for h in self.api.views.webhooks.values() if h.active]
        return [webhook_subscriptions.subscription(self.api, h) for h in hooks]

    async def _deliver(self, sender: WebhookSender, event: Event) -> None:
        targets = matching(self._subscriptions(), event)
        if not targets:
            return
        for result in await sender.deliver(event, targets):
            self.results.append(result)
            self.delivered += result.status == "delivered"
            if result.status != "delivered":
                log.warning("webhook %s: %s %s to %s: %s", result.subscription_id, result.event_type,
                            result.status, result.url, result.last_error)  # fmt: skip
            if result.gone:
                await self.api.writer.publish(iam.WebhookUnsubscribed(
                    project_id=iam.PLATFORM, subject_id=result.subscription_id, reason="410 Gone",
                    removed_by="webhooks",
                ))  # fmt: skip
