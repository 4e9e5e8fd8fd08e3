"""Delivery policy: per-account settings, quiet hours, de-duplication, rate limits, retries.

Pure but for the state it keeps (dedupe memory, token buckets); time is always passed in.
Every request ends in exactly one of: delivered, deduplicated, or dead-lettered; on its
way it may be deferred (quiet hours, rate limit) or retried, never dropped.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from libs.events.base import event_id_for
from libs.events.notify import Channel, DeferReason, NotificationRequested
from services.notify.templates import Notice, Template


@dataclass(frozen=True)
class QuietHours:
    """Local wall-clock window, e.g. 22:00–07:00 in Asia/Shanghai (may wrap midnight)."""

    start: time
    end: time
    tz: str = "Asia/Shanghai"

    def contains(self, when: datetime) -> bool:
        local = when.astimezone(ZoneInfo(self.tz)).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def end_after(self, when: datetime) -> datetime:
        """The first end of the window strictly after ``when``, in ``when``'s time zone."""
        zone = ZoneInfo(self.tz)
        local = when.astimezone(zone)
        candidate = datetime.combine(local.date(), self.end, zone)
        if candidate <= local:
            candidate = datetime.combine(local.date() + timedelta(days=1), self.end, zone)
        return candidate.astimezone(when.tzinfo)


@dataclass(frozen=True)
class AccountSettings:
    """What an account wants to hear, where, and when."""

    account_id: str
    name: str
    locale: str = "zh"
    phone: str | None = None
    wechat_openid: str | None = None
    channels: frozenset[Channel] = frozenset({Channel.SMS, Channel.WECHAT})
    templates: frozenset[Template] | None = None  # None: every template
    quiet_hours: QuietHours | None = None
    urgent: frozenset[Template] = frozenset({Template.POWER_CUT})
    urgent_bypasses_quiet_hours: bool = True


@dataclass(frozen=True)
class Job:
    """One request on its way: the logged request plus what the policy needs about it."""

    request: NotificationRequested
    dedupe_ref: str
    urgent: bool
    attempt: int = 0  # attempts made so far

    @property
    def notification_id(self) -> str:
        return self.request.notification_id


def plan(notice: Notice, settings: AccountSettings) -> tuple[list[Job], list[str]]:
    """Jobs for every channel the account enabled; and why any channel got none (logged)."""
    jobs: list[Job] = []
    skipped: list[str] = []
    if settings.templates is not None and notice.template not in settings.templates:
        return [], [f"{settings.account_id}: template {notice.template} not subscribed"]
    targets = {Channel.SMS: settings.phone, Channel.WECHAT: settings.wechat_openid}
    for channel in sorted(settings.channels):
        recipient = targets[channel]
        if not recipient:
            skipped.append(f"{settings.account_id}: no {channel} recipient")
            continue
        nid = event_id_for(
            notice.project_id, settings.account_id, channel, notice.template, notice.dedupe_ref
        )
        request = NotificationRequested(
            event_id=nid,
            project_id=notice.project_id,
            subject_id=recipient,
            correlation_id=notice.correlation_id,
            notification_id=nid,
            channel=channel,
            recipient=recipient,
            template=notice.template,
            params=notice.params,
            locale=settings.locale,
            account_id=settings.account_id,
        )
        jobs.append(Job(request, notice.dedupe_ref, notice.template in settings.urgent))
    return jobs, skipped


@dataclass(frozen=True)
class Limits:
    dedupe_window: timedelta = timedelta(hours=12)
    bucket_capacity: int = 3  # messages a recipient may get in a burst
    refill_every: timedelta = timedelta(minutes=10)  # one more allowed per interval
    max_attempts: int = 5
    backoff_base: timedelta = timedelta(seconds=30)
    backoff_cap: timedelta = timedelta(hours=1)
    jitter: float = 0.5  # delay drawn from [(1 - jitter) * d, d]


class Verdict(StrEnum):
    SEND = "send"
    DEFER = "defer"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    until: datetime | None = None
    reason: str = ""  # a DeferReason for DEFER, free text for DUPLICATE


@dataclass
class _Bucket:
    tokens: float
    at: datetime


