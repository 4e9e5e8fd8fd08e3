"""Import concentrators and meters from CSV or Excel (A1: "import and it works").

Headers may be English or the usual Chinese ones (表号/表地址, 通讯地址, 规约, 波特率, 集中器, 端口,
倍率, 户号 …). Buses are derived from the meter rows: rows naming the same concentrator and port
share a bus, and must agree on its line settings. Every bad row is collected (sheet row number,
column header as written, message) and reported together in one :class:`ImportRejected`; nothing
is returned unless the whole file validates, so a half-imported topology cannot exist.

Failover (A7): the concentrators file lists each concentrator's alternates (备用集中器), the
concentrators that can also reach its buses. A meter row may say how with the optional column
``alternate_route`` (备用通道, 备用路由, 备用路由地址): ``<concentrator id>@<endpoint>``, the endpoint
as :func:`~services.acquisition.registry.parse_endpoint` reads it (``C02@10.0.0.12:8900``,
``C02@/dev/ttyS3``), several separated by ``;`` in order of preference. They become the bus's
``alternate_routes``. The alternate concentrator must exist and be one of the primary's alternates,
and rows of one bus must agree on the routes (a blank cell agrees with any), like they must on
protocol and line settings; otherwise the row is refused naming that column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
from pydantic import ValidationError

from libs.events.base import Event
from services.acquisition.registry import (
    AlternateRoute,
    Bus,
    Concentrator,
    Meter,
    Project,
    Registry,
    diff,
    parse_endpoint,
)

_METER_COLUMNS = {
    "id": ("meter_id", "id", "电表编号", "表计编号", "编号"),
    "address": ("address", "表号", "表地址", "通讯地址", "通信地址"),
    "protocol": ("protocol", "规约", "协议", "通讯规约", "通信规约"),
    "model": ("model", "型号", "表型", "规格型号"),
    "medium": ("medium", "type", "类型", "表类型", "能源类型"),
    "concentrator": ("concentrator", "concentrator_id", "集中器", "集中器编号", "采集器", "dtu"),
    "bus": ("bus", "bus_id", "port", "端口", "总线", "通道", "端口号"),
    "baud": ("baud", "baud_rate", "波特率"),
    "parity": ("parity", "校验", "校验位"),
    "data_bits": ("data_bits", "数据位"),
    "stop_bits": ("stop_bits", "停止位"),
    "multiplier": ("multiplier", "倍率", "变比"),
    "account_id": ("account", "account_id", "户号", "用户编号"),
    "name": ("name", "名称", "房间", "位置"),
    "quantities": ("quantities", "采集项", "抄读项"),
    "schedule": ("schedule", "抄表方案", "采集方案"),
    "group": ("group", "分组"),
    "password": ("password", "密码"),
    "operator_code": ("operator_code", "operator", "操作者代码"),
    "register_digits": ("register_digits", "整数位"),
    "register_decimals": ("register_decimals", "小数位"),
    "alternate": ("alternate_route", "alternate_routes", "备用通道", "备用路由", "备用路由地址"),
}
_CONCENTRATOR_COLUMNS = {
    "id": ("concentrator_id", "id", "集中器", "集中器编号", "集中器地址"),
    "name": ("name", "名称"),
    "uplink": ("uplink", "上行通道", "ip", "ip地址", "地址"),
    "port": ("port", "端口"),
    "alternates": ("alternates", "alternate_routes", "备用集中器", "备用路由", "级联"),
}
_PROTOCOLS = {
    "dlt6452007": "dlt645-2007", "6452007": "dlt645-2007", "dlt64507": "dlt645-2007", "64507": "dlt645-2007",
    "dlt6451997": "dlt645-1997", "6451997": "dlt645-1997", "dlt64597": "dlt645-1997", "64597": "dlt645-1997",
    "modbus": "modbus-rtu", "modbusrtu": "modbus-rtu", "cjt188": "cjt188", "cjt1882004": "cjt188", "188": "cjt188",
    "mbus": "mbus", "en137573": "mbus",
}  # fmt: skip
_MEDIA = {"电": "electricity", "电表": "electricity", "水": "water", "水表": "water", "热水": "hot_water", "热水表": "hot_water",
          "气": "gas", "燃气": "gas", "燃气表": "gas", "热": "heat", "热量表": "heat"}  # fmt: skip
_PARITY = {
    "无": "N",
    "none": "N",
    "n": "N",
    "偶": "E",
    "偶校验": "E",
    "even": "E",
    "e": "E",
    "奇": "O",
    "奇校验": "O",
    "odd": "O",
    "o": "O",
}
_ADDRESS_WIDTH = {
    "dlt645-2007": 12,
    "dlt645-1997": 12,
    "cjt188": 14,
}  # Excel drops leading zeros of numeric cells
_BUS_KEYS = ("protocol", "baud", "parity", "data_bits", "stop_bits")


@dataclass(frozen=True)
class RowError:
    row: int  # sheet row number; the header is row 1
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, {self.column or '-'}: {self.message}"


class ImportRejected(ValueError):
    """The file did not validate; ``errors`` lists every bad row. Nothing was imported."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} error(s):\n" + "\n".join(map(str, errors)))


