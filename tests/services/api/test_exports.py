"""Report exports, read back with the libraries that read each format (csv, openpyxl, dbf)."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dbf
import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.exports import Column, ExportError, dbf_field_names, export, fen_to_yuan

COLUMNS = [
    Column("meter_no", "表号"),
    Column("holder", "户名"),
    Column("energy_kwh", "用电量(kWh)", "decimal"),
    Column("amount_fen", "金额(元)", "fen"),
    Column("day", "日期", "date"),
    Column("read_at", "抄表时间", "datetime"),
    Column("count", "次数", "int"),
]
ROWS: list[dict[str, Any]] = [
    {
        "meter_no": "000000123456",
        "holder": '张三, 3号楼 "东"',
        "energy_kwh": Decimal("1234.567"),
        "amount_fen": 123456789,
        "day": date(2026, 11, 1),
        "read_at": datetime(2026, 11, 1, 16, 30, 5, tzinfo=UTC),  # 2026-11-02 00:30:05 in Beijing
        "count": 42,
    },
    {
        "meter_no": "000000654321",
        "holder": "李四\n备注",
        "energy_kwh": Decimal("0.5"),
        "amount_fen": -5,
        "day": date(2026, 11, 30),
        "read_at": datetime(2026, 11, 30, 8, 0, 0),  # naive: written as given
        "count": 0,
    },
    {
        "meter_no": '=HYPERLINK("x")',
        "holder": None,
        "energy_kwh": None,
        "amount_fen": 0,
        "day": None,
        "read_at": None,
        "count": None,
    },
]


def read_csv(content: bytes) -> list[list[str]]:
    assert content.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))


def read_xlsx(content: bytes) -> Any:
    return openpyxl.load_workbook(io.BytesIO(content)).active


def raw_dbf_records(content: bytes) -> list[bytes]:
    """Records as stored (deletion flag + fields), from the dBase III header's own lengths."""
    count = int.from_bytes(content[4:8], "little")
    header, size = int.from_bytes(content[8:10], "little"), int.from_bytes(content[10:12], "little")
    return [content[header + i * size : header + (i + 1) * size] for i in range(count)]


@pytest.fixture
def read_dbf() -> Iterator[Any]:
    with tempfile.TemporaryDirectory() as folder:

        def read(content: bytes) -> tuple[list[str], str, list[list[Any]]]:
            path = Path(folder) / "t.dbf"
            path.write_bytes(content)
            table = dbf.Table(str(path))
            table.open(dbf.READ_ONLY)
            try:
                return list(table.structure()), table.codepage, [list(record) for record in table]
            finally:
                table.close()

        yield read


def test_csv_has_bom_crlf_labels_and_exact_values() -> None:
    result = export(ROWS, COLUMNS, "csv", "十一月电费")
    assert result.filename == "十一月电费.csv" and result.media_type == "text/csv; charset=utf-8"
    assert b"\r\n" in result.content and result.content.count(b"\r\n") >= 4
    header, first, second, third = read_csv(result.content)
    assert header == [c.label for c in COLUMNS]
    assert first == [
        "000000123456",
        '张三, 3号楼 "东"',
        "1234.567",
        "1234567.89",
        "2026-11-01",
        "2026-11-02 00:30:05",
        "42",
    ]
    assert second == ["000000654321", "李四\n备注", "0.5", "-0.05", "2026-11-30", "2026-11-30 08:00:00", "0"]
    # A text cell that Excel would run as a formula is neutralised; numbers are untouched.
    assert third == ['\'=HYPERLINK("x")', "", "", "0.00", "", "", ""]


def test_csv_quotes_per_rfc4180() -> None:
    content = export(ROWS[:1], COLUMNS[:2], "csv").content.decode("utf-8-sig")
    assert content == '表号,户名\r\n000000123456,"张三, 3号楼 ""东"""\r\n'


