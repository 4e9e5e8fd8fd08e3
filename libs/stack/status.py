"""`meterflow status`: broker, topics, consumer-group lag and ClickHouse health.

Finds the broker from ``MF_KAFKA_BOOTSTRAP`` or, for the embedded stack, from the running
`meterflow dev` (``MF_STATE_DIR/stack.json``). The chDB store belongs to that process, so its
health is asked of the stack's /status endpoint; a ClickHouse server is queried directly.
Exit code 0 when everything answers, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from aiokafka import TopicPartition

from libs.events.topics import CATALOGUE, DEAD_LETTER
from libs.settings import CommonSettings, ConfigError, load
from libs.stack import deadletter
from libs.stack.broker import BrokerError, check_reachable, group_offsets, high_watermarks, partition_counts
from libs.stack.clickhouse import StoreError, health, open_client
from libs.stack.deadletter_log import read_letters


def stack_file(settings: CommonSettings) -> dict[str, Any] | None:
    """The running embedded stack's description, if one runs."""
    path = Path(settings.state_dir) / "stack.json"
    return json.loads(path.read_text()) if path.exists() else None


def resolve_bootstrap(settings: CommonSettings) -> str:
    """The configured bootstrap, or the running embedded stack's; BrokerError when neither."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    stack = stack_file(settings)
    if stack is None:
        raise BrokerError(
            f"no MF_KAFKA_BOOTSTRAP and no embedded stack running on {settings.state_dir} (start it: make run)"
        )
    return str(stack["bootstrap"])


def broker_report(bootstrap: str) -> dict[str, Any]:
    """Topics with partitions and message counts, each consumer group's lag, and the dead letters
    per service (read from mf.dead-letter)."""
    check_reachable(bootstrap)
    counts = partition_counts(bootstrap)
    tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
    marks = asyncio.run(high_watermarks(bootstrap, tps))
    topics = {
        t: {"partitions": n, "messages": sum(marks[TopicPartition(t, p)] for p in range(n))}
        for t, n in counts.items()
    }
    missing = [t.name for t in CATALOGUE if t.name not in counts]
    groups = {}
    for group, offsets in group_offsets(bootstrap).items():
        lag = {f"{tp.topic}[{tp.partition}]": max(marks.get(tp, off) - off, 0) for tp, off in offsets.items()}
        groups[group] = {"lag": sum(lag.values()), "partitions": lag}
    letters = asyncio.run(read_letters(bootstrap)) if counts.get(DEAD_LETTER.name) else []
    return {
        "ok": not missing,
        "bootstrap": bootstrap,
        "topics": topics,
        "missing_topics": missing,
        "groups": groups,
        "dead_letters": deadletter.counts(letters),
    }


def clickhouse_report(settings: CommonSettings) -> dict[str, Any]:
    """Health of the configured ClickHouse, or of the embedded store via the stack's /status."""
    stack = stack_file(settings)
    if settings.clickhouse_dsn is None and stack is not None:
        try:
            doc = httpx.get(f"{stack['http']}/status", timeout=10).json()
            return dict(doc["clickhouse"], via=stack["http"], archive=doc.get("archive"))
        except httpx.HTTPError as exc:
            return {"ok": False, "error": f"stack endpoint {stack['http']} did not answer: {exc}"}
    try:
        client = open_client(settings.clickhouse_target)
        return dict(health(client), dsn=settings.clickhouse_target)
    except StoreError as exc:
        return {"ok": False, "error": str(exc)}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow status`."""
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _print_text(report: dict[str, Any]) -> None:
    b, c = report["broker"], report["clickhouse"]
    print(
        f"broker      {'ok' if b.get('ok') else 'FAIL'}  {b.get('bootstrap', '')} {b.get('error', '')}".rstrip()
    )
    for name, t in sorted(b.get("topics", {}).items()):
        print(f"  topic     {name:<20} partitions {t['partitions']:>3}  messages {t['messages']:>10}")
    for name in b.get("missing_topics", []):
        print(f"  topic     {name:<20} MISSING")
    for group, g in sorted(b.get("groups", {}).items()):
        print(f"  group     {group:<20} lag {g['lag']}")
    for service, d in sorted(b.get("dead_letters", {}).items()):
        print(
            f"  dead      {service:<20} {d['dead_letters']} on mf.dead-letter, {d['not_retried']} not retried"
            " (meterflow dead-letter list)"
        )
    detail = c.get("version") or c.get("error", "")
    print(f"clickhouse  {'ok' if c.get('ok') else 'FAIL'}  {c.get('dsn', '')} {detail}".rstrip())
    if c.get("archive"):
        a = c["archive"]
        print(
            f"  archive   running={a['running']} archived_this_run={a['archived_this_run']} "
            f"restored_at_start={a['restored_at_start']}"
        )


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow status`."""
    try:
        settings = load(CommonSettings)
    except ConfigError as exc:
        print(f"meterflow status: {exc}", file=sys.stderr)
        return 2
    try:
        broker = broker_report(resolve_bootstrap(settings))
    except BrokerError as exc:
        broker = {"ok": False, "error": str(exc)}
    store = clickhouse_report(settings)
    report: dict[str, Any] = {
        "broker": broker,
        "clickhouse": store,
        "ok": bool(broker.get("ok") and store.get("ok")),
    }
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_text(report)
    return 0 if report["ok"] else 1
