"""Outbound webhooks: signed event deliveries to integrators' URLs (MISSION.md F3).

**What an integrator receives.** A ``POST`` to the subscription's URL with
``Content-Type: application/json``; the body is the event exactly as it travels on Kafka
(``{"type": "billing.v1.balance_changed", "event_id": …, "project_id": …, …}``, see
:mod:`libs.events.codec`) and the headers

- ``X-Meterflow-Event``: the event type;
- ``X-Meterflow-Delivery``: the event id — the same on every retry, so the receiver can
  deduplicate (a delivery may arrive more than once);
- ``X-Meterflow-Signature``: ``t=<unix seconds>,v1=<hex>`` with
  ``v1 = HMAC-SHA256(secret, "<t>." + body)`` over the raw body bytes. ``t`` is the time of
  *this attempt*, so a retry hours later is still fresh; more than one ``v1`` may appear while
  a secret is being rotated, and any one matching is enough.

The receiver verifies with :func:`verify_signature` (or the same few lines in its language):
recompute the HMAC over the raw body, compare in constant time, reject ``t`` older than the
tolerance (5 minutes) to stop replays. It answers 2xx when it has stored the event.

**Retries.** Network errors, timeouts, 5xx and 429 are retried with exponential backoff and
jitter (``Retry-After`` honoured, up to the policy's max delay); other statuses (4xx, 3xx — we do
not follow redirects) are final: the result is ``rejected``, and a 410 Gone means the receiver
asks to be unsubscribed. After ``max_attempts`` the result is ``dead``. Each
:class:`DeliveryResult` is a delivery-log record.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from libs.events.base import Event
from libs.events.codec import Codec

SIGNATURE_HEADER = "X-Meterflow-Signature"
EVENT_HEADER = "X-Meterflow-Event"
DELIVERY_HEADER = "X-Meterflow-Delivery"
USER_AGENT = "meterflow-webhooks/1"
DEFAULT_TOLERANCE = timedelta(minutes=5)

DeliveryStatus = Literal["delivered", "rejected", "dead"]


class WebhookSignatureError(ValueError):
    """A delivery whose signature header is missing, malformed, wrong or too old."""


class Subscription(BaseModel):
    """An integrator's subscription: which events of which projects go to which URL.

    ``event_types`` holds exact type names (``billing.v1.balance_changed``) or prefixes ending
    in ``*`` (``billing.*``, ``billing.v1.*``, ``*`` for everything). ``project_ids`` must name
    the projects explicitly: an empty tuple matches nothing, so a subscription never spans
    tenants by omission.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=64)
    project_ids: tuple[str, ...]
    event_types: tuple[str, ...]
    url: AnyHttpUrl
    secret: str = Field(min_length=16, repr=False)
    active: bool = True

    def matches(self, event_type: str, project_id: str) -> bool:
        """Whether an event of ``event_type`` in ``project_id`` goes to this subscription."""
        if not self.active or project_id not in self.project_ids:
            return False
        return any(_type_matches(pattern, event_type) for pattern in self.event_types)


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Meterflow-Signature`` value for ``body`` sent at unix time ``timestamp``."""
    return f"t={timestamp},v1={_hmac(secret, timestamp, body)}"


def _hmac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    now: datetime | None = None,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> int:
    """Check an ``X-Meterflow-Signature`` header against the raw ``body``; return its timestamp.

    For integrators. ``body`` must be the bytes as received (parsing and re-serialising JSON
    changes them). Raises :class:`WebhookSignatureError` if the header is missing or malformed,
    no ``v1`` matches, or ``t`` is further than ``tolerance`` from ``now`` (default: the
    current time).
    """
    if not header:
        raise WebhookSignatureError("no signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise WebhookSignatureError("signature header needs t=<unix> and v1=<hex>")
    moment = now or datetime.now(UTC)
    if abs(moment.timestamp() - timestamp) > tolerance.total_seconds():
        raise WebhookSignatureError(f"signature timestamp {timestamp} is outside ±{tolerance}")
    expected = _hmac(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise WebhookSignatureError("signature does not match the body")
    return timestamp


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: delay before attempt n+1 is ``min(max_delay, base_delay·2^(n-1))``, less up
    to ``jitter`` of it at random (so many failing deliveries do not retry in lockstep)."""

    max_attempts: int = 8
    base_delay: float = 2.0
    max_delay: float = 600.0
    jitter: float = 0.5
    timeout: float = 10.0

    def backoff(self, attempt: int, draw: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); ``draw`` is uniform in [0, 1)."""
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return delay * (1 - self.jitter * draw)


@dataclass(frozen=True)
class DeliveryAttempt:
    """One HTTP try: when, what came back (status or error) and how long it took."""

    number: int
    at: datetime
    status_code: int | None
    error: str | None
    duration: float


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of delivering one event to one subscription: a delivery-log record."""

    subscription_id: str
    event_id: str
    event_type: str
    url: str
    status: DeliveryStatus
    attempts: tuple[DeliveryAttempt, ...]

    @property
    def last_status_code(self) -> int | None:
        """The HTTP status of the last attempt, None if it never got a response."""
        return self.attempts[-1].status_code if self.attempts else None

    @property
    def last_error(self) -> str | None:
        """The last attempt's error text (network error or non-2xx status), None if delivered."""
        return self.attempts[-1].error if self.attempts else None

    @property
    def gone(self) -> bool:
        """The receiver answered 410 Gone: deactivate the subscription."""
        return self.last_status_code == 410


