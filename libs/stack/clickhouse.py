"""The one adapter for ClickHouse: open a client for a DSN and apply versioned migrations.

The same SQL runs on the embedded chDB engine (``chdb:///path``) and on a ClickHouse server
(``http://host:8123``). A chDB data directory belongs to the one process that opens it; a
second process gets :class:`StoreError` naming the lock, and reaches the store through the
owner (the ``meterflow dev`` process) instead.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "mf_schema_migrations"


class StoreError(Exception):
    """ClickHouse cannot be opened or queried; the message names the DSN and the cause."""


def open_client(dsn: str) -> Client:
    """A clickhouse-connect client for ``dsn`` (chdb:// or http(s)://), checked with ``SELECT 1``."""
    try:
        client = clickhouse_connect.get_client(dsn=dsn)
        client.command("SELECT 1")
        return client
    except Exception as exc:
        text = str(exc)
        if "Another server instance" in text or "same directory" in text:
            raise StoreError(
                f"ClickHouse store {dsn} is held by another process (the running `meterflow dev`?)"
            ) from None
        raise StoreError(
            f"cannot open ClickHouse at {dsn}: {text.splitlines()[0] if text else exc!r}"
        ) from None


def health(client: Client) -> dict[str, Any]:
    """Version and liveness of the store, for status reports."""
    version = client.command("SELECT version()")
    return {"ok": True, "version": str(version)}


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped in ``libs/stack/migrations``, in order."""
    found = []
    for entry in resources.files("libs.stack.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def statements(sql: str) -> list[str]:
    """Split a migration file into statements: ``--`` comment lines dropped, split on ``;``."""
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in code.split(";") if s.strip()]


def migrate(client: Client) -> list[str]:
    """Apply the migrations not yet applied; returns the names applied now. Idempotent."""
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version UInt32, name String, "
        "applied_at DateTime64(3) DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {MIGRATIONS_TABLE}").result_rows}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        for statement in statements(sql):
            client.command(statement)
        client.insert(MIGRATIONS_TABLE, [[version, name]], column_names=["version", "name"])
        applied.append(name)
        log.info("applied migration %s", name)
    return applied
