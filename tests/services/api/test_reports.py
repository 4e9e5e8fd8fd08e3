"""Readings and reports from the analytics store through the API, as JSON and as CSV / xlsx /
DBF files; and the readings query builder's exact SQL."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import dbf
from openpyxl import load_workbook

from libs.events import AccountOpened, RechargeAccepted
from services.api.analytics import queries as q
from tests.services.api.conftest import T0, Harness, seed


def test_meter_readings_sql() -> None:
    start, end = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)
    sql, params = q.meter_readings("p1", "m1", start, end, "active_import_kwh", 100)
    assert sql == (
        "SELECT time, quantity, rate, kind, value\n"
        "FROM readings FINAL\n"
        "WHERE project_id = {project:String} AND meter_id = {meter:String}\n"
        "    AND time >= {start:DateTime64(3, 'UTC')} AND time < {end:DateTime64(3, 'UTC')}\n"
        "    AND quantity = {quantity:String}\n"
        "ORDER BY time, quantity, rate\n"
        "LIMIT {limit:UInt32}"
    )
    assert params == {"project": "p1", "meter": "m1", "start": start, "end": end, "limit": 100,
                      "quantity": "active_import_kwh"}  # fmt: skip
    assert "quantity" not in q.meter_readings("p1", "m1", start, end)[1]


async def test_recharge_report_as_json_csv_xlsx_and_dbf(harness: Harness) -> None:
    h = harness
    project = f"pr-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    opened = AccountOpened(project_id=project, subject_id="a0", account_id="a0", mode="prepaid", meter_ids=("m0",),
                           tariff_id="t1", holder="李雷", opened_by="op", time=T0 - timedelta(days=1))  # fmt: skip
    paid = [
        RechargeAccepted(project_id=project, subject_id="a0", account_id="a0", amount_fen=fen,
                         idempotency_key=f"k{i}", operator_id="op", channel="wechat", time=T0 + timedelta(hours=i))
        for i, fen in enumerate((12_345, 5))
    ]  # fmt: skip
    h.readings([opened, *paid])
    _, cashier = await h.user(("cashier",), (project,))
    span = {"project_id": project, "start": "2024-03-01", "end": "2024-03-02"}

    as_json = await h.client.get("/reports/recharges", headers=cashier, params=span)
    assert as_json.status_code == 200, as_json.text
    assert [(r["holder"], r["amount_fen"]) for r in as_json.json()["rows"]] == [("李雷", 12_345), ("李雷", 5)]

    as_csv = await h.client.get("/reports/recharges", headers=cashier, params=span | {"format": "csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert [(r["holder"], r["amount_fen"]) for r in table] == [("李雷", "123.45"), ("李雷", "0.05")]

    as_xlsx = await h.client.get("/reports/recharges", headers=cashier, params=span | {"format": "xlsx"})
    sheet = load_workbook(io.BytesIO(as_xlsx.content), read_only=True).active
    assert sheet is not None
    values = [row for row in sheet.iter_rows(values_only=True)]
    assert values[0][:4] == ("time", "account_id", "holder", "amount_fen")
    assert [str(v[3]) for v in values[1:]] == ["123.45", "0.05"]

    as_dbf = await h.client.get("/reports/recharges", headers=cashier, params=span | {"format": "dbf"})
    assert as_dbf.status_code == 200
    path = h.store_path / "recharges.dbf"
    path.write_bytes(as_dbf.content)
    with dbf.Table(str(path)) as dbf_table:
        assert [str(r[2]).strip() for r in dbf_table] == ["李雷", "李雷"]
        assert [float(r[3]) for r in dbf_table] == [123.45, 0.05]

    bad = await h.client.get("/reports/recharges", headers=cashier, params=span | {"format": "pdf"})
    assert bad.status_code == 422
