"""Readings through the event contract: codec cost, and packed readings through a real broker.

Prints, for 3-rate DL/T 645-style readings:
- encode / decode throughput of single-reading messages and of packed batches (500 a message);
- end to end on the embedded Tansu (or MF_KAFKA_BOOTSTRAP): produce packed readings with
  aiokafka, consume them with getmany and decode every reading; readings/s each way.
Run: `make bench` or `.venv/bin/python bench/event_codec.py [--readings N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import Codec, ReadingRecorded, Route, pack_readings, utcnow
from libs.events.topics import Topic
from libs.stack.broker import EmbeddedBroker, ensure_topics


def make_readings(n: int, meters: int = 1000) -> list[ReadingRecorded]:
    now = utcnow()
    route = Route(concentrator_id="c1", bus_id="b1")
    return [
        ReadingRecorded(
            project_id="bench",
            subject_id=f"m{i % meters}",
            meter_id=f"m{i % meters}",
            sequence=i // meters,
            registers={
                "active_import_kwh": {
                    "total": Decimal(i) / 100,
                    "peak": Decimal(i) / 300,
                    "flat": Decimal(i) / 300,
                    "valley": Decimal(i) / 300,
                }
            },
            instant={
                "voltage_a_v": Decimal("220.1"),
                "current_a_a": Decimal("5.02"),
                "power_kw": Decimal("1.104"),
            },
            received_at=now,
            meter_time=now,
            route=route,
        )
        for i in range(n)
    ]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}/s"


def codec_figures(readings: list[ReadingRecorded]) -> None:
    codec = Codec()
    t = time.perf_counter()
    singles = [codec.encode(r) for r in readings]
    print(
        f"encode single          {rate(len(readings), time.perf_counter() - t)}  ({len(singles[0])} B each)"
    )
    t = time.perf_counter()
    for value in singles:
        codec.decode(value)
    print(f"decode single          {rate(len(readings), time.perf_counter() - t)}")
    t = time.perf_counter()
    packed = pack_readings(readings, 12, max_per_message=500, codec=codec)
    print(f"pack (500/message)     {rate(len(readings), time.perf_counter() - t)}  ({len(packed)} messages)")
    t = time.perf_counter()
    decoded = sum(len(codec.decode(m.value)) for m in packed)
    print(f"decode packed          {rate(decoded, time.perf_counter() - t)}")


async def broker_figures(bootstrap: str, readings: list[ReadingRecorded]) -> None:
    topic = f"bench.readings.{os.getpid()}"
    ensure_topics(bootstrap, [Topic(topic, 12, "meter id", "bench")])
    codec = Codec()
    packed = pack_readings(readings, 12, max_per_message=500, codec=codec)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=8 << 20)
    await producer.start()
    t = time.perf_counter()
    futures = [await producer.send(topic, m.value, key=m.key, partition=m.partition) for m in packed]
    await asyncio.gather(*futures)
    print(f"produce packed         {rate(len(readings), time.perf_counter() - t)}  (aiokafka, acks=1)")
    await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(12)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    t, got = time.perf_counter(), 0
    while got < len(readings):
        for records in (await consumer.getmany(timeout_ms=1000)).values():
            for record in records:
                got += len(codec.decode(record.value))
    print(f"consume+decode packed  {rate(got, time.perf_counter() - t)}  (getmany, every reading validated)")
    await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=100_000)
    n = parser.parse_args().readings
    readings = make_readings(n)
    print(f"== event codec, {n:,} readings")
    codec_figures(readings)
    external = os.environ.get("MF_KAFKA_BOOTSTRAP")
    broker = None if external else EmbeddedBroker().start()
    try:
        asyncio.run(broker_figures(external or broker.bootstrap, readings))  # type: ignore[union-attr]
    finally:
        if broker:
            broker.stop()


if __name__ == "__main__":
    main()
