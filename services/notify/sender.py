"""The sending half of the notify service: mf.notifications in, provider calls out.

On start the sender reads mf.notifications from the beginning to the high-watermark (without a
consumer group: it is the single replica, and the topic is its own log) and folds:

- ``NotificationRequested`` — a request; ``NotificationDelivered``, ``NotificationSuppressed`` and
  a ``NotificationFailed`` with ``will_retry=False`` — finished; a retrying failure — the attempts
  made so far. Deliveries within the dedupe window refill the policy's dedupe memory.

Then every unfinished request goes to the :class:`~services.notify.dispatcher.Dispatcher` with
the attempts it already had, and the sender tails the topic. A restart therefore re-sends
nothing that was recorded as delivered; a crash between the provider's answer and the record
re-sends that one message (at-least-once, like every consumer here).

Each pass: fold new records, submit requests whose account (project and account id: ids are per
project) the decider's directory knows, run
what is due (quiet hours and rate limits defer, failures back off), then produce the outcomes —
deferred / delivered / failed / suppressed facts to mf.notifications and, after the last
attempt, the request itself to mf.dead-letter with ``reason`` and ``attempts`` headers —
awaiting each, so an outcome is on the broker before the next pass. Nothing ends without a fact, and a deferral is one
too: the send log (this service's and the API's) learns of it by folding the fact read back, like
every other outcome, so it survives a restart.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events.base import Event
from libs.events.codec import Codec, EventDecodeError
from libs.events.notify import (
    Channel,
    NotificationDeferred,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
    NotificationSuppressed,
)
from libs.events.topics import DEAD_LETTER, NOTIFICATIONS
from libs.stack.broker import high_watermarks
from services.notify.delivery import AccountSettings, DeliveryPolicy, Job
from services.notify.dispatcher import ChannelSend, Dispatcher
from services.notify.sendlog import SendLog
from services.notify.templates import Template

log = logging.getLogger(__name__)
_TEMPLATES = frozenset(t.value for t in Template)


@dataclass
class SenderStats:
    records: int = 0
    deferred: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    suppressed: int = 0
    undecodable: int = 0


class Sender:
    """The delivery loop over the broker; ``settings_for(project_id, account_id)`` is the
    decider's directory."""

    def __init__(
        self,
        bootstrap: str,
        channels: Mapping[Channel, ChannelSend],
        settings_for: Callable[[str, str], AccountSettings | None],
        policy: DeliveryPolicy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        sendlog: SendLog | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.bootstrap = bootstrap
        self.settings_for = settings_for
        self.policy = policy
        self.clock = clock
        self.sendlog = sendlog or SendLog()
        self.poll_s = poll_s
        self.codec = Codec()
        self.stats = SenderStats()
        self.dispatcher = Dispatcher(policy, channels, self._settings, clock, rng or random.Random())
        self.ready = False  # caught up with the log
        self.error: BaseException | None = None
        self._requests: dict[str, NotificationRequested] = {}  # unfinished
        self._attempts: dict[str, int] = {}
        self._finished: set[str] = set()
        self._delivered_at: dict[str, datetime] = {}  # during catch-up only
        self._waiting: list[NotificationRequested] = []
        self._cache: dict[tuple[str, str], AccountSettings] = {}  # (project, account)
        self._log_seen = 0

    def _settings(self, project_id: str, account_id: str) -> AccountSettings:
        key = (project_id, account_id)
        found = self.settings_for(*key)
        if found is not None:
            self._cache[key] = found
        return found or self._cache[key]

    @property
    def waiting(self) -> int:
        """Requests held until the directory knows their account."""
        return len(self._waiting)

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up with mf.notifications, then deliver until ``stop`` is set."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        try:
            await consumer.start()
            await producer.start()
            await consumer.topics()  # loads the metadata partitions_for_topic answers from
            parts = sorted(consumer.partitions_for_topic(NOTIFICATIONS.name) or [])
            tps = [TopicPartition(NOTIFICATIONS.name, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            marks = await high_watermarks(self.bootstrap, tps)
            while not stop.is_set() and await _behind(consumer, marks):
                self._fold(await consumer.getmany(timeout_ms=1000), live=False)
            self._resume()
            self.ready = True
            log.info("notify sender: caught up, %d requests to deliver", len(self._waiting))
            while not stop.is_set():
                self._fold(await consumer.getmany(timeout_ms=int(self.poll_s * 1000)), live=True)
                self._submit_waiting()
                await self.dispatcher.run_due()
                await self._publish(producer)
        except Exception as exc:
            self.error = exc
            log.exception("notify sender stopped")
            raise
        finally:
            self.ready = False
            await producer.stop()
            await consumer.stop()

    def _fold(self, batch: Mapping[TopicPartition, list[object]], live: bool) -> None:
        for records in batch.values():
            for record in records:
                self.stats.records += 1
                try:
                    events = self.codec.decode(record.value)  # type: ignore[attr-defined]
                except EventDecodeError as exc:
                    self.stats.undecodable += 1
                    log.warning("notify sender: undecodable record on %s: %s", NOTIFICATIONS.name, exc)
                    continue
                for event in events:
                    self._apply(event, live)

    def _apply(self, event: Event, live: bool) -> None:
        self.sendlog.apply(event)
        nid = getattr(event, "notification_id", None)
        if nid is None:
            return
        if isinstance(event, NotificationRequested):
            if nid in self._finished or nid in self._requests:
                return  # a replayed request: delivered already, or on its way
            self._requests[nid] = event
            if live:
                self._waiting.append(event)
            return
        final = isinstance(event, (NotificationDelivered, NotificationSuppressed)) or (
            isinstance(event, NotificationFailed) and not event.will_retry
        )
        if isinstance(event, (NotificationDelivered, NotificationFailed)):
            self._attempts[nid] = max(self._attempts.get(nid, 0), event.attempt)
        if final:
            self._finished.add(nid)
            request = self._requests.pop(nid, None)
            self._attempts.pop(nid, None)
            if not live and isinstance(event, NotificationDelivered) and request is not None:
                self._remember_delivery(request, event.time)

    def _remember_delivery(self, request: NotificationRequested, at: datetime) -> None:
        job = Job(request, request.dedupe_ref, False)
        key = DeliveryPolicy.dedupe_key(job, AccountSettings(request.account_id or "", ""), at)
        if self.clock() - at < self.policy.limits.dedupe_window:
            self.policy.sent[key] = max(at, self.policy.sent.get(key, at))

    def _resume(self) -> None:
        self._waiting = [r for nid, r in self._requests.items() if nid not in self._finished]

    def _submit_waiting(self) -> None:
        still: list[NotificationRequested] = []
        for request in self._waiting:
            if request.template not in _TEMPLATES or not request.account_id:
                self._reject(request, f"unknown template {request.template!r} or no account")
                continue
            settings = self.settings_for(request.project_id, request.account_id)
            if settings is None:
                still.append(request)
                continue
            self._cache[request.project_id, request.account_id] = settings
            urgent = Template(request.template) in settings.urgent
            attempt = self._attempts.get(request.notification_id, 0)
            self.dispatcher.submit(Job(request, request.dedupe_ref, urgent, attempt))
        self._waiting = still

    def _reject(self, request: NotificationRequested, reason: str) -> None:
        """A request no channel can serve: failed and dead-lettered at once, never dropped."""
        failed = NotificationFailed(
            project_id=request.project_id,
            subject_id=request.subject_id,
            correlation_id=request.correlation_id,
            causation_id=request.event_id,
            notification_id=request.notification_id,
            channel=request.channel,
            provider="notify",
            reason=reason,
            attempt=max(self._attempts.get(request.notification_id, 0), 1),
            will_retry=False,
        )
        self.dispatcher.events.append(failed)
        self.dispatcher.dead_letters.append(Job(request, request.dedupe_ref, False, failed.attempt))

    async def _publish(self, producer: AIOKafkaProducer) -> None:
        reasons: dict[str, str] = {}
        for entry in self.dispatcher.log[self._log_seen :]:
            if entry.what == "dead_lettered":
                reasons[entry.notification_id] = entry.detail
            elif entry.what == "deduplicated":
                self._suppress(entry.notification_id, entry.detail)
        self._log_seen = len(self.dispatcher.log)
        events, self.dispatcher.events = self.dispatcher.events, []
        for event in events:
            if isinstance(event, NotificationRequested):
                continue  # already on the log: the dispatcher lists what it accepted
            if isinstance(event, NotificationDeferred):
                self.stats.deferred += 1
            elif isinstance(event, NotificationDelivered):
                self.stats.delivered += 1
            elif isinstance(event, NotificationFailed):
                self.stats.failed += 1
                reasons.setdefault(event.notification_id, event.reason)
            elif isinstance(event, NotificationSuppressed):
                self.stats.suppressed += 1
            await producer.send_and_wait(NOTIFICATIONS.name, self.codec.encode(event), key=event.key)
        dead, self.dispatcher.dead_letters = self.dispatcher.dead_letters, []
        for job in dead:
            self.stats.dead_lettered += 1
            reason = reasons.get(job.notification_id, "")
            log.warning(
                "notify: %s dead-lettered after %d attempts: %s", job.notification_id, job.attempt, reason
            )
            headers = [
                ("reason", reason.encode()[:500]),
                ("attempts", str(job.attempt).encode()),
                ("source", b"notify"),
            ]
            value = self.codec.encode(job.request)
            await producer.send_and_wait(DEAD_LETTER.name, value, key=job.request.key, headers=headers)

    def _suppress(self, notification_id: str, reason: str) -> None:
        request = self._requests.get(notification_id)
        if request is None:
            return
        self.dispatcher.events.append(
            NotificationSuppressed(
                project_id=request.project_id,
                subject_id=request.subject_id,
                correlation_id=request.correlation_id,
                causation_id=request.event_id,
                notification_id=notification_id,
                channel=request.channel,
                reason=f"duplicate: {reason}",
            )
        )


async def _behind(consumer: AIOKafkaConsumer, marks: Mapping[TopicPartition, int]) -> bool:
    """True while some partition's position is short of its high-watermark."""
    for tp, mark in marks.items():
        if await consumer.position(tp) < mark:
            return True
    return False
