"""Session fixtures: a real Kafka broker and a real ClickHouse engine, never mocks.

- ``bootstrap``: the broker named by ``MF_KAFKA_BOOTSTRAP``, or an embedded Tansu started on a
  free loopback port for the session.
- ``clickhouse``: the server named by ``MF_TEST_CLICKHOUSE_DSN``, or chDB in a temp directory
  (one chDB path per process is all the engine allows); ``store`` gives each test its own
  database on it with the migrations applied.
"""

from __future__ import annotations

import os

# Every event built without validation (libs/events/trusted.py) is checked against validation,
# here and in every service the tests start (they inherit the environment).
os.environ["MF_EVENTS_CHECK_TRUSTED"] = "1"
import uuid
from collections.abc import Iterator

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from libs.stack.broker import EmbeddedBroker
from libs.stack.clickhouse import migrate, open_client


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    external = os.environ.get("MF_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = EmbeddedBroker().start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def fresh_broker() -> Iterator[EmbeddedBroker]:
    """A broker of the test's own (for tests that stop and restart one)."""
    broker = EmbeddedBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def clickhouse_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return os.environ.get("MF_TEST_CLICKHOUSE_DSN") or f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture(scope="session")
def clickhouse(clickhouse_dsn: str) -> Client:
    return open_client(clickhouse_dsn)


@pytest.fixture
def store(clickhouse: Client, clickhouse_dsn: str) -> Iterator[Client]:
    """A client on a database of the test's own, migrated."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    clickhouse.command(f"CREATE DATABASE {name}")
    client = clickhouse_connect.get_client(dsn=clickhouse_dsn, database=name)
    migrate(client)
    try:
        yield client
    finally:
        clickhouse.command(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def topic_name() -> str:
    """A topic name no other test uses."""
    return f"test.{uuid.uuid4().hex[:12]}"