def test_xlsx_typed_cells_bold_frozen_header() -> None:
    result = export(ROWS, COLUMNS, "xlsx", "月报")
    assert result.filename == "月报.xlsx"
    sheet = read_xlsx(result.content)
    assert sheet.title == "月报"
    assert sheet.freeze_panes == "A2"
    assert [c.value for c in sheet[1]] == [c.label for c in COLUMNS]
    assert all(c.font.b for c in sheet[1])
    row = sheet[2]
    assert row[0].value == "000000123456" and row[1].value == '张三, 3号楼 "东"'
    assert Decimal(str(row[2].value)) == Decimal("1234.567")
    assert Decimal(str(row[3].value)) == Decimal("1234567.89") and row[3].number_format == "0.00"
    assert row[4].value == datetime(2026, 11, 1) and row[4].number_format == "yyyy-mm-dd"
    assert row[5].value == datetime(2026, 11, 2, 0, 30, 5) and row[5].number_format == "yyyy-mm-dd hh:mm:ss"
    assert row[6].value == 42 and row[6].data_type == "n"
    assert Decimal(str(sheet[3][3].value)) == Decimal("-0.05")
    assert [c.value for c in sheet[4]][1:] == [None, None, 0, None, None, None]
    assert sheet[4][0].value == '=HYPERLINK("x")' and sheet[4][0].data_type == "s"  # text, not a formula


def test_dbf_fields_codepage_and_values(read_dbf: Any) -> None:
    result = export(ROWS, COLUMNS, "dbf", "月报")
    assert result.filename == "月报.dbf" and result.media_type == "application/x-dbf"
    structure, codepage, records = read_dbf(result.content)
    assert structure == [
        "METER_NO C(15)",  # =HYPERLINK("x")
        "HOLDER C(16)",  # 张三, 3号楼 "东" in GBK: 4 Chinese × 2 + 8 ASCII bytes
        "ENERGY_KWH N(8,3)",
        "AMOUNT_FEN N(10,2)",
        "DAY D",
        "READ_AT C(19)",
        "COUNT N(2,0)",
    ]
    assert str(codepage).startswith("cp936")
    assert result.content[29] == 0x4D  # language driver byte: GBK (PRC)
    first, second, third = records
    assert first[0].strip() == "000000123456" and first[1].strip() == '张三, 3号楼 "东"'
    assert first[2] == pytest.approx(1234.567) and first[4] == date(2026, 11, 1)
    assert first[5] == "2026-11-02 00:30:05" and first[6] == 42
    assert second[3] == pytest.approx(-0.05)
    assert third[2] is None and third[4] is None and third[6] is None and third[3] == 0
    # The numbers on disk are the exact decimal text (the library would read them back as floats).
    assert b"1234567.89" in result.content and b"   -0.05" in result.content
    assert "张三".encode("gbk") in result.content


def test_dbf_field_names_are_short_ascii_and_unique() -> None:
    columns = [
        Column("meter_no", "表号"),
        Column("balance_after_fen", "余额", "fen"),
        Column("balance_after_tax", "税后", "fen"),
        Column("表号", "表号2"),
        Column("2nd_reading", "二次", "decimal"),
        Column("balance-after-fen", "x"),
    ]
    names = dbf_field_names(columns)
    assert names == {
        "meter_no": "METER_NO",
        "balance_after_fen": "BALANCE_AF",
        "balance_after_tax": "BALANCE__2",
        "表号": "F",
        "2nd_reading": "F2ND_READI",
        "balance-after-fen": "BALANCEAFT",
    }
    assert all(len(n) <= 10 and n.isascii() for n in names.values())


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "dbf"])
def test_empty_report_has_only_the_header(fmt: str, read_dbf: Any) -> None:
    result = export([], COLUMNS, fmt)  # type: ignore[arg-type]
    if fmt == "csv":
        assert read_csv(result.content) == [[c.label for c in COLUMNS]]
    elif fmt == "xlsx":
        sheet = read_xlsx(result.content)
        assert [[c.value for c in row] for row in sheet.iter_rows()] == [[c.label for c in COLUMNS]]
    else:
        structure, _, records = read_dbf(result.content)
        assert len(structure) == len(COLUMNS) and records == []


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (Column("a", "A", "fen"), 12.34, "expected int"),
        (Column("a", "A", "fen"), "1234", "expected int"),
        (Column("a", "A", "int"), True, "expected int"),
        (Column("a", "A", "decimal"), 1.5, "expected Decimal"),
        (Column("a", "A", "decimal"), Decimal("NaN"), "not a finite"),
        (Column("a", "A", "date"), "2026-11-01", "expected date"),
        (Column("a", "A", "date"), datetime(2026, 11, 1), "expected date"),
        (Column("a", "A", "datetime"), date(2026, 11, 1), "expected datetime"),
        (Column("a", "A", "str"), 5, "expected str"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "xlsx", "dbf"])
