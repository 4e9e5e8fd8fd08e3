"""The analytics sink and report queries: real events through the real broker into real chDB."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.client import Client

from libs.events import (
    AccountOpened,
    AlarmCleared,
    AlarmRaised,
    BalanceChanged,
    Codec,
    CommandAbandoned,
    CommandAcknowledged,
    CommandRequested,
    Event,
    MeterLostContact,
    MeterOnline,
    MeterRegistered,
    MeterReplaced,
    MeterUpdated,
    NotificationDeferred,
    NotificationRequested,
    ReadingRecorded,
    RechargeAccepted,
    RefundAccepted,
    Route,
    pack_readings,
)
from libs.events.acquisition import Rate
from libs.events.billing import ChargeApplied, ChargeLine, FreezeKind, MeterFrozen, SettlementIssued
from libs.events.topics import Topic
from libs.stack.broker import ensure_topics
from services.api.analytics import queries as q
from services.api.analytics.sink import OFFSETS_TABLE, Sink

P = "proj-a"
ROUTE = Route(concentrator_id="c1", bus_id="b1")
DAY1 = date(2024, 3, 1)
LOCAL = timedelta(hours=8)


def _at(day: date, hour: int) -> datetime:
    """Local (UTC+8) wall time as an aware UTC datetime."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC) - LOCAL


def _reading(meter: str, when: datetime, kwh: str) -> ReadingRecorded:
    return ReadingRecorded(
        project_id=P, subject_id=meter, meter_id=meter, time=when, received_at=when, route=ROUTE,
        registers={"active_import_kwh": {"total": Decimal(kwh), "peak": Decimal(kwh) / 2}},
        instant={"voltage_a_v": Decimal("220.1")},
    )  # fmt: skip


# meter -> register values at 08:00 and 20:00 local on 1 and 2 March
REGISTERS = {
    "m0": ["100", "110", "120", "135"],  # master: 10 + 15
    "m1": ["50", "54", "55", "60"],  # 4 + 5
    "m2": ["10", "13", "14", "20"],  # 3 + 6
}


