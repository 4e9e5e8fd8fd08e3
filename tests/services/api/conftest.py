"""The API built in-process on the real broker and a real chDB store, and a seeded site.

``harness`` runs the app's lifespan (writer, read model) in the test's event loop and talks to it
through httpx's ASGI transport; facts are produced to the real broker, never injected.
``with_billing`` adds the real billing worker, a subprocess as in production.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI
from pydantic import SecretStr

from libs.events import (
    AccountOpened,
    AlarmRaised,
    BalanceChanged,
    Codec,
    CommandRequested,
    ConcentratorOnline,
    Event,
    MeterLostContact,
    MeterOnline,
    MeterRegistered,
    ReadingRecorded,
    Route,
    TariffPublished,
    UserCreated,
)
from libs.events.iam import PLATFORM
from libs.events.topics import CATALOGUE
from libs.stack.broker import ensure_topics, free_port
from services.api.analytics.sink import empty_rows, insert_rows, rows_for
from services.api.app import create_app
from services.api.context import Notifiers
from services.api.security import hash_password, issue_token
from services.api.settings import ApiSettings
from tests.processes import stop

SECRET = "test-secret-" + "x" * 32
PASSWORD = "correct horse battery"
PASSWORD_HASH = hash_password(PASSWORD)
CLIENT_IP = "203.0.113.7"
T0 = datetime(2024, 3, 1, 8, tzinfo=UTC)
T = TypeVar("T")


def settings(**overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "api_jwt_secret": SecretStr(SECRET), "api_apply_timeout_s": 1.0, "api_ready_timeout_s": 30.0,
        "api_admin_password": SecretStr(""), "api_webhook_key": SecretStr("w" * 32),
        "api_webhooks_deliver": False,
    }  # fmt: skip
    return ApiSettings(**(values | overrides))


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    producer: AIOKafkaProducer
    store: Client
    store_path: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="api-test-")))
    codec: Codec = field(default_factory=Codec)

    @property
    def views(self) -> Any:
        return self.app.state.api.views

    async def publish(self, *events: Event) -> None:
        for e in events:
            await self.producer.send(e.TOPIC, self.codec.encode(e), key=e.key)
        await self.producer.flush()

    async def until(self, check: Callable[[], T | None], timeout: float = 15.0) -> T:
        found = await self.app.state.api.readmodel.wait_until(check, timeout)
        assert found is not None, "the read model did not show the expected state in time"
        return found

    async def user(
        self,
        roles: tuple[str, ...],
        projects: tuple[str, ...] = (),
        all_projects: bool = False,
        accounts: tuple[str, ...] = (),
    ) -> tuple[str, dict[str, str]]:
        """A new user with these roles: (username, bearer headers)."""
        user_id, username = str(uuid.uuid4()), f"u-{uuid.uuid4().hex[:10]}"
        await self.publish(UserCreated(
            project_id=PLATFORM, subject_id=user_id, username=username, password_hash=PASSWORD_HASH,
            roles=roles, project_ids=projects, all_projects=all_projects, account_ids=accounts, created_by="test",
        ))  # fmt: skip
        await self.until(lambda: self.views.users.get(user_id))
        return username, {"Authorization": f"Bearer {issue_token(user_id, SECRET, 600)}"}

    def readings(self, events: list[Event]) -> None:
        """Put readings into the analytics store the way the sink does."""
        rows = empty_rows()
        for e in events:
            rows_for(e, rows)
        insert_rows(self.store, rows)


@asynccontextmanager
async def running(
    bootstrap: str, store: Client, notifiers: Notifiers | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    """The app with its lifespan running, an httpx client on it, and a producer for seeding."""
    ensure_topics(bootstrap, CATALOGUE)
    app = create_app(settings(**overrides), bootstrap, store, notifiers)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield Harness(app, client, producer, store)
    finally:
        await producer.stop()


def _billing(bootstrap: str, state: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(state), MF_BILLING_HTTP_PORT=str(port),
               MF_BILLING_FAUST_PORT=str(free_port()), MF_BILLING_SNAPSHOT_EVERY_S="1")  # fmt: skip
    with open(state.parent / "billing.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "services.cli", "billing"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip


@asynccontextmanager
async def with_billing(bootstrap: str, state: Path, apply_timeout_s: float = 10.0) -> AsyncIterator[Harness]:
    """The API (no analytics store) and the billing worker (state in ``state``, its log beside it)
    on ``bootstrap`` — a broker of the test's own, since billing folds everything on it."""
    ensure_topics(bootstrap, CATALOGUE)
    port, log_path = free_port(), state.parent / "billing.log"
    worker = _billing(bootstrap, state, port)
    try:
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient() as probe:
            while True:
                assert worker.poll() is None, log_path.read_text()[-3000:]
                try:
                    if (await probe.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "billing did not become ready"
                await asyncio.sleep(0.5)
        app = create_app(settings(api_apply_timeout_s=apply_timeout_s), bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                    yield Harness(app, client, producer, store=None)  # type: ignore[arg-type]
        finally:
            await producer.stop()
    finally:
        stop(worker)


@pytest.fixture
async def harness(bootstrap: str, store: Client) -> AsyncIterator[Harness]:
    async with running(bootstrap, store) as h:
        yield h


def site(project: str, meters: int = 2) -> list[Event]:
    """A small site of ``project``: one concentrator, meters m0.., a tariff, account a0 on m0 with a
    balance and an arrears alarm, m1 uninitialised and lost contact, and a command on m0.

    Ids deliberately repeat across projects (m0, a0, t1 …): isolation must come from the project."""
    route = ("c1", "b1")
    out: list[Event] = [
        TariffPublished(project_id=project, subject_id="t1", tariff_id="t1", version=1, name="flat",
                        effective_from=T0 - timedelta(days=30), definition={"kind": "single", "price_fen": "50"}),
        ConcentratorOnline(project_id=project, subject_id="c1", concentrator_id="c1", since=T0),
    ]  # fmt: skip
    for i in range(meters):
        meter = f"m{i}"
        out.append(MeterRegistered(
            project_id=project, subject_id=meter, meter_id=meter, address=f"{i:012d}", protocol="dlt645-2007",
            model="DDSY", medium="electricity", concentrator_id=route[0], bus_id=route[1],
        ))  # fmt: skip
    out += [
        MeterOnline(project_id=project, subject_id="m0", meter_id="m0", since=T0),
        MeterLostContact(project_id=project, subject_id="m1", meter_id="m1", consecutive_failures=3),
        AccountOpened(project_id=project, subject_id="a0", account_id="a0", mode="prepaid", meter_ids=("m0",),
                      tariff_id="t1", holder=f"holder of {project}", opened_by="test"),
        BalanceChanged(project_id=project, subject_id="a0", account_id="a0", delta_fen=-150, balance_fen=-150,
                       reason="charge"),
        AlarmRaised(project_id=project, subject_id="a0", alarm_id=f"al-{project}", kind="arrears", severity=3,
                    message="arrears"),
        CommandRequested(project_id=project, subject_id="m0", command_id=f"cmd-{project}", meter_id="m0",
                         action="trip", requested_by="test", reason="arrears"),
    ]  # fmt: skip
    return out


def site_readings(project: str, base: str) -> list[Event]:
    """Three hourly readings of m0 whose register starts at ``base`` kWh."""
    return [
        ReadingRecorded(
            project_id=project, subject_id="m0", meter_id="m0", time=T0 + timedelta(hours=h),
            received_at=T0 + timedelta(hours=h), route=Route(concentrator_id="c1", bus_id="b1"),
            registers={"active_import_kwh": {"total": Decimal(base) + h}},
        )
        for h in range(3)
    ]  # fmt: skip


async def seed(h: Harness, project: str) -> None:
    """Publish :func:`site` and wait until the read model shows all of it."""
    await h.publish(*site(project))
    views = h.views

    def seeded() -> bool | None:
        account = views.accounts.get((project, "a0"))
        m0, m1 = views.meters.get((project, "m0")), views.meters.get((project, "m1"))
        conc = views.concentrators.get((project, "c1"))
        done = (
            (project, f"cmd-{project}") in views.commands
            and (project, f"al-{project}") in views.alarms
            and (project, "t1") in views.tariffs
            and conc is not None
            and conc.status == "online"
            and account is not None
            and account.balance_fen == -150
            and m0 is not None
            and m0.comm == "online"
            and m1 is not None
            and m1.comm == "lost_contact"
        )
        return done or None

    await h.until(seeded)
