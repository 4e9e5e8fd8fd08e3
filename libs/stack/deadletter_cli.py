"""`meterflow dead-letter list|retry`: what the processors parked on mf.dead-letter, and re-driving it.

- ``list [--service S] [--json]``: each dead letter — its offset on mf.dead-letter (its id), the
  service that parked it, where it came from, why, when, and whether it was retried;
- ``retry ID [ID …]`` / ``retry --all [--service S]``: re-publish each letter's value with its key
  to its source topic and partition, then record the retry on mf.dead-letter (``retried_of``), so
  ``list`` shows it retried and ``retry --all`` skips it. A retried fact that fails again is parked
  again, as a new letter.

Exit codes: 0 ok; 1 when an id names no dead letter (nothing is retried then) or a letter has no
source topic to go back to (notify's sender's); 2 for a configuration or broker error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiokafka.errors import KafkaError

from libs.settings import CommonSettings, ConfigError, load
from libs.stack.broker import BrokerError
from libs.stack.deadletter import DeadLetter, to_retry
from libs.stack.deadletter_log import read_letters, retry
from libs.stack.status import resolve_bootstrap


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow dead-letter`."""
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list the dead letters")
    listing.add_argument("--service", help="only those this service parked (billing, control, notify, …)")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    again = actions.add_parser("retry", help="re-publish dead letters to their source topic and partition")
    again.add_argument("ids", nargs="*", type=int, metavar="ID", help="offsets on mf.dead-letter")
    again.add_argument("--all", action="store_true", help="every dead letter not retried yet")
    again.add_argument("--service", help="with --all: only those this service parked")


def _print(letters: list[DeadLetter], as_json: bool) -> None:
    rows = [le.summary() for le in letters]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        retried = "retried" if r["retried"] else "-"
        print(f"{r['id']:>6}  {r['service']:<8} {r['source']:<28} {r['at']:<32} {retried:<7}  {r['reason']}")
    print(f"{len(rows)} dead letters")


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow dead-letter`."""
    try:
        bootstrap = resolve_bootstrap(load(CommonSettings))
        letters = asyncio.run(read_letters(bootstrap))
    except (ConfigError, BrokerError, KafkaError, OSError) as exc:
        print(f"meterflow dead-letter: {exc}", file=sys.stderr)
        return 2
    if args.action == "list":
        _print([le for le in letters if args.service in (None, le.service)], args.json)
        return 0
    if args.all == bool(args.ids):
        print("meterflow dead-letter retry: give IDs or --all", file=sys.stderr)
        return 2
    chosen, unknown = to_retry(letters, args.ids, args.all, args.service)
    if unknown:
        print(f"meterflow dead-letter retry: no dead letter {', '.join(map(str, unknown))}", file=sys.stderr)
        return 1
    homeless = [le.id for le in chosen if le.topic is None]
    if homeless:
        print(f"meterflow dead-letter retry: {homeless} have no source topic to go back to", file=sys.stderr)
        return 1
    asyncio.run(retry(bootstrap, chosen))
    for le in chosen:
        where = f"{le.topic}[{le.partition if le.partition is not None else 'by key'}]"
        print(f"retried {le.id} ({le.service}) to {where}")
    print(f"{len(chosen)} dead letters retried")
    return 0