def _events() -> tuple[list[ReadingRecorded], list[Event]]:
    readings = []
    for meter, values in REGISTERS.items():
        times = [
            _at(DAY1, 8),
            _at(DAY1, 20),
            _at(DAY1 + timedelta(days=1), 8),
            _at(DAY1 + timedelta(days=1), 20),
        ]
        readings += [_reading(meter, t, v) for t, v in zip(times, values, strict=True)]
    t0 = _at(DAY1, 9)
    others: list[Event] = [
        *[
            MeterRegistered(
                project_id=P,
                subject_id=m,
                meter_id=m,
                address=f"0000{i}",
                protocol="dlt645-2007",
                model="x",
                medium="electricity",
                concentrator_id="c1",
                bus_id="b1",
                time=t0 - timedelta(days=1),
            )
            for i, m in enumerate(REGISTERS)
        ],
        MeterUpdated(
            project_id=P, subject_id="m1", meter_id="m1", changes={"building": "B1", "master_meter_id": "m0"}
        ),
        MeterUpdated(
            project_id=P, subject_id="m2", meter_id="m2", changes={"building": "B1", "master_meter_id": "m0"}
        ),
        MeterUpdated(project_id=P, subject_id="m0", meter_id="m0", changes={"building": "B0"}),
        AccountOpened(
            project_id=P,
            subject_id="a1",
            account_id="a1",
            mode="prepaid",
            meter_ids=("m1",),
            tariff_id="t",
            holder="Li",
            opened_by="op",
            time=t0 - timedelta(days=1),
        ),
        AccountOpened(
            project_id=P,
            subject_id="a2",
            account_id="a2",
            mode="prepaid",
            meter_ids=("m2",),
            tariff_id="t",
            holder="Wang",
            opened_by="op",
            time=t0 - timedelta(days=1),
        ),
        BalanceChanged(
            project_id=P,
            subject_id="a1",
            account_id="a1",
            delta_fen=1000,
            balance_fen=1000,
            reason="recharge",
            time=t0 - timedelta(days=1),
            sequence=1,
        ),
        RechargeAccepted(
            project_id=P,
            subject_id="a1",
            account_id="a1",
            amount_fen=5000,
            idempotency_key="k1",
            operator_id="op",
            channel="wechat",
            time=t0,
        ),
        BalanceChanged(
            project_id=P,
            subject_id="a1",
            account_id="a1",
            delta_fen=5000,
            balance_fen=6000,
            reason="recharge",
            time=t0,
            sequence=2,
        ),
        BalanceChanged(
            project_id=P,
            subject_id="a1",
            account_id="a1",
            delta_fen=-400,
            balance_fen=5600,
            reason="charge",
            time=t0 + timedelta(hours=12),
            sequence=3,
        ),
        RefundAccepted(
            project_id=P,
            subject_id="a1",
            account_id="a1",
            amount_fen=600,
            idempotency_key="k2",
            operator_id="op",
            time=t0 + timedelta(days=1),
        ),
        BalanceChanged(
            project_id=P,
            subject_id="a2",
            account_id="a2",
            delta_fen=-300,
            balance_fen=-300,
            reason="charge",
            time=t0 - timedelta(days=40),
            sequence=1,
        ),
        AlarmRaised(
            project_id=P,
            subject_id="a2",
            alarm_id="al1",
            kind="arrears",
            severity=3,
            message="arrears",
            time=t0,
        ),
        AlarmRaised(
            project_id=P, subject_id="m1", alarm_id="al2", kind="overload", severity=2, message="o", time=t0
        ),
        AlarmCleared(
            project_id=P,
            subject_id="m1",
            alarm_id="al2",
            kind="overload",
            reason="ok",
            time=t0 + timedelta(hours=1),
        ),
        MeterOnline(project_id=P, subject_id="m2", meter_id="m2", since=t0, time=t0),
        MeterLostContact(
            project_id=P, subject_id="m2", meter_id="m2", consecutive_failures=3, time=t0 + timedelta(hours=2)
        ),
        CommandRequested(
            project_id=P,
            subject_id="m2",
            command_id="cmd1",
            meter_id="m2",
            action="trip",
            requested_by="policy:arrears",
            reason="arrears",
            time=t0,
        ),
        CommandAcknowledged(
            project_id=P, subject_id="m2", command_id="cmd1", meter_id="m2", time=t0 + timedelta(seconds=5)
        ),
        NotificationRequested(
            project_id=P,
            subject_id="138",
            notification_id="n1",
            channel="sms",
            recipient="138",
            template="arrears",
            account_id="a2",
            time=t0,
        ),
        NotificationDeferred(
            project_id=P, subject_id="138", notification_id="n1", channel="sms", reason="quiet_hours",
            until=t0 + timedelta(hours=8), attempt=0, time=t0 + timedelta(seconds=1),
        ),
        CommandRequested(
            project_id=P, subject_id="m2", command_id="cmd2", meter_id="m2", action="close",
            requested_by="policy:arrears", reason="recharged", time=t0,
        ),
        MeterReplaced(  # a clear (C5): same address, registers from zero
            project_id=P, subject_id="m2", meter_id="m2", old_address="000000000002", new_address="000000000002",
            final_registers={}, initial_registers={}, replaced_at=t0, reason="cleared", time=t0,
        ),
        CommandAbandoned(  # control gave up: no reply in time
            project_id=P, subject_id="m2", command_id="cmd2", meter_id="m2", action="close",
            outcome="timed_out", attempts=3, reason="no reply in time", requested_by="policy:arrears",
            time=t0 + timedelta(minutes=5),
        ),
        ChargeApplied(
            project_id=P, subject_id="a1", account_id="a1", meter_id="m0", time=t0, start=t0 - timedelta(hours=1),
            end=t0, lines=(LINE, LINE.model_copy(update={"rate": Rate.VALLEY, "amount_fen": 29})), amount_fen=86,
        ),
        SettlementIssued(
            project_id=P, subject_id="a2", account_id="a2", period="2024-02", time=t0, lines=(LINE,),
            units=Decimal(1), total_fen=57, charges=1,
        ),
        MeterFrozen(
            project_id=P, subject_id="a1", account_id="a1", meter_id="m0", kind=FreezeKind.DAILY,
            label="2024-03-02", at=t0, read_at=t0, time=t0, balance_fen=5600,
            registers={"active_import_kwh": {"total": Decimal(10), "peak": Decimal(4)}},
        ),
    ]  # fmt: skip
    return readings, others