@dataclass
class DeliveryPolicy:
    """Decides send/defer/duplicate before an attempt, and retry/dead-letter after a failure."""

    limits: Limits = field(default_factory=Limits)
    sent: dict[str, datetime] = field(default_factory=dict)  # dedupe key → delivered at
    inflight: dict[str, str] = field(default_factory=dict)  # dedupe key → notification id
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    @staticmethod
    def dedupe_key(job: Job, settings: AccountSettings, now: datetime) -> str:
        """project + recipient + template + alarm id (or the local day when a notice has no
        reference). The project is part of it: references such as command ids are unique only
        within a project, and one phone may belong to holders in two projects."""
        tz = settings.quiet_hours.tz if settings.quiet_hours else "Asia/Shanghai"
        ref = job.dedupe_ref or now.astimezone(ZoneInfo(tz)).date().isoformat()
        r = job.request
        return f"{r.project_id}|{r.channel}:{r.recipient}|{r.template}|{ref}"

    def admit(self, job: Job, settings: AccountSettings, now: datetime) -> Decision:
        key = self.dedupe_key(job, settings, now)
        owner = self.inflight.get(key)
        if owner is not None and owner != job.notification_id:
            return Decision(Verdict.DUPLICATE, reason=f"same as {owner} in flight")
        last = self.sent.get(key)
        if owner is None and last is not None and now - last < self.limits.dedupe_window:
            return Decision(Verdict.DUPLICATE, reason=f"sent at {last.isoformat()}")
        self.inflight[key] = job.notification_id
        quiet = settings.quiet_hours
        bypass = job.urgent and settings.urgent_bypasses_quiet_hours
        if quiet is not None and not bypass and quiet.contains(now):
            return Decision(Verdict.DEFER, quiet.end_after(now), DeferReason.QUIET_HOURS)
        # An urgent notice (power cut) is never held back by the bucket, and a retry does not
        # pay again: the failed attempt reached nobody, and its first admission took the token.
        if not job.urgent and job.attempt == 0:
            wait = self._take_token(job.request.recipient, now)
            if wait is not None:
                return Decision(Verdict.DEFER, now + wait, DeferReason.RATE_LIMITED)
        return Decision(Verdict.SEND)

    def _take_token(self, recipient: str, now: datetime) -> timedelta | None:
        lim = self.limits
        bucket = self.buckets.get(recipient) or _Bucket(float(lim.bucket_capacity), now)
        elapsed = max((now - bucket.at) / lim.refill_every, 0.0)
        bucket = _Bucket(min(float(lim.bucket_capacity), bucket.tokens + elapsed), now)
        self.buckets[recipient] = bucket
        if bucket.tokens >= 1.0 - 1e-9:
            bucket.tokens = max(bucket.tokens - 1.0, 0.0)
            return None
        # whole seconds, rounded up: a wait rounded down to microseconds could leave the
        # bucket a hair short of one token forever
        return timedelta(seconds=math.ceil((lim.refill_every * (1.0 - bucket.tokens)).total_seconds()))

    def delivered(self, job: Job, settings: AccountSettings, now: datetime) -> None:
        key = self.dedupe_key(job, settings, now)
        self.inflight.pop(key, None)
        self.sent[key] = now

    def abandoned(self, job: Job, settings: AccountSettings, now: datetime) -> None:
        """A dead-lettered job frees its key: a later occurrence may try again."""
        key = self.dedupe_key(job, settings, now)
        if self.inflight.get(key) == job.notification_id:
            del self.inflight[key]

    def backoff_bounds(self, attempt: int) -> tuple[timedelta, timedelta]:
        """The delay range after failed attempt number ``attempt`` (1-based)."""
        lim = self.limits
        high = min(lim.backoff_cap, lim.backoff_base * (2 ** min(attempt - 1, 30)))
        return high * (1.0 - lim.jitter), high

    def retry_at(self, attempt: int, retryable: bool, now: datetime, rng: random.Random) -> datetime | None:
        """When to try again after a failed attempt, or None: dead-letter it."""
        if not retryable or attempt >= self.limits.max_attempts:
            return None
        low, high = self.backoff_bounds(attempt)
        return now + low + (high - low) * rng.random()
