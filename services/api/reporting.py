"""The one place the API talks to ClickHouse: run a query builder's ``(sql, params)`` off the
event loop and return plain rows. Which report takes which parameters lives here too, so routes
stay a table lookup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from starlette.concurrency import run_in_threadpool

from services.api import exports
from services.api.analytics import queries as q
from services.api.problems import Problem

FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2149, 6, 6)  # ClickHouse's Date range


class Report(StrEnum):
    """Reports over the analytics store (B7, E1–E3, E6)."""

    ENERGY = "energy"
    TOP_CONSUMERS = "top-consumers"
    SALES = "sales"
    RECHARGES = "recharges"
    ACCOUNTS_OPENED = "accounts-opened"
    COMBINED = "combined"
    ALARMS = "alarms"
    LOST_CONTACT = "lost-contact"
    LOSS = "loss"


@dataclass(frozen=True)
class ReportParams:
    start: date
    end: date
    period: q.Period
    group_by: q.GroupBy


_BUILDERS: dict[Report, Callable[[str, ReportParams], q.Query]] = {
    Report.ENERGY: lambda p, r: q.energy_report(p, r.period, r.group_by, r.start, r.end),
    Report.TOP_CONSUMERS: lambda p, r: q.top_consumers(p, r.start, r.end),
    Report.SALES: lambda p, r: q.sales_report(p, r.period, r.start, r.end),
    Report.RECHARGES: lambda p, r: q.recharge_report(p, r.start, r.end),
    Report.ACCOUNTS_OPENED: lambda p, r: q.accounts_opened_report(p, r.start, r.end),
    Report.COMBINED: lambda p, r: q.combined_report(p, r.start, r.end),
    Report.ALARMS: lambda p, r: q.alarm_report(p, r.start, r.end),
    Report.LOST_CONTACT: lambda p, r: q.lost_contact_report(p),
    Report.LOSS: lambda p, r: q.loss_report(p, r.start, r.end),
}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: energy has decimals, money is already integer fen
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


Rows = tuple[list[str], list[dict[str, Any]]]


async def run(client: Client | None, query: q.Query) -> Rows:
    """(column names, rows as dicts of plain JSON values) of ``query``; 503 when no store is
    configured or it fails."""
    columns, rows = await run_raw(client, query)
    return columns, [{k: _plain(v) for k, v in row.items()} for row in rows]


async def run_raw(client: Client | None, query: q.Query) -> Rows:
    """(column names, rows as dicts of the driver's Python values) of ``query``."""
    if client is None:
        raise Problem(503, "the analytics store is not configured (MF_CLICKHOUSE_DSN)")
    sql, params = query
    try:
        result = await run_in_threadpool(client.query, sql, parameters=params)
    except ClickHouseError as exc:
        raise Problem(503, f"the analytics store failed: {str(exc)[:200]}") from None
    columns = list(result.column_names)
    return columns, [dict(zip(columns, row, strict=True)) for row in result.result_rows]


async def report(
    client: Client | None, name: Report, project_id: str, params: ReportParams, raw: bool = False
) -> Rows:
    """Run report ``name`` for one project (``raw``: driver values, for file exports)."""
    if not (FIRST_DAY <= params.start <= LAST_DAY and FIRST_DAY <= params.end <= LAST_DAY):
        raise Problem(422, f"dates must lie between {FIRST_DAY} and {LAST_DAY}")
    if params.end <= params.start and name is not Report.LOST_CONTACT:
        raise Problem(422, "end must be after start")
    query = _BUILDERS[name](project_id, params)
    return await (run_raw(client, query) if raw else run(client, query))


def export_file(name: Report, project_id: str, rows: Rows, fmt: exports.Format) -> exports.Export:
    """A report as a CSV / xlsx / DBF file; each column's kind follows from its name and values
    (``*_fen`` is money in fen, shown in yuan)."""
    columns, items = rows
    cells = [{k: _cell(v) for k, v in row.items()} for row in items]
    kinds = [exports.Column(c, c, _kind(c, [row[c] for row in cells])) for c in columns]
    return exports.export(cells, kinds, fmt, title=f"{name.value}-{project_id}")


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))  # ratios: exact decimal text, never binary noise
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


def _kind(column: str, values: list[Any]) -> exports.Kind:
    present = [v for v in values if v is not None]
    if column.endswith("_fen") and all(isinstance(v, int) for v in present):
        return "fen"
    for kind, types in (("datetime", datetime), ("date", date), ("int", int), ("decimal", Decimal | int)):
        if present and all(isinstance(v, types) and not isinstance(v, bool) for v in present):
            return kind  # type: ignore[return-value]
    return "str"
