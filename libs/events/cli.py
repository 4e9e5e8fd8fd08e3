"""`meterflow events tail TOPIC`: print a topic's events decoded, one JSON object per line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.events.codec import Codec, EventDecodeError
from libs.settings import CommonSettings, ConfigError, load
from libs.stack.broker import BrokerError, check_reachable, partition_counts


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow events`."""
    sub = parser.add_subparsers(dest="action", required=True)
    tail = sub.add_parser("tail", help="print decoded events of a topic")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest message")
    tail.add_argument("-n", "--limit", type=int, default=0, help="stop after N events (0 = no limit)")
    tail.add_argument("--follow", action="store_true", help="keep waiting for new events")
    tail.add_argument(
        "--idle", type=float, default=2.0, help="without --follow: stop after this many quiet seconds"
    )


async def tail(bootstrap: str, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Print events of ``args.topic``; returns the number printed."""
    counts = partition_counts(bootstrap, [args.topic])
    if args.topic not in counts:
        raise BrokerError(f"topic {args.topic!r} does not exist")
    tps = [TopicPartition(args.topic, p) for p in range(counts[args.topic])]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    codec, printed, quiet = Codec(), 0, 0.0
    try:
        consumer.assign(tps)
        if args.from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        while args.follow or quiet < args.idle:
            batch = await consumer.getmany(timeout_ms=250)
            quiet = 0.0 if batch else quiet + 0.25
            for tp, records in sorted(batch.items()):
                for record in records:
                    try:
                        events = codec.decode(record.value)
                    except EventDecodeError as exc:
                        print(
                            orjson.dumps(
                                {"partition": tp.partition, "offset": record.offset, "error": str(exc)}
                            ).decode(),
                            file=out,
                            flush=True,
                        )
                        continue
                    for event in events:
                        doc = {
                            "partition": tp.partition,
                            "offset": record.offset,
                            "type": event.TYPE,
                            **event.model_dump(mode="json"),
                        }
                        print(orjson.dumps(doc).decode(), file=out, flush=True)
                        printed += 1
                        if args.limit and printed >= args.limit:
                            return printed
    finally:
        await consumer.stop()
        if codec.skipped:
            print(f"skipped unknown types: {dict(codec.skipped)}", file=sys.stderr)
    return printed


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow events`."""
    from libs.stack.status import resolve_bootstrap

    try:
        bootstrap = resolve_bootstrap(load(CommonSettings))
        check_reachable(bootstrap)
        asyncio.run(tail(bootstrap, args))
        return 0
    except (ConfigError, BrokerError) as exc:
        print(f"meterflow events: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
