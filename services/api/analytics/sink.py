"""The analytics sink: catalogue topics → the analytics tables (migrations 002, 003), in batches.

Like :class:`libs.stack.archive.Archiver` it reads every partition by manual assignment and keeps
its checkpoint in ClickHouse (``analytics_offsets``), written only after the batch's rows are
inserted. A crash between the two re-reads at most one batch; every table's sorting key ends in
the event id, so the repeat collapses (ReplacingMergeTree) and the consumption states, which
are min/max/uniq, do not change — a redelivered event never appears twice in query results.

Batches: rows are buffered per table and flushed together about once a second (``flush_seconds``)
or when ``max_batch`` rows are waiting, so each table sees at most about one insert a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from clickhouse_connect.driver.client import Client

from libs.events import acquisition as acq
from libs.events import billing, control, notify
from libs.events.base import Event
from libs.events.codec import Codec, EventDecodeError
from libs.events.topics import (
    ALARMS,
    BILLING,
    COMM,
    COMMANDS,
    LEDGER,
    NOTIFICATIONS,
    READINGS,
    REGISTRY_TOPIC,
)
from libs.stack.broker import high_watermarks, partition_counts

log = logging.getLogger(__name__)

TOPICS: tuple[str, ...] = tuple(
    t.name for t in (READINGS, REGISTRY_TOPIC, COMM, BILLING, LEDGER, ALARMS, COMMANDS, NOTIFICATIONS)
)
OFFSETS_TABLE = "analytics_offsets"

COLUMNS: dict[str, list[str]] = {
    "readings": [
        "project_id", "meter_id", "time", "quantity", "rate", "kind", "value", "event_id",
        "received_at", "concentrator_id", "frozen",
    ],
    "reading_status": [
        "project_id", "meter_id", "time", "event_id", "relay", "valve", "remaining_fen",
        "purchase_count", "concentrator_id", "failover",
    ],
    "reading_failures": [
        "project_id", "meter_id", "time", "event_id", "reason", "detail", "attempts", "concentrator_id",
    ],
    "meter_attributes": ["project_id", "meter_id", "name", "value", "time", "event_id"],
    "accounts": [
        "project_id", "account_id", "mode", "meter_ids", "tariff_id", "holder", "phone",
        "overdraft_fen", "opened_by", "opened_at", "event_id",
    ],
    "sales": [
        "project_id", "account_id", "time", "kind", "amount_fen", "channel", "operator_id",
        "idempotency_key", "payment_order_id", "detail", "event_id",
    ],
    "balance_changes": [
        "project_id", "account_id", "time", "sequence", "delta_fen", "balance_fen", "reason",
        "causation_id", "event_id",
    ],
    "charge_lines": [
        "project_id", "account_id", "meter_id", "time", "start", "end", "line", "tariff_id", "version",
        "category", "component", "rate", "tier", "units", "price_fen", "amount_fen", "event_id",
    ],
    "settlement_lines": [
        "project_id", "account_id", "period", "time", "line", "tariff_id", "version", "category",
        "component", "rate", "tier", "units", "price_fen", "amount_fen", "total_fen", "charges", "event_id",
    ],
    "meter_freezes": [
        "project_id", "account_id", "meter_id", "kind", "label", "at", "read_at", "quantity", "rate",
        "value", "balance_fen", "event_id",
    ],
    "alarm_events": [
        "project_id", "subject_id", "alarm_id", "time", "state", "kind", "severity", "message", "event_id",
    ],
    "command_events": [
        "project_id", "meter_id", "command_id", "time", "stage", "action", "requested_by", "attempt",
        "will_retry", "detail", "event_id",
    ],
    "comm_events": ["project_id", "subject_kind", "subject_id", "time", "status", "detail", "event_id"],
    "notification_events": [
        "project_id", "notification_id", "time", "stage", "channel", "recipient", "template",
        "account_id", "provider", "attempt", "detail", "event_id",
    ],
}  # fmt: skip

Row = list[Any]
Rows = dict[str, list[Row]]


def _reading(e: acq.ReadingRecorded, out: Rows) -> None:
    conc = e.route.concentrator_id
    frozen = e.frozen or ""
    for quantity, rates in e.registers.items():
        for rate, value in rates.items():
            out["readings"].append(
                [e.project_id, e.meter_id, e.time, quantity, str(rate), "register", value, e.event_id,
                 e.received_at, conc, frozen]
            )  # fmt: skip
    for quantity, value in e.instant.items():
        out["readings"].append(
            [
                e.project_id,
                e.meter_id,
                e.time,
                quantity,
                "",
                "instant",
                value,
                e.event_id,
                e.received_at,
                conc,
                frozen,
            ]
        )
    out["reading_status"].append(
        [e.project_id, e.meter_id, e.time, e.event_id, str(e.relay or ""), str(e.valve or ""), e.remaining_fen,
         e.purchase_count, conc, int(e.route.failover)]
    )  # fmt: skip


def _attributes(e: Event, meter_id: str, attrs: dict[str, object], out: Rows) -> None:
    for name, value in attrs.items():
        out["meter_attributes"].append([e.project_id, meter_id, name, str(value), e.time, e.event_id])


def rows_for(event: Event, out: Rows) -> None:
    """Append the analytics rows of one event to ``out`` (by table); unknown facts add nothing."""
    e: Any = event
    p, t, eid = event.project_id, event.time, event.event_id
    match event:
        case acq.ReadingRecorded():
            _reading(event, out)
        case acq.ReadingFailed():
            out["reading_failures"].append(
                [p, e.meter_id, t, eid, e.reason, e.detail, e.attempts, e.route.concentrator_id]
            )
        case acq.MeterRegistered():
            attrs = {k: getattr(e, k) for k in ("address", "protocol", "model", "concentrator_id", "bus_id")}
            attrs |= {
                "medium": str(e.medium),
                "multiplier": e.multiplier,
                "register_digits": e.register_digits,
            }
            _attributes(event, e.meter_id, attrs, out)
        case acq.MeterUpdated():
            _attributes(event, e.meter_id, dict(e.changes), out)
        case acq.MeterReplaced():
            attrs = {"address": e.new_address, "replaced_at": e.replaced_at.isoformat()}
            _attributes(event, e.meter_id, attrs | {"replacement_reason": str(e.reason)}, out)
        case acq.MeterOnline() | acq.MeterLostContact() | acq.RouteSwitched():
            status = {acq.MeterOnline: "online", acq.MeterLostContact: "lost_contact"}.get(
                type(event), "route_switched"
            )
            detail = (
                f"failures={e.consecutive_failures}" if status == "lost_contact"
                else f"{e.from_route.concentrator_id}->{e.to_route.concentrator_id}: {e.reason}"
                if status == "route_switched" else ""
            )  # fmt: skip
            out["comm_events"].append([p, "meter", e.meter_id, t, status, detail, eid])
        case acq.ConcentratorOnline():
            out["comm_events"].append([p, "concentrator", e.concentrator_id, t, "online", "", eid])
        case acq.ConcentratorOffline():
            out["comm_events"].append([p, "concentrator", e.concentrator_id, t, "offline", e.reason, eid])
        case billing.AccountOpened():
            out["accounts"].append(
                [p, e.account_id, str(e.mode), list(e.meter_ids), e.tariff_id, e.holder, e.phone or "",
                 e.overdraft_fen, e.opened_by, t, eid]
            )  # fmt: skip
        case billing.RechargeAccepted():
            out["sales"].append(
                [p, e.account_id, t, "recharge", e.amount_fen, e.channel, e.operator_id, e.idempotency_key,
                 e.payment_order_id or "", "", eid]
            )  # fmt: skip
        case billing.RefundAccepted():
            out["sales"].append(
                [
                    p,
                    e.account_id,
                    t,
                    "refund",
                    -e.amount_fen,
                    "",
                    e.operator_id,
                    e.idempotency_key,
                    "",
                    e.reason,
                    eid,
                ]
            )
        case billing.AllowanceAccepted():
            out["sales"].append(
                [
                    p,
                    e.account_id,
                    t,
                    "allowance",
                    e.amount_fen,
                    "",
                    e.operator_id,
                    e.idempotency_key,
                    "",
                    e.period,
                    eid,
                ]
            )
        case billing.ClearAccepted():
            out["sales"].append(
                [p, e.account_id, t, "clear", 0, "", e.operator_id, e.idempotency_key, "", e.reason, eid]
            )
        case billing.BalanceChanged():
            out["balance_changes"].append(
                [
                    p,
                    e.account_id,
                    t,
                    e.sequence,
                    e.delta_fen,
                    e.balance_fen,
                    e.reason,
                    e.causation_id or "",
                    eid,
                ]
            )
        case billing.ChargeApplied():
            for n, ln in enumerate(e.lines):
                out["charge_lines"].append(
                    [p, e.account_id, e.meter_id, t, e.start, e.end, n, ln.tariff_id, ln.version, ln.category,
                     ln.component, str(ln.rate), ln.tier, ln.units, ln.price_fen, ln.amount_fen, eid]
                )  # fmt: skip
        case billing.SettlementIssued():
            for n, ln in enumerate(e.lines):
                out["settlement_lines"].append(
                    [p, e.account_id, e.period, t, n, ln.tariff_id, ln.version, ln.category, ln.component,
                     str(ln.rate), ln.tier, ln.units, ln.price_fen, ln.amount_fen, e.total_fen, e.charges, eid]
                )  # fmt: skip
        case billing.MeterFrozen():
            for quantity, rates in e.registers.items():
                for rate, value in rates.items():
                    out["meter_freezes"].append(
                        [p, e.account_id, e.meter_id, str(e.kind), e.label, e.at, e.read_at, quantity,
                         str(rate), value, e.balance_fen, eid]
                    )  # fmt: skip
        case billing.AlarmRaised():
            out["alarm_events"].append(
                [p, e.subject_id, e.alarm_id, t, "raised", str(e.kind), e.severity, e.message, eid]
            )
        case billing.AlarmCleared():
            out["alarm_events"].append(
                [p, e.subject_id, e.alarm_id, t, "cleared", str(e.kind), 0, e.reason, eid]
            )
        case control.CommandRequested():
            out["command_events"].append(
                [
                    p,
                    e.meter_id,
                    e.command_id,
                    t,
                    "requested",
                    str(e.action),
                    e.requested_by,
                    0,
                    0,
                    e.reason,
                    eid,
                ]
            )
        case control.CommandSent():
            out["command_events"].append(
                [p, e.meter_id, e.command_id, t, "sent", "", "", e.attempt, 0, "", eid]
            )
        case control.CommandAcknowledged():
            out["command_events"].append(
                [p, e.meter_id, e.command_id, t, "acknowledged", "", "", 0, 0, e.confirmed_state or "", eid]
            )
        case control.CommandFailed():
            out["command_events"].append(
                [
                    p,
                    e.meter_id,
                    e.command_id,
                    t,
                    "failed",
                    "",
                    "",
                    e.attempt,
                    int(e.will_retry),
                    e.reason,
                    eid,
                ]
            )
        case control.CommandAbandoned():
            out["command_events"].append(
                [p, e.meter_id, e.command_id, t, "abandoned", str(e.action), e.requested_by, e.attempts, 0,
                 f"{e.outcome}: {e.reason}", eid]
            )  # fmt: skip
        case notify.NotificationRequested():
            out["notification_events"].append(
                [p, e.notification_id, t, "requested", str(e.channel), e.recipient, e.template,
                 e.account_id or "", "", 0, "", eid]
            )  # fmt: skip
        case notify.NotificationDelivered():
            out["notification_events"].append(
                [p, e.notification_id, t, "delivered", str(e.channel), "", "", "", e.provider, e.attempt,
                 e.provider_message_id, eid]
            )  # fmt: skip
        case notify.NotificationFailed():
            out["notification_events"].append(
                [
                    p,
                    e.notification_id,
                    t,
                    "failed",
                    str(e.channel),
                    "",
                    "",
                    "",
                    e.provider,
                    e.attempt,
                    e.reason,
                    eid,
                ]
            )
        case notify.NotificationDeferred():
            out["notification_events"].append(
                [p, e.notification_id, t, "deferred", str(e.channel), "", "", "", "", e.attempt, e.detail, eid]
            )  # fmt: skip
        case notify.NotificationSuppressed():
            out["notification_events"].append(
                [p, e.notification_id, t, "suppressed", str(e.channel), "", "", "", "", 0, e.reason, eid]
            )  # fmt: skip
        case _:
            pass


def empty_rows() -> Rows:
    """A fresh per-table row buffer."""
    return {table: [] for table in COLUMNS}


def insert_rows(client: Client, rows: Rows) -> int:
    """Insert every non-empty table buffer (one insert per table); returns the rows written."""
    written = 0
    for table, batch in rows.items():
        if batch:
            client.insert(table, batch, column_names=COLUMNS[table])
            written += len(batch)
    return written


def checkpoint(client: Client, consumer: str) -> dict[TopicPartition, int]:
    """The next offset to read per partition, as last written by ``consumer``."""
    rows = client.query(
        f"SELECT topic, partition, max(next_offset) FROM {OFFSETS_TABLE} "
        "WHERE consumer = {c:String} GROUP BY topic, partition",
        parameters={"c": consumer},
    ).result_rows
    return {TopicPartition(t, int(p)): int(n) for t, p, n in rows}


@dataclass
class Sink:
    """Consumes ``topics`` into the analytics tables; ``start()`` then ``run(stop)``."""

    bootstrap: str
    client: Client
    topics: Sequence[str] = TOPICS
    consumer: str = "analytics"
    max_batch: int = 20000
    flush_seconds: float = 1.0
    codec: Codec = field(default_factory=Codec)
    events: int = 0
    rows: int = 0
    inserts: int = 0
    decode_errors: Counter[str] = field(default_factory=Counter)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    on_flush: Callable[[int], None] | None = None
    _consumer: AIOKafkaConsumer | None = None
    _committed: dict[TopicPartition, int] = field(default_factory=dict)

    async def start(self) -> None:
        """Assign every partition of the topics and seek to the checkpoint."""
        counts = await asyncio.to_thread(partition_counts, self.bootstrap, self.topics)
        tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        done = await asyncio.to_thread(checkpoint, self.client, self.consumer)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        self._consumer.assign(tps)
        for tp in tps:
            self.positions[tp] = self._committed[tp] = done.get(tp, 0)
            self._consumer.seek(tp, self.positions[tp])

    async def run(self, stop: asyncio.Event) -> None:
        """Sink until ``stop`` is set, then drain to the high-water marks of that moment."""
        assert self._consumer is not None, "start() first"
        pending, count = empty_rows(), 0
        last_flush = time.monotonic()
        try:
            while not stop.is_set():
                count += await self._fetch(pending)
                if count >= self.max_batch or time.monotonic() - last_flush >= self.flush_seconds:
                    await self._flush(pending)
                    pending, count, last_flush = empty_rows(), 0, time.monotonic()
            marks = await high_watermarks(self.bootstrap, list(self.positions))
            while any(self.positions[tp] < marks[tp] for tp in marks):
                count += await self._fetch(pending)
                if count >= self.max_batch:
                    await self._flush(pending)
                    pending, count = empty_rows(), 0
            await self._flush(pending)
        finally:
            await self._consumer.stop()

    async def _fetch(self, pending: Rows) -> int:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=200, max_records=self.max_batch)
        added = 0
        for tp, messages in batches.items():
            for m in messages:
                try:
                    events = self.codec.decode(m.value or b"")
                except EventDecodeError as exc:
                    self.decode_errors[tp.topic] += 1
                    log.warning(
                        "skipping undecodable message %s[%d]@%d: %s", tp.topic, tp.partition, m.offset, exc
                    )
                    continue
                before = sum(len(v) for v in pending.values())
                for event in events:
                    rows_for(event, pending)
                self.events += len(events)
                added += sum(len(v) for v in pending.values()) - before
            if messages:
                self.positions[tp] = messages[-1].offset + 1
        return added

    async def _flush(self, pending: Rows) -> None:
        written = await asyncio.to_thread(insert_rows, self.client, pending)
        self.rows += written
        self.inserts += sum(1 for v in pending.values() if v)
        moved = [
            [self.consumer, tp.topic, tp.partition, n]
            for tp, n in self.positions.items()
            if n != self._committed.get(tp)
        ]
        if moved:
            await asyncio.to_thread(
                self.client.insert,
                OFFSETS_TABLE,
                moved,
                column_names=["consumer", "topic", "partition", "next_offset"],
            )
            self._committed.update((TopicPartition(t, p), n) for _, t, p, n in moved)
        if self.on_flush is not None and written:
            self.on_flush(written)
