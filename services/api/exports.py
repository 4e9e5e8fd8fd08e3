"""Report exports as CSV, Excel (xlsx) and DBF (MISSION.md E4).

A report is rows (mappings) plus :class:`Column` definitions; :func:`export` renders them into
one of three formats and returns the bytes with their media type and file name, ready for a
route to send. Every value is checked against its column's kind first, so a bad value fails the
whole export with :class:`ExportError` instead of writing a half-right file.

Kinds and how each format stores them:

========  =======================  ===============================  ==============================
kind      Python value             CSV / xlsx                       DBF (dBase III, cp936)
========  =======================  ===============================  ==============================
str       ``str``                  text                             ``C(n)``, n = widest GBK value
int       ``int``                  integer                          ``N(n,0)``
decimal   ``Decimal``/``int``      exact text / number              ``N(n,d)``, d = most decimals
date      ``date``                 ``YYYY-MM-DD`` / date cell       ``D``
datetime  ``datetime``             ``YYYY-MM-DD HH:MM:SS`` / cell   ``C(19)`` (dBase III has none)
fen       ``int`` (money in fen)   yuan ``12.34`` / number ``0.00``  ``N(n,2)``
========  =======================  ===============================  ==============================

``None`` is an empty cell in every format. Aware datetimes are shown in the sites' local time
(``tz``, Asia/Shanghai by default); naive ones are written as given. Money never passes through
a float here: yuan text comes from integer division of the fen, xlsx cells get a ``Decimal``
and DBF numerics are formatted from ``Decimal`` (see :class:`_ExactDb3Table`). Excel itself
stores numbers as doubles, which hold any amount below 10^13 yuan exactly to the fen.

CSV text cells that start with ``= + - @`` or a tab/CR get a leading ``'`` (OWASP "CSV
injection"), because the file is meant to be opened in Excel and operators type meter names.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import dbf
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

Kind = Literal["str", "int", "decimal", "date", "datetime", "fen"]
Format = Literal["csv", "xlsx", "dbf"]
CHINA_TZ = ZoneInfo("Asia/Shanghai")
DBF_CODEPAGE = "cp936"

_MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "dbf": "application/x-dbf",
}
_XLSX_FORMATS = {
    "int": "0",
    "fen": "0.00",
    "date": "yyyy-mm-dd",
    "datetime": "yyyy-mm-dd hh:mm:ss",
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TITLE_UNSAFE = re.compile(r'[\\/:*?"<>|\[\]\x00-\x1f]')
_DBF_MAX_CHAR = 254
_DBF_MAX_NUMERIC = 20  # widest N field dBase III readers accept


class ExportError(ValueError):
    """The export cannot be produced: unknown format, bad value for a column kind, bad columns."""


@dataclass(frozen=True)
class Column:
    """One report column: ``name`` keys each row, ``label`` is the header (Chinese is fine)."""

    name: str
    label: str
    kind: Kind = "str"


@dataclass(frozen=True)
class Export:
    """A rendered report: the file bytes, their media type and a file name ``<title>.<fmt>``."""

    content: bytes
    media_type: str
    filename: str


def fen_to_yuan(fen: int) -> str:
    """Integer fen as a yuan string with exactly two decimals: ``1234 -> "12.34"``, ``-5 -> "-0.05"``."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan}.{cents:02d}"


def export(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    fmt: Format,
    title: str = "report",
    *,
    tz: tzinfo = CHINA_TZ,
) -> Export:
    """Render ``rows`` with ``columns`` as ``fmt`` ("csv", "xlsx" or "dbf").

    CSV and xlsx stream the rows (xlsx uses openpyxl's write-only mode); DBF holds them in
    memory because its field widths come from the widest value. Raises :class:`ExportError`.
    """
    if fmt not in _MEDIA_TYPES:
        raise ExportError(f"unknown export format {fmt!r}; expected csv, xlsx or dbf")
    _check_columns(columns)
    safe_title = _TITLE_UNSAFE.sub("_", title).strip() or "report"
    values = (_row_values(index, row, columns, tz) for index, row in enumerate(rows, start=1))
    if fmt == "csv":
        content = _csv(values, columns)
    elif fmt == "xlsx":
        content = _xlsx(values, columns, safe_title)
    else:
        content = _dbf(list(values), columns)
    return Export(content, _MEDIA_TYPES[fmt], f"{safe_title}.{fmt}")


