"""Report queries over the analytics schema: small builders returning ``(sql, params)``.

Run them with ``client.query(sql, parameters=params)`` (server-side ``{name:Type}`` binding, the
same on chDB and a ClickHouse server). Periods are calendar days / months / years in the sites'
local time (Asia/Shanghai), ranges are half-open ``[start, end)`` of dates, money is integer fen,
energy applies each meter's multiplier (CT/PT ratio; 1 when unknown).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

Period = Literal["day", "month", "year"]
GroupBy = Literal["meter", "account", "building"]
Query = tuple[str, dict[str, Any]]

ENERGY = "active_import_kwh"
_PERIOD = {"day": "e.day", "month": "e.month", "year": "toStartOfYear(e.month)"}
_SOURCE = {
    "day": ("v_daily_energy", "day"),
    "month": ("v_monthly_energy", "month"),
    "year": ("v_monthly_energy", "month"),
}
_GROUP = {"meter": "e.meter_id", "account": "a.account_id", "building": "m.building"}
_MULTIPLIER = "if(m.meter_id = '', toDecimal64(1, 4), m.multiplier)"
_LOCAL = "'Asia/Shanghai'"


def _base(project_id: str, start: date, end: date, quantity: str, rate: str) -> dict[str, Any]:
    return {"project": project_id, "start": start, "end": end, "quantity": quantity, "rate": rate}


def energy_report(
    project_id: str,
    period: Period,
    group_by: GroupBy,
    start: date,
    end: date,
    quantity: str = ENERGY,
    rate: str = "total",
) -> Query:
    """Consumption per period and meter / account / building (E1)."""
    source, column = _SOURCE[period]
    account_join = (
        "LEFT JOIN v_meter_accounts AS a ON a.project_id = e.project_id AND a.meter_id = e.meter_id\n"
        if group_by == "account"
        else ""
    )
    sql = (
        f"SELECT {_PERIOD[period]} AS period, {_GROUP[group_by]} AS group_key,\n"
        f"    sum(e.consumption * {_MULTIPLIER}) AS consumption,\n"
        "    uniqExact(e.meter_id) AS meters\n"
        f"FROM {source} AS e\n"
        "LEFT JOIN v_meters AS m ON m.project_id = e.project_id AND m.meter_id = e.meter_id\n"
        f"{account_join}"
        "WHERE e.project_id = {project:String} AND e.quantity = {quantity:String} AND e.rate = {rate:String}\n"
        f"    AND e.{column} >= {{start:Date}} AND e.{column} < {{end:Date}}\n"
        "GROUP BY period, group_key\n"
        "ORDER BY period, group_key"
    )
    return sql, _base(project_id, start, end, quantity, rate)


def top_consumers(
    project_id: str, start: date, end: date, limit: int = 10, quantity: str = ENERGY, rate: str = "total"
) -> Query:
    """The meters that used the most over ``[start, end)``, largest first."""
    sql = (
        f"SELECT e.meter_id AS meter_id, sum(e.consumption * {_MULTIPLIER}) AS consumption\n"
        "FROM v_daily_energy AS e\n"
        "LEFT JOIN v_meters AS m ON m.project_id = e.project_id AND m.meter_id = e.meter_id\n"
        "WHERE e.project_id = {project:String} AND e.quantity = {quantity:String} AND e.rate = {rate:String}\n"
        "    AND e.day >= {start:Date} AND e.day < {end:Date}\n"
        "GROUP BY meter_id\n"
        "ORDER BY consumption DESC, meter_id\n"
        "LIMIT {limit:UInt32}"
    )
    return sql, {**_base(project_id, start, end, quantity, rate), "limit": limit}


def sales_report(project_id: str, period: Period, start: date, end: date) -> Query:
    """Finance: recharges, refunds, allowances and clears per day / month / year (B7)."""
    bucket = {"day": "toDate", "month": "toStartOfMonth", "year": "toStartOfYear"}[period]
    sql = (
        f"SELECT {bucket}(time, {_LOCAL}) AS period,\n"
        "    sumIf(amount_fen, kind = 'recharge') AS recharge_fen, countIf(kind = 'recharge') AS recharges,\n"
        "    -sumIf(amount_fen, kind = 'refund') AS refund_fen, countIf(kind = 'refund') AS refunds,\n"
        "    sumIf(amount_fen, kind = 'allowance') AS allowance_fen, countIf(kind = 'clear') AS clears,\n"
        "    recharge_fen - refund_fen AS net_fen\n"
        "FROM sales FINAL\n"
        "WHERE project_id = {project:String}\n"
        f"    AND toDate(time, {_LOCAL}) >= {{start:Date}} AND toDate(time, {_LOCAL}) < {{end:Date}}\n"
        "GROUP BY period\n"
        "ORDER BY period"
    )
    return sql, {"project": project_id, "start": start, "end": end}


def recharge_report(project_id: str, start: date, end: date) -> Query:
    """Every recharge in ``[start, end)`` with the account holder, newest last (B7)."""
    sql = (
        "SELECT s.time AS time, s.account_id AS account_id, a.holder AS holder, s.amount_fen AS amount_fen,\n"
        "    s.channel AS channel, s.operator_id AS operator_id, s.payment_order_id AS payment_order_id\n"
        "FROM (SELECT * FROM sales FINAL WHERE project_id = {project:String} AND kind = 'recharge'\n"
        f"    AND toDate(time, {_LOCAL}) >= {{start:Date}} AND toDate(time, {_LOCAL}) < {{end:Date}}) AS s\n"
        "LEFT JOIN (SELECT account_id, any(holder) AS holder FROM accounts FINAL\n"
        "    WHERE project_id = {project:String} GROUP BY account_id) AS a ON a.account_id = s.account_id\n"
        "ORDER BY time, account_id"
    )
    return sql, {"project": project_id, "start": start, "end": end}


def accounts_opened_report(project_id: str, start: date, end: date) -> Query:
    """Accounts opened in ``[start, end)`` (开户 report, B7)."""
    sql = (
        "SELECT opened_at, account_id, holder, mode, meter_ids, tariff_id, opened_by\n"
        "FROM accounts FINAL\n"
        "WHERE project_id = {project:String}\n"
        f"    AND toDate(opened_at, {_LOCAL}) >= {{start:Date}} AND toDate(opened_at, {_LOCAL}) < {{end:Date}}\n"
        "ORDER BY opened_at, account_id"
    )
    return sql, {"project": project_id, "start": start, "end": end}


def combined_report(
    project_id: str, start: date, end: date, quantity: str = ENERGY, rate: str = "total"
) -> Query:
    """Per account over ``[start, end)``: register opening / closing / consumption, balance
    opening / closing, money paid in and charged (B7 combined energy + finance)."""
    sql = (
        "WITH energy AS (\n"
        "    SELECT a.account_id AS account_id, sum(opening) AS energy_opening, sum(closing) AS energy_closing,\n"
        "        sum(used) AS consumption\n"
        f"    FROM (SELECT e.meter_id AS meter_id, min(e.opening) AS opening, max(e.closing) AS closing,\n"
        f"            sum(e.consumption * {_MULTIPLIER}) AS used\n"
        "        FROM v_daily_energy AS e\n"
        "        LEFT JOIN v_meters AS m ON m.project_id = e.project_id AND m.meter_id = e.meter_id\n"
        "        WHERE e.project_id = {project:String} AND e.quantity = {quantity:String} AND e.rate = {rate:String}\n"
        "            AND e.day >= {start:Date} AND e.day < {end:Date}\n"
        "        GROUP BY meter_id) AS u\n"
        "    INNER JOIN v_meter_accounts AS a ON a.meter_id = u.meter_id AND a.project_id = {project:String}\n"
        "    GROUP BY account_id\n"
        "), money AS (\n"
        "    SELECT account_id,\n"
        f"        argMaxIf(balance_fen, (time, sequence), toDate(time, {_LOCAL}) < {{start:Date}}) AS balance_opening_fen,\n"
        f"        argMaxIf(balance_fen, (time, sequence), toDate(time, {_LOCAL}) < {{end:Date}}) AS balance_closing_fen,\n"
        f"        sumIf(delta_fen, reason IN ('recharge', 'allowance', 'refund', 'clear') AND toDate(time, {_LOCAL}) >= {{start:Date}}\n"
        f"            AND toDate(time, {_LOCAL}) < {{end:Date}}) AS paid_in_fen,\n"
        f"        -sumIf(delta_fen, reason = 'charge' AND toDate(time, {_LOCAL}) >= {{start:Date}}\n"
        f"            AND toDate(time, {_LOCAL}) < {{end:Date}}) AS charged_fen\n"
        "    FROM (SELECT * FROM balance_changes FINAL WHERE project_id = {project:String})\n"
        "    GROUP BY account_id\n"
        ")\n"
        "SELECT acc.account_id AS account_id, acc.holder AS holder,\n"
        "    energy.energy_opening AS energy_opening, energy.energy_closing AS energy_closing,\n"
        "    energy.consumption AS consumption,\n"
        "    money.balance_opening_fen AS balance_opening_fen, money.balance_closing_fen AS balance_closing_fen,\n"
        "    money.paid_in_fen AS paid_in_fen, money.charged_fen AS charged_fen\n"
        "FROM (SELECT account_id, any(holder) AS holder FROM accounts FINAL WHERE project_id = {project:String}\n"
        "    GROUP BY account_id) AS acc\n"
        "LEFT JOIN energy ON energy.account_id = acc.account_id\n"
        "LEFT JOIN money ON money.account_id = acc.account_id\n"
        "ORDER BY account_id"
    )
    return sql, _base(project_id, start, end, quantity, rate)


def lost_contact_report(project_id: str) -> Query:
    """Meters and concentrators whose latest status is lost contact / offline (A6, E3)."""
    sql = (
        "SELECT l.subject_kind AS subject_kind, l.subject_id AS subject_id, l.status AS status,\n"
        "    l.since AS since, l.last_online AS last_online, dateDiff('minute', l.since, now64(3)) AS minutes,\n"
        "    m.concentrator_id AS concentrator_id, m.building AS building\n"
        "FROM v_lost_contact AS l\n"
        "LEFT JOIN v_meters AS m ON m.project_id = l.project_id AND m.meter_id = l.subject_id\n"
        "WHERE l.project_id = {project:String}\n"
        "ORDER BY since, subject_id"
    )
    return sql, {"project": project_id}


def alarm_report(project_id: str, start: date, end: date, active_only: bool = False) -> Query:
    """Alarms raised in ``[start, end)`` (historical), or all still active (real-time) (E3)."""
    where = (
        "active"
        if active_only
        else f"toDate(raised_at, {_LOCAL}) >= {{start:Date}} AND toDate(raised_at, {_LOCAL}) < {{end:Date}}"
    )
    sql = (
        "SELECT alarm_id, subject_id, kind, severity, message, raised_at, cleared_at, active\n"
        "FROM v_alarms\n"
        f"WHERE project_id = {{project:String}} AND {where}\n"
        "ORDER BY raised_at, alarm_id"
    )
    params: dict[str, Any] = {"project": project_id}
    if not active_only:
        params |= {"start": start, "end": end}
    return sql, params


def loss_report(
    project_id: str, start: date, end: date, quantity: str = ENERGY, rate: str = "total"
) -> Query:
    """Master meter vs the sum of its sub-meters over ``[start, end)``: loss and loss ratio (E6).

    Sub-meters name their master in the ``master_meter_id`` attribute (``MeterUpdated``)."""
    sql = (
        "WITH used AS (\n"
        f"    SELECT e.meter_id AS meter_id, sum(e.consumption * {_MULTIPLIER}) AS used\n"
        "    FROM v_daily_energy AS e\n"
        "    LEFT JOIN v_meters AS m ON m.project_id = e.project_id AND m.meter_id = e.meter_id\n"
        "    WHERE e.project_id = {project:String} AND e.quantity = {quantity:String} AND e.rate = {rate:String}\n"
        "        AND e.day >= {start:Date} AND e.day < {end:Date}\n"
        "    GROUP BY meter_id\n"
        ")\n"
        "SELECT s.master_meter_id AS master_meter_id, any(mu.used) AS master_consumption,\n"
        "    sum(su.used) AS sub_consumption, master_consumption - sub_consumption AS loss,\n"
        "    if(master_consumption = 0, NULL, toFloat64(loss) / toFloat64(master_consumption)) AS loss_ratio,\n"
        "    count() AS sub_meters\n"
        "FROM (SELECT meter_id, master_meter_id FROM v_meters\n"
        "    WHERE project_id = {project:String} AND master_meter_id != '') AS s\n"
        "LEFT JOIN used AS su ON su.meter_id = s.meter_id\n"
        "LEFT JOIN used AS mu ON mu.meter_id = s.master_meter_id\n"
        "GROUP BY master_meter_id\n"
        "ORDER BY master_meter_id"
    )
    return sql, _base(project_id, start, end, quantity, rate)


def meter_readings(
    project_id: str,
    meter_id: str,
    start: datetime,
    end: datetime,
    quantity: str | None = None,
    limit: int = 10_000,
) -> Query:
    """One meter's register and instant values in ``[start, end)`` (UTC instants), oldest first;
    a reading delivered twice (same event id) counts once."""
    where_quantity = "    AND quantity = {quantity:String}\n" if quantity else ""
    sql = (
        "SELECT time, quantity, rate, kind, value\n"
        "FROM readings FINAL\n"
        "WHERE project_id = {project:String} AND meter_id = {meter:String}\n"
        "    AND time >= {start:DateTime64(3, 'UTC')} AND time < {end:DateTime64(3, 'UTC')}\n"
        f"{where_quantity}"
        "ORDER BY time, quantity, rate\n"
        "LIMIT {limit:UInt32}"
    )
    params: dict[str, Any] = {
        "project": project_id,
        "meter": meter_id,
        "start": start,
        "end": end,
        "limit": limit,
    }
    if quantity:
        params["quantity"] = quantity
    return sql, params