def test_bad_values_fail_the_export(fmt: str, column: Column, value: Any, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        export([{"a": None}, {"a": value}], [column], fmt)  # type: ignore[arg-type]


def test_bad_requests() -> None:
    with pytest.raises(ExportError, match="unknown export format"):
        export([], COLUMNS, "pdf")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="row 2: no value for column 'b'"):
        export([{"a": "x", "b": "y"}, {"a": "x"}], [Column("a", "A"), Column("b", "B")], "csv")
    with pytest.raises(ExportError, match="duplicate"):
        export([], [Column("a", "A"), Column("a", "B")], "csv")
    with pytest.raises(ExportError, match="at least one column"):
        export([], [], "csv")
    with pytest.raises(ExportError, match="unknown kind"):
        export([], [Column("a", "A", "money")], "csv")  # type: ignore[arg-type]


def test_dbf_rejects_what_it_cannot_store() -> None:
    with pytest.raises(ExportError, match="no GBK encoding"):
        export([{"a": "电表😀"}], [Column("a", "A")], "dbf")
    with pytest.raises(ExportError, match="exceeds DBF"):
        export([{"a": "表" * 128}], [Column("a", "A")], "dbf")
    with pytest.raises(ExportError, match="DBF allows"):
        export([{"a": 10**20}], [Column("a", "A", "fen")], "dbf")
    with pytest.raises(ExportError, match="decimal places"):
        export([{"a": Decimal("0.00000000001")}], [Column("a", "A", "decimal")], "dbf")


def test_unsafe_title_characters_are_replaced() -> None:
    result = export([], COLUMNS[:1], "xlsx", "a/b:c*[1]")
    assert result.filename == "a_b_c__1_.xlsx"
    assert read_xlsx(result.content).title == "a_b_c__1_"


@given(st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1))
def test_fen_to_yuan_is_exact(fen: int) -> None:
    text = fen_to_yuan(fen)
    assert Decimal(text) * 100 == fen and len(text.split(".")[1]) == 2


# Amounts up to 10^13 yuan (10^15 fen), far beyond any utility bill, stay exact in every format;
# xlsx cells are IEEE doubles, exact to 15 significant digits.
FEN = st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1)


@settings(max_examples=40, deadline=None)
@given(st.lists(FEN, max_size=20))
def test_fen_round_trips_through_every_format(amounts: list[int]) -> None:
    columns = [Column("amount_fen", "金额", "fen")]
    rows = [{"amount_fen": fen} for fen in amounts]
    csv_rows = read_csv(export(rows, columns, "csv").content)[1:]
    assert [int(Decimal(r[0]) * 100) for r in csv_rows] == amounts
    sheet = read_xlsx(export(rows, columns, "xlsx").content)
    assert [int(Decimal(repr(r[0].value)) * 100) for r in sheet.iter_rows(min_row=2)] == amounts
    # The stored DBF text itself, not the dbf library's float conversion of it.
    stored = raw_dbf_records(export(rows, columns, "dbf").content)
    assert [int(Decimal(r[1:].decode()) * 100) for r in stored] == amounts