def _check_columns(columns: Sequence[Column]) -> None:
    if not columns:
        raise ExportError("an export needs at least one column")
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ExportError(f"duplicate column names in {names}")
    for column in columns:
        if column.kind not in ("str", "int", "decimal", "date", "datetime", "fen"):
            raise ExportError(f"column {column.name!r}: unknown kind {column.kind!r}")


def _row_values(index: int, row: Mapping[str, Any], columns: Sequence[Column], tz: tzinfo) -> list[Any]:
    values = []
    for column in columns:
        if column.name not in row:
            raise ExportError(f"row {index}: no value for column {column.name!r}")
        try:
            values.append(_coerce(row[column.name], column.kind, tz))
        except (TypeError, ValueError, InvalidOperation) as exc:
            raise ExportError(f"row {index}, column {column.name!r} ({column.kind}): {exc}") from None
    return values


def _coerce(value: Any, kind: Kind, tz: tzinfo) -> Any:
    """The value checked for its kind; never a float (money and quantities stay exact)."""
    if value is None:
        return None
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")
        return value
    if kind in ("int", "fen"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected int, got {type(value).__name__}")
        return value
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
            raise TypeError(f"expected Decimal or int, got {type(value).__name__}")
        number = Decimal(value)
        if not number.is_finite():
            raise ValueError(f"{number} is not a finite number")
        return number
    if kind == "datetime":
        if not isinstance(value, datetime):
            raise TypeError(f"expected datetime, got {type(value).__name__}")
        return value.astimezone(tz).replace(tzinfo=None) if value.tzinfo is not None else value
    # date: a datetime is a date subclass, but silently dropping its time would hide a bug
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(f"expected date, got {type(value).__name__}")
    return value


def _text(value: Any, kind: Kind) -> str:
    if value is None:
        return ""
    if kind == "fen":
        return fen_to_yuan(value)
    if kind == "decimal":
        return format(value, "f")
    if kind == "datetime":
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    if kind == "date":
        return str(value.isoformat())
    return str(value)


def _csv(values: Iterable[list[Any]], columns: Sequence[Column]) -> bytes:
    """RFC 4180 (CRLF, minimal quoting) in UTF-8 with a BOM so that Excel picks the encoding."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.label for c in columns])
    for row in values:
        cells = []
        for column, value in zip(columns, row, strict=True):
            text = _text(value, column.kind)
            if column.kind == "str" and text.startswith(_FORMULA_START):
                text = "'" + text
            cells.append(text)
        writer.writerow(cells)
    return buffer.getvalue().encode("utf-8-sig")


def _xlsx(values: Iterable[list[Any]], columns: Sequence[Column], title: str) -> bytes:
    """One sheet in write-only mode: bold frozen header, typed number/date cells."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title[:31])
    sheet.freeze_panes = "A2"
    for letter_index, column in enumerate(columns, start=1):
        width = max(10, 2 * len(column.label) + 2)
        sheet.column_dimensions[_column_letter(letter_index)].width = width
    bold = Font(bold=True)
    header = []
    for column in columns:
        cell = WriteOnlyCell(sheet, value=column.label)
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    try:
        for row in values:
            cells = []
            for column, value in zip(columns, row, strict=True):
                if column.kind == "fen" and value is not None:
                    value = Decimal(value).scaleb(-2)
                cell = WriteOnlyCell(sheet, value=value)
                if column.kind == "str" and value is not None:
                    cell.data_type = "s"  # openpyxl would store "=…" as a live formula
                if column.kind in _XLSX_FORMATS:
                    cell.number_format = _XLSX_FORMATS[column.kind]
                cells.append(cell)
            sheet.append(cells)
    except BaseException:
        # A bad row mid-stream: saving is openpyxl's only public way to close the sheet's
        # row writer and delete its temp file; the bytes are thrown away.
        with contextlib.suppress(Exception):
            workbook.save(io.BytesIO())
        raise
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _column_letter(index: int) -> str:
    letters = ""
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def dbf_field_names(columns: Sequence[Column]) -> dict[str, str]:
    """The DBF field name of each column: ``name`` upper-cased, ASCII ``[A-Z0-9_]`` only, ≤10 chars.

    A name that starts with a digit or underscore gets an ``F`` in front; an empty result
    becomes ``F``; clashes after truncation get ``_2``, ``_3`` … (truncated further to fit), in
    column order. E.g. ``meter_no -> METER_NO``, ``amount_fen -> AMOUNT_FEN``,
    ``balance_after_fen -> BALANCE_AF``, ``balance_after_tax -> BALANCE__2``, ``表号 -> F``.
    """
    used: set[str] = set()
    mapping: dict[str, str] = {}
    for column in columns:
        base = re.sub(r"[^A-Z0-9_]", "", column.name.upper())
        if not base or not base[0].isalpha():
            base = "F" + base
        candidate = base[:10]
        suffix = 2
        while candidate in used:
            tail = f"_{suffix}"
            candidate = base[: 10 - len(tail)] + tail
            suffix += 1
        used.add(candidate)
        mapping[column.name] = candidate
    return mapping


def _update_numeric_exact(value: Any, fielddef: Any, *_: Any) -> bytes:
    """dbf's N-field writer without its float(): format the Decimal/int as fixed-point ASCII."""
    width, decimals = fielddef[dbf.tables.LENGTH], fielddef[dbf.tables.DECIMALS]
    if value is None:
        return b" " * width
    text = format(Decimal(value), f">{width}.{decimals}f")
    if len(text) > width:
        raise dbf.DataOverflowError(f"{value} does not fit N({width},{decimals})")
    return text.encode("ascii")


def _exact_field_types() -> dict[Any, dict[str, Any]]:
    types: dict[Any, dict[str, Any]] = dbf.Db3Table._field_types
    types[dbf.tables.NUMERIC] = {**types[dbf.tables.NUMERIC], "Update": _update_numeric_exact}
    return types


class _ExactDb3Table(dbf.Db3Table):
    """A dBase III table whose numeric fields are written from Decimal, never via float."""

    _field_types = dbf.tables.MutableDefault(_exact_field_types)

    def __new__(cls, *_: Any, **__: Any) -> _ExactDb3Table:
        # dbf.Table.__new__ picks the class from a registry by type name; we know ours.
        return object.__new__(cls)


def _dbf(rows: list[list[Any]], columns: Sequence[Column]) -> bytes:
    """A dBase III table with the GBK (cp936, language driver 0x4D) code page."""
    names = dbf_field_names(columns)
    specs = []
    for position, column in enumerate(columns):
        specs.append(f"{names[column.name]} {_dbf_type(column, [row[position] for row in rows])}")
    with tempfile.TemporaryDirectory(prefix="meterflow-dbf-") as folder:
        path = Path(folder) / "report.dbf"
        table = _ExactDb3Table(str(path), field_specs="; ".join(specs), codepage=DBF_CODEPAGE)
        try:
            table.open(dbf.READ_WRITE)
            for row in rows:
                record = {}
                for column, value in zip(columns, row, strict=True):
                    if column.kind == "fen" and value is not None:
                        value = Decimal(value).scaleb(-2)
                    elif column.kind == "datetime" and value is not None:
                        value = _text(value, "datetime")
                    record[names[column.name]] = value
                table.append(record)
        except dbf.DbfError as exc:
            raise ExportError(f"DBF export failed: {exc}") from None
        finally:
            table.close()
        return path.read_bytes()


def _dbf_type(column: Column, values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if column.kind == "str":
        try:
            width = max((len(v.encode(DBF_CODEPAGE)) for v in present), default=1)
        except UnicodeEncodeError as exc:
            raise ExportError(f"column {column.name!r}: {exc.object!r} has no GBK encoding") from None
        if width > _DBF_MAX_CHAR:
            raise ExportError(f"column {column.name!r}: text of {width} bytes exceeds DBF's {_DBF_MAX_CHAR}")
        return f"C({max(width, 1)})"
    if column.kind == "date":
        return "D"
    if column.kind == "datetime":
        return "C(19)"
    decimals = {"int": 0, "fen": 2}.get(column.kind)
    if decimals is None:  # decimal: as many places as the most precise value, capped
        decimals = max([0, *(-int(v.as_tuple().exponent) for v in present)])
        if decimals > 10:
            raise ExportError(
                f"column {column.name!r}: {decimals} decimal places; DBF export keeps at most 10"
            )
    scale = Decimal(1).scaleb(-decimals)
    texts = [
        format((Decimal(v).scaleb(-2) if column.kind == "fen" else Decimal(v)).quantize(scale), "f")
        for v in present
    ]
    width = max([len(t) for t in texts] + [decimals + 2 if decimals else 1])
    if width > _DBF_MAX_NUMERIC:
        raise ExportError(
            f"column {column.name!r}: a value needs {width} digits, DBF allows {_DBF_MAX_NUMERIC}"
        )
    return f"N({width},{decimals})"
