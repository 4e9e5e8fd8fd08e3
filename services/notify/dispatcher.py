"""The delivery loop around :class:`DeliveryPolicy`: a time-ordered queue of jobs, the channel
adapters, and the send log. Clock and randomness are injected, so tests drive time by hand.

The log holds the libs/events facts (``NotificationRequested/Deferred/Delivered/Failed``) plus one
:class:`LogEntry` per decision, deferrals and duplicates included; :attr:`outcomes` holds the
final state of every request: delivered, deduplicated or dead_lettered.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from libs.events.base import Event, event_id_for
from libs.events.notify import (
    Channel,
    DeferReason,
    NotificationDeferred,
    NotificationDelivered,
    NotificationFailed,
)
from services.notify.delivery import AccountSettings, DeliveryPolicy, Job, Verdict
from services.notify.providers.base import ProviderError, ProviderReceipt, SmsSender, WeChatSender
from services.notify.templates import Template, render

ChannelSend = Callable[[Job, AccountSettings], Awaitable[ProviderReceipt]]


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DEDUPLICATED = "deduplicated"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class LogEntry:
    notification_id: str
    at: datetime
    what: str  # requested | deferred | deduplicated | delivered | retry | dead_lettered
    detail: str = ""


def sms_channel(sender: SmsSender, sign_name: str, codes: Mapping[Template, str]) -> ChannelSend:
    """SMS through an approved provider template per notice template (``codes``)."""

    async def send(job: Job, settings: AccountSettings) -> ProviderReceipt:
        request = job.request
        params = {"name": settings.name, **request.params}
        return await sender.send(request.recipient, codes[Template(request.template)], params, sign_name)

    return send


def wechat_channel(
    sender: WeChatSender, template_ids: Mapping[Template, str], url: str | None = None
) -> ChannelSend:
    """WeChat template message: the rendered text as ``first`` plus the raw parameters."""

    async def send(job: Job, settings: AccountSettings) -> ProviderReceipt:
        request = job.request
        template = Template(request.template)
        text = render(template, request.locale, dict(request.params), settings.name)
        return await sender.send(
            request.recipient, template_ids[template], {"first": text, **request.params}, url
        )

    return send


@dataclass
class Dispatcher:
    policy: DeliveryPolicy
    channels: Mapping[Channel, ChannelSend]
    settings: Callable[[str, str], AccountSettings]  # (project id, account id) → settings
    clock: Callable[[], datetime]
    rng: random.Random = field(default_factory=random.Random)
    events: list[Event] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    dead_letters: list[Job] = field(default_factory=list)
    _queue: list[tuple[datetime, int, Job]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _known: set[str] = field(default_factory=set)

    def submit(self, job: Job) -> None:
        """Accept a request (a redelivered one, same id, is logged and ignored)."""
        now = self.clock()
        if job.notification_id in self._known:
            self._note(job, now, "redelivered", "already accepted")
            return
        self._known.add(job.notification_id)
        self.events.append(job.request)
        self._note(job, now, "requested")
        self._push(now, job)

    def next_due(self) -> datetime | None:
        return self._queue[0][0] if self._queue else None

    def pending(self) -> int:
        return len(self._queue)

    async def run_due(self) -> int:
        """Process every job due by now; the number processed."""
        done = 0
        while self._queue and self._queue[0][0] <= self.clock():
            _, _, job = heapq.heappop(self._queue)
            await self._process(job)
            done += 1
        return done

    async def _process(self, job: Job) -> None:
        now = self.clock()
        request = job.request
        settings = self.settings(request.project_id, request.account_id or "")
        decision = self.policy.admit(job, settings, now)
        if decision.verdict is Verdict.DUPLICATE:
            self._final(job, now, Outcome.DEDUPLICATED, decision.reason)
            return
        base: dict[str, str | None] = {"project_id": request.project_id, "subject_id": request.subject_id}
        base |= {"correlation_id": request.correlation_id, "causation_id": request.event_id}
        if decision.verdict is Verdict.DEFER:
            assert decision.until is not None
            # the same deferral decided again (a restart within quiet hours) is the same fact;
            # until in UTC, so the id does not depend on the clock's time zone
            until = decision.until.astimezone(UTC).isoformat()
            deferred = NotificationDeferred(
                **base,
                event_id=event_id_for(
                    request.project_id, "notification_deferred", job.notification_id, until
                ),
                time=now,
                notification_id=job.notification_id,
                channel=request.channel,
                reason=DeferReason(decision.reason),
                until=decision.until,
                attempt=job.attempt,
            )
            self.events.append(deferred)
            self._note(job, now, "deferred", deferred.detail)
            self._push(decision.until, job)
            return
        attempt = job.attempt + 1
        send = self.channels[request.channel]
        try:
            receipt = await send(job, settings)
        except ProviderError as error:
            retry = self.policy.retry_at(attempt, error.retryable, now, self.rng)
            reason = f"{error.kind}:{error.code}"
            self.events.append(
                NotificationFailed(
                    **base,
                    notification_id=job.notification_id,
                    channel=request.channel,
                    provider=error.provider,
                    reason=reason,
                    attempt=attempt,
                    will_retry=retry is not None,
                )
            )
            nxt = Job(request, job.dedupe_ref, job.urgent, attempt)
            if retry is None:
                self.policy.abandoned(job, settings, now)
                self.dead_letters.append(nxt)
                self._final(job, now, Outcome.DEAD_LETTERED, reason)
            else:
                self._note(job, now, "retry", f"{reason} at {retry.isoformat()}")
                self._push(retry, nxt)
            return
        self.policy.delivered(job, settings, now)
        self.events.append(
            NotificationDelivered(
                **base,
                notification_id=job.notification_id,
                channel=request.channel,
                provider=receipt.provider,
                provider_message_id=receipt.message_id,
                attempt=attempt,
            )
        )
        self._final(job, now, Outcome.DELIVERED, receipt.message_id)

    def _push(self, when: datetime, job: Job) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), job))

    def _note(self, job: Job, at: datetime, what: str, detail: str = "") -> None:
        self.log.append(LogEntry(job.notification_id, at, what, detail))

    def _final(self, job: Job, at: datetime, outcome: Outcome, detail: str) -> None:
        self.outcomes[job.notification_id] = outcome
        self._note(job, at, outcome.value, detail)
