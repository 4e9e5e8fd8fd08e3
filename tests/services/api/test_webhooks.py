"""Webhook deliveries against a real HTTP receiver on 127.0.0.1 that checks every signature."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from libs.events.billing import BalanceChanged
from services.api.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    RetryPolicy,
    Subscription,
    WebhookSender,
    WebhookSignatureError,
    sign,
    verify_signature,
)

SECRET = "whsec_0123456789abcdef"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_error: str | None


@dataclass
class Receiver:
    """An integrator's endpoint: verifies signatures, answers from a per-path script."""

    server: ThreadingHTTPServer
    scripts: dict[str, list[tuple[int, dict[str, str], float]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def script(self, path: str, *steps: tuple[int, dict[str, str], float]) -> None:
        """Answer the next requests to ``path`` with (status, headers, delay); then 200."""
        self.scripts[path] = list(steps)

    def next_step(self, path: str) -> tuple[int, dict[str, str], float]:
        with self.lock:
            steps = self.scripts.get(path) or []
            return steps.pop(0) if steps else (200, {}, 0.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                verify_signature(SECRET, self.headers.get(SIGNATURE_HEADER), body)
                error = None
            except WebhookSignatureError as exc:
                error = str(exc)
            recv = holder["r"]
            with recv.lock:
                recv.received.append(Received(self.path, dict(self.headers.items()), body, error))
            status, headers, delay = recv.next_step(self.path)
            if delay:
                time.sleep(delay)
            if error is not None:
                status = 401
            payload = b"nope" if status >= 300 else b"ok"
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender timed out and hung up, as the timeout test intends

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["r"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield holder["r"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Sleeps:
    """The sender's sleep: records the delays instead of waiting them."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def event(project_id: str = "proj-1") -> BalanceChanged:
    return BalanceChanged(
        project_id=project_id,
        subject_id="acct-101",
        account_id="acct-101",
        delta_fen=-1234,
        balance_fen=8766,
        reason="charge",
    )


def subscription(url: str, **kwargs: Any) -> Subscription:
    fields: dict[str, Any] = {
        "id": "sub-1",
        "project_ids": ("proj-1",),
        "event_types": ("billing.*",),
        "url": url,
        "secret": SECRET,
    }
    return Subscription(**(fields | kwargs))


POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=30.0, jitter=0.5, timeout=2.0)


def sender(
    client: httpx.AsyncClient, sleeps: Sleeps, policy: RetryPolicy = POLICY, **kwargs: Any
) -> WebhookSender:
    return WebhookSender(client, policy=policy, sleep=sleeps, draw=lambda: 0.5, **kwargs)


async def test_delivered_once_with_a_valid_signature(receiver: Receiver) -> None:
    sleeps = Sleeps()
    fact = event()
    async with httpx.AsyncClient() as client:
        result = await sender(client, sleeps).send(subscription(receiver.url("/hook")), fact)
    assert result.status == "delivered" and len(result.attempts) == 1
    assert result.last_status_code == 200 and result.last_error is None and not result.gone
    assert result.event_id == fact.event_id and result.event_type == "billing.v1.balance_changed"
    [request] = receiver.received
    assert request.signature_error is None
    assert request.headers[EVENT_HEADER] == "billing.v1.balance_changed"
    assert request.headers[DELIVERY_HEADER] == fact.event_id
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.body)
    assert body == {"type": "billing.v1.balance_changed", **fact.model_dump(mode="json")}
    assert sleeps.delays == []


async def test_500_then_success_is_retried_with_the_same_delivery_id(receiver: Receiver) -> None:
    receiver.script("/hook", (500, {}, 0.0), (502, {}, 0.0))
    sleeps = Sleeps()
    async with httpx.AsyncClient() as client:
        result = await sender(client, sleeps).send(subscription(receiver.url("/hook")), event())
    assert result.status == "delivered"
    assert [a.status_code for a in result.attempts] == [500, 502, 200]
    assert result.attempts[0].error == "HTTP 500: nope"
    assert sleeps.delays == [0.75, 1.5]  # 1s, 2s less half of the jitter range (draw = 0.5)
    assert len({r.headers[DELIVERY_HEADER] for r in receiver.received}) == 1
    assert all(r.signature_error is None for r in receiver.received)


@pytest.mark.parametrize("status", [410, 400, 404, 301])
async def test_other_4xx_and_redirects_are_not_retried(receiver: Receiver, status: int) -> None:
    receiver.script("/hook", (status, {"Location": "http://127.0.0.1:1/elsewhere"}, 0.0))
    sleeps = Sleeps()
    async with httpx.AsyncClient() as client:
        result = await sender(client, sleeps).send(subscription(receiver.url("/hook")), event())
    assert result.status == "rejected" and len(result.attempts) == 1
    assert result.last_status_code == status and result.gone is (status == 410)
    assert len(receiver.received) == 1 and sleeps.delays == []


async def test_retry_after_is_honoured(receiver: Receiver) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    receiver.script(
        "/hook",
        (429, {"Retry-After": "7"}, 0.0),
        (503, {"Retry-After": format_datetime(now + timedelta(seconds=20), usegmt=True)}, 0.0),
        (503, {"Retry-After": "3600"}, 0.0),
    )
    sleeps = Sleeps()
    async with httpx.AsyncClient() as client:
        result = await sender(client, sleeps, clock=lambda: now).send(
            subscription(receiver.url("/hook")), event()
        )
    assert result.status == "delivered" and len(result.attempts) == 4
    assert sleeps.delays == [7.0, 20.0, 30.0]  # the last one capped at the policy's max_delay


async def test_dead_after_max_attempts_with_exponential_backoff(receiver: Receiver) -> None:
    receiver.script("/hook", *[(503, {}, 0.0)] * 10)
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=6, base_delay=2.0, max_delay=20.0, jitter=0.0, timeout=2.0)
    async with httpx.AsyncClient() as client:
        result = await sender(client, sleeps, policy).send(subscription(receiver.url("/hook")), event())
    assert result.status == "dead" and len(result.attempts) == 6 and len(receiver.received) == 6
    assert sleeps.delays == [2.0, 4.0, 8.0, 16.0, 20.0]
    assert [a.number for a in result.attempts] == [1, 2, 3, 4, 5, 6]


async def test_timeout_is_retried(receiver: Receiver) -> None:
    receiver.script("/slow", (200, {}, 1.5))
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, timeout=0.3)
    async with httpx.AsyncClient() as client:
        result = await sender(client, sleeps, policy).send(subscription(receiver.url("/slow")), event())
    assert result.status == "delivered" and len(result.attempts) == 2
    first = result.attempts[0]
    assert first.status_code is None and first.error is not None and "Timeout" in first.error
    assert 0.25 < first.duration < 1.4


async def test_connection_refused_ends_dead() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]  # bound, then closed: nothing listens there
    sleeps = Sleeps()
    async with httpx.AsyncClient() as client:
        result = await sender(client, sleeps).send(subscription(f"http://127.0.0.1:{port}/hook"), event())
    assert result.status == "dead" and len(result.attempts) == POLICY.max_attempts
    assert all(a.status_code is None and "ConnectError" in (a.error or "") for a in result.attempts)
    assert len(sleeps.delays) == POLICY.max_attempts - 1


async def test_deliver_sends_only_to_matching_subscriptions(receiver: Receiver) -> None:
    subscriptions = [
        subscription(receiver.url("/a"), id="a"),
        subscription(receiver.url("/b"), id="b", event_types=("billing.v1.balance_changed",)),
        subscription(receiver.url("/c"), id="c", project_ids=("proj-2",)),
        subscription(receiver.url("/d"), id="d", active=False),
        subscription(receiver.url("/e"), id="e", event_types=("control.*",)),
    ]
    async with httpx.AsyncClient() as client:
        results = await sender(client, Sleeps()).deliver(event(), subscriptions)
    assert sorted(r.subscription_id for r in results) == ["a", "b"]
    assert all(r.status == "delivered" for r in results)
    assert sorted(r.path for r in receiver.received) == ["/a", "/b"]


async def test_a_receiver_with_another_secret_rejects_the_delivery(receiver: Receiver) -> None:
    async with httpx.AsyncClient() as client:
        wrong = subscription(receiver.url("/hook"), secret="some-other-secret-value")
        result = await sender(client, Sleeps()).send(wrong, event())
    assert result.status == "rejected" and result.last_status_code == 401
    assert receiver.received[0].signature_error == "signature does not match the body"


def test_subscription_matching() -> None:
    sub = subscription(
        "https://example.com/hook",
        project_ids=("p1", "p2"),
        event_types=("billing.*", "control.v1.command_failed"),
    )
    assert sub.matches("billing.v1.balance_changed", "p1")
    assert sub.matches("billing.v2.recharge_accepted", "p2")
    assert sub.matches("control.v1.command_failed", "p1")
    assert not sub.matches("control.v1.command_sent", "p1")
    assert not sub.matches("billingx.v1.a", "p1")
    assert not sub.matches("billing.v1.balance_changed", "p3")
    assert subscription("https://e.com", event_types=("*",)).matches(
        "acquisition.v1.reading_recorded", "proj-1"
    )
    assert not subscription("https://e.com", project_ids=()).matches("billing.v1.balance_changed", "proj-1")
    assert not subscription("https://e.com", active=False).matches("billing.v1.balance_changed", "proj-1")
    with pytest.raises(ValidationError):
        subscription("ftp://example.com/hook")
    with pytest.raises(ValidationError):
        subscription("https://example.com/hook", secret="short")
    assert SECRET not in repr(sub)


BODY = b'{"type":"billing.v1.balance_changed","event_id":"e-1"}'
T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
T0_UNIX = int(T0.timestamp())


def test_verify_signature_accepts_a_valid_header() -> None:
    header = sign(SECRET, BODY, T0_UNIX)
    assert header.startswith(f"t={T0_UNIX},v1=")
    assert verify_signature(SECRET, header, BODY, now=T0 + timedelta(seconds=299)) == T0_UNIX
    # during a secret rotation the sender may list several signatures; one match is enough
    rotated = f"{sign('old-secret-0123456789', BODY, T0_UNIX)},v1={header.split('v1=')[1]}"
    assert verify_signature(SECRET, rotated, BODY, now=T0) == T0_UNIX


@pytest.mark.parametrize(
    ("header", "body", "now", "message"),
    [
        (sign(SECRET, BODY, T0_UNIX), BODY.replace(b"e-1", b"e-2"), T0, "does not match"),
        (sign(SECRET, BODY, T0_UNIX), BODY + b" ", T0, "does not match"),
        (sign("another-secret-000000", BODY, T0_UNIX), BODY, T0, "does not match"),
        (sign(SECRET, BODY, T0_UNIX).replace(f"t={T0_UNIX}", f"t={T0_UNIX + 1}"), BODY, T0, "does not match"),
        (sign(SECRET, BODY, T0_UNIX), BODY, T0 + timedelta(seconds=301), "outside"),
        (sign(SECRET, BODY, T0_UNIX), BODY, T0 - timedelta(seconds=301), "outside"),
        (f"v1={sign(SECRET, BODY, T0_UNIX).split('v1=')[1]}", BODY, T0, "needs t="),
        (f"t={T0_UNIX}", BODY, T0, "needs t="),
        ("", BODY, T0, "no signature"),
        (None, BODY, T0, "no signature"),
    ],
)
def test_verify_signature_rejects(header: str | None, body: bytes, now: datetime, message: str) -> None:
    with pytest.raises(WebhookSignatureError, match=message):
        verify_signature(SECRET, header, body, now=now)


def test_verify_signature_tolerance_is_configurable() -> None:
    header = sign(SECRET, BODY, T0_UNIX)
    assert verify_signature(SECRET, header, BODY, now=T0 + timedelta(hours=1), tolerance=timedelta(hours=2))
    with pytest.raises(WebhookSignatureError):
        verify_signature(
            SECRET, header, BODY, now=T0 + timedelta(seconds=11), tolerance=timedelta(seconds=10)
        )


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(base_delay=2.0, max_delay=60.0, jitter=0.5)
    assert [policy.backoff(n, 0.0) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert policy.backoff(3, 0.999) == pytest.approx(4.004)
