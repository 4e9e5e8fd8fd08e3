"""`meterflow archive run|restore|stats`: the event-log archive as a production tool.

``run`` archives the catalogue topics into ClickHouse until SIGTERM (the backup job of a
production deployment); ``restore`` writes the archive back into an empty cluster; ``stats``
counts what the archive holds per topic. The embedded stack does all of this by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from libs.events.topics import CATALOGUE
from libs.settings import CommonSettings, ConfigError, load
from libs.stack.archive import ArchiveError, Archiver, archived_counts, restore
from libs.stack.broker import BrokerError, check_reachable, ensure_topics
from libs.stack.clickhouse import StoreError, migrate, open_client
from libs.stack.runtime import setup_logging


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow archive`."""
    parser.add_argument("action", choices=["run", "restore", "stats"])


async def _archive_forever(bootstrap: str, settings: CommonSettings) -> int:
    client = open_client(settings.clickhouse_target)
    migrate(client)
    ensure_topics(bootstrap, CATALOGUE)
    archiver = Archiver(bootstrap, client, [t.name for t in CATALOGUE])
    await archiver.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await archiver.run(stop)
    print(f"archived {archiver.archived} messages", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow archive`."""
    try:
        settings = load(CommonSettings)
        if args.action == "stats":
            for tp, n in sorted(archived_counts(open_client(settings.clickhouse_target)).items()):
                print(f"{tp.topic}[{tp.partition}] {n}")
            return 0
        if not settings.kafka_bootstrap:
            raise ConfigError("MF_KAFKA_BOOTSTRAP: required (the embedded stack archives by itself)")
        check_reachable(settings.kafka_bootstrap)
        setup_logging(settings.log_level)
        if args.action == "run":
            return asyncio.run(_archive_forever(settings.kafka_bootstrap, settings))
        client = open_client(settings.clickhouse_target)
        report = asyncio.run(restore(settings.kafka_bootstrap, client))
        print(
            f"restored {sum(report.restored.values())} messages into {len(report.restored)} partitions; "
            f"{len(report.already_present)} partitions already complete"
        )
        return 0
    except (ConfigError, BrokerError, StoreError, ArchiveError) as exc:
        print(f"meterflow archive: {exc}", file=sys.stderr)
        return 2
