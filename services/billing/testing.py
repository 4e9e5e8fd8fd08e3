"""Synthetic billing data for tests and benchmarks: a site of prepaid accounts with hourly
readings and occasional recharges, and a reader of the live balances billing published."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import (
    AccountOpened,
    BalanceChanged,
    Codec,
    Event,
    MeterRegistered,
    Rate,
    ReadingRecorded,
    RechargeAccepted,
    Route,
    TariffPublished,
)
from libs.events.acquisition import MeterReplaced, ReplacementReason
from libs.events.billing import BillingMode
from libs.events.topics import LEDGER

ROUTE = Route(concentrator_id="c1", bus_id="b1")
SH = ZoneInfo("Asia/Shanghai")
SINGLE = {"kind": "single", "price_fen": "50"}
TOU_PEAK_VALLEY = {
    "kind": "tou",
    "prices": {"peak": "56.83", "valley": "28.83"},
    "schedules": [{"bands": [{"start": "08:00", "rate": "peak"}, {"start": "22:00", "rate": "valley"}]}],
}


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)  # type: ignore[misc, arg-type]


def prepaid_account(project: str, a: int, start: datetime) -> tuple[Event, Event, Event]:
    """Meter ``a`` of the site registered, its prepaid account opened on tariff ``t{a % 2}``, and
    the account's first recharge of 10,000 fen at ``start``."""
    meter, acct = f"{project}-m{a}", f"{project}-a{a}"
    return (
        MeterRegistered(
            event_id=f"reg-{meter}", project_id=project, subject_id=meter, meter_id=meter, address=f"{a:012d}",
            protocol="dlt645-2007", model="DDSY", medium="electricity", concentrator_id="c1", bus_id="b1",
            time=at(2024, 1, 1),
        ),
        AccountOpened(
            event_id=f"open-{acct}", project_id=project, subject_id=acct, account_id=acct, mode=BillingMode.PREPAID,
            meter_ids=(meter,), tariff_id=f"t{a % 2}", holder="住户", opened_by="op", time=at(2024, 1, 1),
        ),
        RechargeAccepted(
            event_id=f"rc-{acct}-0", project_id=project, subject_id=acct, account_id=acct, amount_fen=10_000,
            idempotency_key=f"{acct}-0", operator_id="op", channel="wechat", time=start,
        ),
    )  # fmt: skip


def scenario(
    project: str, accounts: int, hours: int, seed: int, clears: float = 0.0
) -> tuple[list[Event], list[Event]]:
    """(reference facts: tariffs, meters, accounts) and (the stream: readings and recharges).

    ``clears``: the chance, each hour of each meter, that the meter is cleared half an hour
    before its reading, as acquisition does it: a ``MeterReplaced`` (on mf.registry) from the
    registers then to zero, and the readings after it naming it in ``registers_since``.
    """
    rng = random.Random(seed)
    start = at(2024, 3, 1)
    reference: list[Event] = [
        TariffPublished(event_id=f"{project}-t{i}", project_id=project, subject_id=f"t{i}", tariff_id=f"t{i}",
                        version=1, name=f"t{i}", effective_from=at(2024, 1, 1), definition=d, time=at(2024, 1, 1))
        for i, d in enumerate((SINGLE, TOU_PEAK_VALLEY))
    ]  # fmt: skip
    stream: list[Event] = []
    for a in range(accounts):
        meter, acct = f"{project}-m{a}", f"{project}-a{a}"
        opening = prepaid_account(project, a, start)
        reference += opening[:2]
        stream.append(opening[2])
        total = Decimal(rng.randint(0, 5000))
        since: datetime | None = None
        for h in range(hours):
            when = start + timedelta(hours=h)
            if clears and h and rng.random() < clears:
                since = when - timedelta(minutes=30)
                final = total + Decimal(rng.randint(0, 150)) / 100
                stream.append(MeterReplaced(
                    event_id=f"clear-{meter}-{h}", project_id=project, subject_id=meter, meter_id=meter,
                    old_address=f"{a:012d}", new_address=f"{a:012d}", replaced_at=since, time=since,
                    final_registers={"active_import_kwh": {Rate.TOTAL: final}},
                    initial_registers={"active_import_kwh": {Rate.TOTAL: Decimal(0)}},
                    reason=ReplacementReason.CLEARED,
                ))  # fmt: skip
                total = Decimal(0)
            total += Decimal(rng.randint(0, 300)) / 100
            stream.append(ReadingRecorded(
                event_id=f"r-{meter}-{h}", project_id=project, subject_id=meter, sequence=h + 1, meter_id=meter,
                registers={"active_import_kwh": {Rate.TOTAL: total}}, meter_time=when, received_at=when,
                route=ROUTE, time=when, registers_since=since,
            ))  # fmt: skip
            if rng.random() < 0.05:
                stream.append(RechargeAccepted(
                    event_id=f"rc-{acct}-{h}", project_id=project, subject_id=acct, account_id=acct,
                    amount_fen=rng.randint(100, 5000), idempotency_key=f"{acct}-{h}", operator_id="op",
                    channel="cash", time=when,
                ))  # fmt: skip
    rng.shuffle(stream)  # interleave meters; per-meter order is restored below
    stream.sort(key=lambda e: e.time)
    return reference, stream


async def produce(bootstrap: str, events: list[Event], duplicate_every: int = 0, pace: int = 0) -> None:
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i, e in enumerate(events):
            await producer.send(e.TOPIC, codec.encode(e), key=e.key)
            if duplicate_every and i % duplicate_every == 0:
                await producer.send(e.TOPIC, codec.encode(e), key=e.key)  # an upstream redelivery
            if pace and i % pace == 0:
                await producer.flush()
                await asyncio.sleep(0.1)
        await producer.flush()
    finally:
        await producer.stop()


async def live_balances(bootstrap: str, project: str) -> dict[tuple[str, str], int]:
    """(project, account) -> the last balance billing published, for one project."""
    codec = Codec()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(LEDGER.name, p) for p in range(LEDGER.partitions)]
    out: dict[tuple[str, str], int] = {}
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        quiet = 0
        while quiet < 3:
            batch = await consumer.getmany(timeout_ms=300)
            quiet = 0 if batch else quiet + 1
            for records in batch.values():
                for r in records:
                    for e in codec.decode(r.value):
                        if isinstance(e, BalanceChanged) and e.project_id == project:
                            out[(e.project_id, e.account_id)] = e.balance_fen
    finally:
        await consumer.stop()
    return out