LINE = ChargeLine(
    tariff_id="t1", version=1, rate="peak", units=Decimal(1), price_fen=Decimal("56.83"), amount_fen=57
)


REDELIVERED = (RechargeAccepted, BalanceChanged, AlarmRaised, ChargeApplied, SettlementIssued, MeterFrozen)


async def _produce(
    bootstrap: str, topics: dict[str, str], readings: list[ReadingRecorded], others: list[Event]
) -> None:
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topics["mf.readings"], value=m.value, key=m.key, partition=m.partition)
            for m in pack_readings(readings, 3, max_per_message=4, codec=codec)
        ]
        for event in others:
            value = codec.encode(event)
            futures.append(await producer.send(topics[event.TOPIC], value=value, key=event.key))
            if isinstance(event, REDELIVERED):
                futures.append(
                    await producer.send(topics[event.TOPIC], value=value, key=event.key)
                )  # redelivery
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _sink_all(bootstrap: str, store: Client, topics: list[str]) -> Sink:
    sink = Sink(bootstrap, store, topics, flush_seconds=0.2)
    await sink.start()
    stop = asyncio.Event()
    stop.set()  # drain to the current end
    await sink.run(stop)
    return sink


@pytest.fixture
async def loaded(bootstrap: str, store: Client) -> Client:
    prefix = f"test.{uuid.uuid4().hex[:8]}"
    names = [
        "mf.readings",
        "mf.registry",
        "mf.comm",
        "mf.billing",
        "mf.ledger",
        "mf.alarms",
        "mf.commands",
        "mf.notifications",
    ]
    topics = {n: f"{prefix}.{n}" for n in names}
    await asyncio.to_thread(ensure_topics, bootstrap, [Topic(t, 3, "k", "test") for t in topics.values()])
    readings, others = _events()
    await _produce(bootstrap, topics, readings, others)
    await _produce(bootstrap, topics, readings[:3], [])  # a redelivered reading batch
    sink = await _sink_all(bootstrap, store, list(topics.values()))
    redelivered = sum(isinstance(e, REDELIVERED) for e in others)
    assert sink.events == len(readings) + 3 + len(others) + redelivered
    assert not sink.decode_errors
    again = await _sink_all(bootstrap, store, list(topics.values()))
    assert again.events == 0  # the checkpoint holds
    store.command(f"TRUNCATE TABLE {OFFSETS_TABLE}")  # a crash before the checkpoint: all re-read
    await _sink_all(bootstrap, store, list(topics.values()))
    return store


def _rows(client: Client, query: tuple[str, dict[str, object]]) -> list[tuple[object, ...]]:
    sql, params = query
    return [tuple(r) for r in client.query(sql, parameters=params).result_rows]


