"""`meterflow topics list|create`: the topic catalogue, and idempotent creation on the broker."""

from __future__ import annotations

import argparse
import sys

from libs.events.topics import CATALOGUE
from libs.settings import CommonSettings, ConfigError, load
from libs.stack.broker import BrokerError, ensure_topics
from libs.stack.status import resolve_bootstrap


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow topics`."""
    parser.add_argument(
        "action", choices=["list", "create"], help="list the catalogue, or create missing topics"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow topics`."""
    if args.action == "list":
        for t in CATALOGUE:
            print(
                f"{t.name:<18} partitions {t.partitions:>3}  key: {t.key:<28} retention.ms {t.retention_ms:>12}"
                f"  {t.description}"
            )
        return 0
    try:
        report = ensure_topics(resolve_bootstrap(load(CommonSettings)), CATALOGUE)
    except (ConfigError, BrokerError) as exc:
        print(f"meterflow topics: {exc}", file=sys.stderr)
        return 2
    print(f"created: {', '.join(report.created) or '-'}; already there: {len(report.existing)}")
    if report.mismatched:
        print(f"partition count differs from the catalogue: {', '.join(report.mismatched)}", file=sys.stderr)
    return 0