@dataclass
class WebhookSender:
    """Delivers events to subscriptions over an injected :class:`httpx.AsyncClient`.

    ``clock`` (aware now) stamps signatures and attempts; ``sleep`` waits between attempts;
    ``draw`` gives the jitter. Tests inject all three; production keeps the defaults.
    """

    client: httpx.AsyncClient
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    draw: Callable[[], float] = random.random
    codec: Codec = field(default_factory=Codec)

    def body(self, event: Event) -> bytes:
        """The JSON body for ``event``: its wire form, ``{"type": …, **event.model_dump(mode="json")}``."""
        return self.codec.encode(event)

    async def deliver(self, event: Event, subscriptions: Iterable[Subscription]) -> list[DeliveryResult]:
        """Send ``event`` to every subscription it matches, concurrently; one result per match."""
        targets = matching(subscriptions, event)
        return list(await asyncio.gather(*(self.send(s, event) for s in targets)))

    async def send(self, subscription: Subscription, event: Event) -> DeliveryResult:
        """Deliver ``event`` to ``subscription`` with retries; never raises for HTTP failures."""
        body = self.body(event)
        attempts: list[DeliveryAttempt] = []
        status: DeliveryStatus = "dead"
        for number in range(1, self.policy.max_attempts + 1):
            attempt, response = await self._attempt(number, subscription, event, body)
            attempts.append(attempt)
            if response is not None and response.is_success:
                status = "delivered"
                break
            if response is not None and not _retryable(response.status_code):
                status = "rejected"
                break
            if number == self.policy.max_attempts:
                break
            delay = self.policy.backoff(number, self.draw())
            retry_after = _retry_after(response, self.clock()) if response is not None else None
            if retry_after is not None:
                delay = min(max(retry_after, 0.0), self.policy.max_delay)
            await self.sleep(delay)
        return DeliveryResult(
            subscription.id, event.event_id, event.TYPE, str(subscription.url), status, tuple(attempts)
        )

    async def _attempt(
        self, number: int, subscription: Subscription, event: Event, body: bytes
    ) -> tuple[DeliveryAttempt, httpx.Response | None]:
        now = self.clock()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: event.TYPE,
            DELIVERY_HEADER: event.event_id,
            SIGNATURE_HEADER: sign(subscription.secret, body, int(now.timestamp())),
        }
        started = time.monotonic()
        try:
            response = await self.client.post(
                str(subscription.url),
                content=body,
                headers=headers,
                timeout=self.policy.timeout,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return DeliveryAttempt(number, now, None, failure, time.monotonic() - started), None
        error = None if response.is_success else f"HTTP {response.status_code}: {response.text[:200]}"
        return DeliveryAttempt(number, now, response.status_code, error, time.monotonic() - started), response


def _retryable(status_code: int) -> bool:
    return status_code >= 500 or status_code == 429


def _retry_after(response: httpx.Response, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date, RFC 9110 §10.2.3)."""
    header = response.headers.get("Retry-After")
    if not header:
        return None
    value = header.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - now).total_seconds()


def matching(subscriptions: Iterable[Subscription], event: Event) -> list[Subscription]:
    """The subscriptions an event goes to (for callers that queue deliveries instead of sending)."""
    return [s for s in subscriptions if s.matches(event.TYPE, event.project_id)]