@pytest.mark.slow
async def test_sink_fills_every_table_once(loaded: Client) -> None:
    counts = {
        t: loaded.command(f"SELECT count() FROM {t} FINAL")
        for t in ("readings", "sales", "balance_changes", "alarm_events", "accounts", "comm_events",
                  "command_events", "notification_events", "charge_lines", "settlement_lines", "meter_freezes")
    }  # fmt: skip
    assert counts == {
        "readings": 12 * 3,  # total, peak, voltage per reading
        "sales": 2,
        "balance_changes": 4,
        "alarm_events": 3,
        "accounts": 2,
        "comm_events": 2,
        "command_events": 4,
        "notification_events": 2,
        "charge_lines": 2,
        "settlement_lines": 1,
        "meter_freezes": 2,
    }
    assert loaded.command("SELECT sum(amount_fen) FROM charge_lines FINAL") == 86
    assert loaded.query(
        "SELECT rate, value, balance_fen FROM meter_freezes FINAL ORDER BY rate"
    ).result_rows == [("peak", Decimal(4), 5600), ("total", Decimal(10), 5600)]
    daily = loaded.query(
        "SELECT meter_id, day, opening, closing, consumption, readings FROM v_daily_energy "
        "WHERE rate = 'total' ORDER BY meter_id, day"
    ).result_rows
    assert [(m, d, c, n) for m, d, _, _, c, n in daily][:2] == [
        ("m0", DAY1, Decimal(10), 2),
        ("m0", DAY1 + timedelta(days=1), Decimal(15), 2),
    ]
    assert loaded.query("SELECT * FROM v_balances_latest ORDER BY account_id").result_rows[0][2] == 5600
    ageing = loaded.query("SELECT account_id, balance_fen, bucket FROM v_arrears_ageing").result_rows
    assert ageing == [("a2", -300, "90+")]
    assert loaded.query("SELECT command_id, status FROM v_commands ORDER BY command_id").result_rows == [
        ("cmd1", "acknowledged"),
        ("cmd2", "abandoned"),
    ]
    assert loaded.query("SELECT notification_id, status FROM v_notifications").result_rows == [
        ("n1", "deferred")
    ]
    assert loaded.query(
        "SELECT meter_id, value FROM meter_attributes FINAL WHERE name = 'replacement_reason'"
    ).result_rows == [("m2", "cleared")]


@pytest.mark.slow
async def test_report_queries_against_sunk_events(loaded: Client) -> None:
    end = DAY1 + timedelta(days=2)
    by_meter = _rows(loaded, q.energy_report(P, "day", "meter", DAY1, end))
    assert [(r[0], r[1], r[2]) for r in by_meter if r[1] == "m1"] == [
        (DAY1, "m1", Decimal(4)),
        (DAY1 + timedelta(days=1), "m1", Decimal(5)),
    ]
    monthly = _rows(loaded, q.energy_report(P, "month", "building", DAY1, end))
    assert [(r[0], r[1], r[2]) for r in monthly] == [(DAY1, "B0", Decimal(35)), (DAY1, "B1", Decimal(20))]
    yearly = _rows(loaded, q.energy_report(P, "year", "account", date(2024, 1, 1), date(2025, 1, 1)))
    assert [(r[1], r[2]) for r in yearly] == [("", Decimal(35)), ("a1", Decimal(10)), ("a2", Decimal(10))]
    assert _rows(loaded, q.top_consumers(P, DAY1, end, limit=2)) == [("m0", Decimal(25)), ("m1", Decimal(9))]
    sales = _rows(loaded, q.sales_report(P, "month", DAY1, end))
    assert sales == [(DAY1, 5000, 1, 600, 1, 0, 0, 4400)]
    recharges = _rows(loaded, q.recharge_report(P, DAY1, end))
    assert [(r[1], r[2], r[3], r[4]) for r in recharges] == [("a1", "Li", 5000, "wechat")]
    opened = _rows(loaded, q.accounts_opened_report(P, DAY1 - timedelta(days=1), end))
    assert [r[1] for r in opened] == ["a1", "a2"]
    combined = {r[0]: r for r in _rows(loaded, q.combined_report(P, DAY1, end))}
    assert combined["a1"][2:] == (Decimal(50), Decimal(60), Decimal(9), 1000, 5600, 5000, 400)
    assert combined["a2"][5:7] == (-300, -300)
    lost = _rows(loaded, q.lost_contact_report(P))
    assert [(r[0], r[1], r[2], r[7]) for r in lost] == [("meter", "m2", "lost_contact", "B1")]
    alarms = _rows(loaded, q.alarm_report(P, DAY1, end))
    assert [(r[0], r[7]) for r in alarms] == [("al1", True), ("al2", False)]
    assert [r[0] for r in _rows(loaded, q.alarm_report(P, DAY1, end, active_only=True))] == ["al1"]
    loss = _rows(loaded, q.loss_report(P, DAY1, end))
    assert loss == [("m0", Decimal(25), Decimal(18), Decimal(7), pytest.approx(0.28), 2)]