@dataclass(frozen=True)
class ImportResult:
    registry: Registry
    events: list[Event]


Rows = list[tuple[int, dict[str, str]]]


def read_table(
    source: Path | str | bytes, columns: dict[str, tuple[str, ...]]
) -> tuple[Rows, dict[str, str]]:
    """Rows of a CSV/XLSX file as ``(row number, {field: text})`` and the header used for each field."""
    if isinstance(source, bytes | bytearray) or str(source).lower().endswith(".xlsx"):
        raw = source if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
        sheet = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True).worksheets[0]
        table = [[_cell(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    else:
        text = Path(source).read_text(encoding="utf-8-sig")
        table = list(csv.reader(io.StringIO(text)))
    if not table:
        raise ImportRejected([RowError(1, "", "the file is empty")])
    aliases = {alias.lower(): key for key, names in columns.items() for alias in names}
    index: dict[str, int] = {}
    headers: dict[str, str] = {}
    for i, header in enumerate(table[0]):
        key = aliases.get(header.strip().lower().replace(" ", ""))
        if key and key not in index:
            index[key], headers[key] = i, header.strip()
    rows = [
        (n, {k: row[i].strip() for k, i in index.items() if i < len(row) and row[i].strip()})
        for n, row in enumerate(table[1:], start=2)
        if any(c.strip() for c in row)
    ]
    return rows, headers


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _protocol(text: str) -> str:
    key = "".join(ch for ch in text.lower() if ch.isalnum())
    return _PROTOCOLS.get(key, text)


def _errors(n: int, exc: ValidationError, headers: dict[str, str], fallback: str) -> list[RowError]:
    out = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else fallback
        out.append(RowError(n, headers.get(field, field), err["msg"].removeprefix("Value error, ")))
    return out


def _concentrators(rows: Rows, headers: dict[str, str], errors: list[RowError]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for n, row in rows:
        missing = [k for k in ("id", "uplink") if k not in row]
        for k in missing:
            errors.append(RowError(n, headers.get(k, k), "required"))
        if missing:
            continue
        uplink = row["uplink"] + (f":{row['port']}" if "port" in row and ":" not in row["uplink"] else "")
        if row["id"] in out:
            errors.append(RowError(n, headers["id"], f"duplicate concentrator {row['id']}"))
        alternates = tuple(
            a.strip() for a in row.get("alternates", "").replace(";", ",").split(",") if a.strip()
        )
        out[row["id"]] = {
            "id": row["id"],
            "name": row.get("name", ""),
            "uplink": parse_endpoint(uplink),
            "alternates": alternates,
            "buses": {},
            "row": n,
        }
    for c in out.values():
        for a in c["alternates"]:
            if a not in out or a == c["id"]:
                errors.append(
                    RowError(
                        c["row"],
                        headers.get("alternates", "alternates"),
                        f"unknown alternate concentrator {a}",
                    )
                )
    return out


def _meter(n: int, row: dict[str, str], headers: dict[str, str], errors: list[RowError]) -> Meter | None:
    fields: dict[str, Any] = {
        k: v for k, v in row.items() if k not in ("concentrator", "bus", "alternate", *_BUS_KEYS[1:])
    }
    fields["protocol"] = protocol = _protocol(row.get("protocol", ""))
    width = _ADDRESS_WIDTH.get(protocol)
    if width and row.get("address", "").isdigit():
        fields["address"] = row["address"].zfill(width)
    fields.setdefault("id", fields.get("address", ""))
    fields.setdefault("model", protocol)
    if "medium" in row:
        fields["medium"] = _MEDIA.get(row["medium"], row["medium"].lower())
    if "quantities" in row:
        fields["quantities"] = tuple(
            q.strip() for q in row["quantities"].replace("、", ",").replace(";", ",").split(",") if q.strip()
        )
    try:
        if "multiplier" in row:
            fields["multiplier"] = Decimal(row["multiplier"])
        return Meter.model_validate(fields)
    except ValidationError as exc:
        errors.extend(_errors(n, exc, headers, "address"))
    except ArithmeticError:
        errors.append(RowError(n, headers["multiplier"], f"not a number: {row['multiplier']!r}"))
    return None


def _bus_settings(row: dict[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {"protocol": _protocol(row.get("protocol", ""))}
    for key in ("baud", "data_bits", "stop_bits"):
        if key in row:
            settings[key] = row[key]
    if "parity" in row:
        settings["parity"] = _PARITY.get(row["parity"].lower(), row["parity"])
    return settings


def _alternate_routes(
    n: int, row: dict[str, str], found: dict[str, dict[str, Any]], column: str, errors: list[RowError]
) -> tuple[AlternateRoute, ...] | None:
    """The row's ``<concentrator>@<endpoint>;…`` routes; ``None`` (and row errors) when one is bad."""
    primary, ok = found[row["concentrator"]], True
    routes: list[AlternateRoute] = []
    for item in row["alternate"].replace("；", ";").split(";"):
        via, at, where = (part.strip() for part in item.strip().partition("@"))
        if not item.strip():
            continue
        if not (via and at and where):
            errors.append(RowError(n, column, f"expected <concentrator>@<endpoint>, got {item.strip()!r}"))
            ok = False
        elif via not in found:
            errors.append(RowError(n, column, f"unknown concentrator {via}"))
            ok = False
        elif via not in primary["alternates"]:
            errors.append(RowError(n, column, f"{via} is not an alternate concentrator of {primary['id']}"))
            ok = False
        elif any(r.concentrator_id == via for r in routes):
            errors.append(RowError(n, column, f"two routes through {via}"))
            ok = False
        else:
            routes.append(AlternateRoute(concentrator_id=via, transport=parse_endpoint(where)))
    return tuple(routes) if ok else None


def _routes_text(routes: tuple[AlternateRoute, ...]) -> str:
    return ";".join(f"{r.concentrator_id}@{r.transport}" for r in routes)


def import_topology(
    project_id: str,
    concentrators: Path | str | bytes,
    meters: Path | str | bytes,
    at: datetime,
    base: Registry | None = None,
    project_name: str = "",
) -> ImportResult:
    """Replace one project's topology from two files; the events turn ``base`` into the result."""
    base = base or Registry()
    errors: list[RowError] = []
    c_rows, c_headers = read_table(concentrators, _CONCENTRATOR_COLUMNS)
    found = _concentrators(c_rows, c_headers, errors)
    m_rows, headers = read_table(meters, _METER_COLUMNS)
    for n, row in m_rows:
        for k in ("address", "protocol", "concentrator", "bus"):
            if k not in row:
                errors.append(RowError(n, headers.get(k, k), "required"))
        if any(k not in row for k in ("address", "protocol", "concentrator", "bus")):
            continue
        meter = _meter(n, row, headers, errors)
        if row["concentrator"] not in found:
            errors.append(RowError(n, headers["concentrator"], f"unknown concentrator {row['concentrator']}"))
            continue
        buses = found[row["concentrator"]]["buses"]
        bus = buses.setdefault(
            row["bus"], {"settings": _bus_settings(row), "meters": [], "row": n, "routes": None}
        )
        if "alternate" in row:
            routes = _alternate_routes(n, row, found, headers["alternate"], errors)
            if routes is not None and bus["routes"] is None:
                bus["routes"] = routes
            elif routes is not None and routes != bus["routes"]:
                errors.append(
                    RowError(
                        n,
                        headers["alternate"],
                        f"bus {row['bus']} already has alternate routes {_routes_text(bus['routes'])},"
                        f" not {_routes_text(routes)}",
                    )
                )
        for key, value in _bus_settings(row).items():
            if bus["settings"].get(key, value) != value:
                errors.append(
                    RowError(
                        n,
                        headers.get(key, key),
                        f"bus {row['bus']} already has {key} {bus['settings'][key]}, not {value}",
                    )
                )
        if meter is not None:
            bus["meters"].append((n, meter))
    project = _build(project_id, project_name, found, headers, errors)
    if errors or project is None:
        raise ImportRejected(sorted(set(errors), key=lambda e: (e.row, e.column, e.message)))
    registry = base.with_project(project)
    return ImportResult(registry, diff(base, registry, at))


def _build(
    project_id: str,
    name: str,
    found: dict[str, dict[str, Any]],
    headers: dict[str, str],
    errors: list[RowError],
) -> Project | None:
    concentrators: list[Concentrator] = []
    meter_ids: dict[str, int] = {}
    for c in found.values():
        buses: list[Bus] = []
        for port, bus in c["buses"].items():
            seen: dict[str, int] = {}
            for n, meter in bus["meters"]:
                if meter.address.upper() in seen:
                    errors.append(
                        RowError(
                            n,
                            headers["address"],
                            f"duplicate address {meter.address} on bus {port} (row {seen[meter.address.upper()]})",
                        )
                    )
                if meter.id in meter_ids:
                    errors.append(
                        RowError(
                            n,
                            headers.get("id", headers["address"]),
                            f"duplicate meter id {meter.id} (row {meter_ids[meter.id]})",
                        )
                    )
                seen.setdefault(meter.address.upper(), n)
                meter_ids.setdefault(meter.id, n)
            try:
                bus_id = f"{c['id']}/{port}"
                endpoint = parse_endpoint(
                    port
                )  # "1"/"COM2": a serial port of the concentrator; "host:port": TCP
                buses.append(
                    Bus.model_validate(
                        {
                            "id": bus_id,
                            "transport": endpoint,
                            "alternate_routes": bus["routes"] or (),
                            **bus["settings"],
                            "meters": tuple(m for _, m in bus["meters"]),
                        }
                    )
                )
            except ValidationError as exc:
                errors.extend(
                    e
                    for e in _errors(bus["row"], exc, headers, "bus")
                    if "duplicate" not in e.message and "speaks" not in e.message
                )
        concentrators.append(
            Concentrator(
                id=c["id"], name=c["name"], uplink=c["uplink"], alternates=c["alternates"], buses=tuple(buses)
            )
        )
    if errors:
        return None
    try:
        return Project(id=project_id, name=name, concentrators=tuple(concentrators))
    except ValidationError as exc:
        errors.extend(_errors(0, exc, {}, "project"))
        return None