def test_builders_return_exact_sql() -> None:
    sql, params = q.top_consumers("p", date(2024, 3, 1), date(2024, 4, 1), limit=5)
    assert sql == (
        "SELECT e.meter_id AS meter_id, sum(e.consumption * if(m.meter_id = '', toDecimal64(1, 4), m.multiplier)) AS consumption\n"
        "FROM v_daily_energy AS e\n"
        "LEFT JOIN v_meters AS m ON m.project_id = e.project_id AND m.meter_id = e.meter_id\n"
        "WHERE e.project_id = {project:String} AND e.quantity = {quantity:String} AND e.rate = {rate:String}\n"
        "    AND e.day >= {start:Date} AND e.day < {end:Date}\n"
        "GROUP BY meter_id\n"
        "ORDER BY consumption DESC, meter_id\n"
        "LIMIT {limit:UInt32}"
    )
    assert params == {"project": "p", "start": date(2024, 3, 1), "end": date(2024, 4, 1),
                      "quantity": "active_import_kwh", "rate": "total", "limit": 5}  # fmt: skip
    sql, _ = q.energy_report("p", "month", "building", date(2024, 1, 1), date(2025, 1, 1))
    assert sql == (
        "SELECT e.month AS period, m.building AS group_key,\n"
        "    sum(e.consumption * if(m.meter_id = '', toDecimal64(1, 4), m.multiplier)) AS consumption,\n"
        "    uniqExact(e.meter_id) AS meters\n"
        "FROM v_monthly_energy AS e\n"
        "LEFT JOIN v_meters AS m ON m.project_id = e.project_id AND m.meter_id = e.meter_id\n"
        "WHERE e.project_id = {project:String} AND e.quantity = {quantity:String} AND e.rate = {rate:String}\n"
        "    AND e.month >= {start:Date} AND e.month < {end:Date}\n"
        "GROUP BY period, group_key\n"
        "ORDER BY period, group_key"
    )
    sql, _ = q.energy_report("p", "year", "account", date(2024, 1, 1), date(2025, 1, 1))
    assert sql.startswith("SELECT toStartOfYear(e.month) AS period, a.account_id AS group_key,")
    assert (
        "LEFT JOIN v_meter_accounts AS a ON a.project_id = e.project_id AND a.meter_id = e.meter_id\n" in sql
    )
    sql, params = q.sales_report("p", "day", date(2024, 3, 1), date(2024, 3, 2))
    assert sql.startswith("SELECT toDate(time, 'Asia/Shanghai') AS period,")
    assert "FROM sales FINAL\n" in sql and params == {
        "project": "p",
        "start": date(2024, 3, 1),
        "end": date(2024, 3, 2),
    }
    sql, params = q.alarm_report("p", date(2024, 3, 1), date(2024, 3, 2), active_only=True)
    assert sql == (
        "SELECT alarm_id, subject_id, kind, severity, message, raised_at, cleared_at, active\n"
        "FROM v_alarms\n"
        "WHERE project_id = {project:String} AND active\n"
        "ORDER BY raised_at, alarm_id"
    )
    assert params == {"project": "p"}
    sql, params = q.lost_contact_report("p")
    assert "FROM v_lost_contact AS l\n" in sql and params == {"project": "p"}
