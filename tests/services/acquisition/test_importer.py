from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events.acquisition import Medium, MeterRegistered, MeterUpdated
from services.acquisition.importer import ImportRejected, RowError, import_topology
from services.acquisition.registry import AlternateRoute, Registry, SerialEndpoint, TcpEndpoint

DATA = Path(__file__).parent / "data"
AT = datetime(2024, 3, 1, tzinfo=UTC)
CONCENTRATORS = DATA / "concentrators.csv"
METERS = DATA / "meters.csv"


def xlsx(rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@pytest.fixture
def meters_xlsx(tmp_path: Path) -> Path:
    """The Excel flavour of meters.csv: numeric cells, so leading zeros of addresses are lost."""
    path = tmp_path / "meters.xlsx"
    path.write_bytes(xlsx([
        ["通讯地址", "通讯规约", "表型", "表类型", "采集器", "总线", "波特率", "校验", "倍率", "用户编号", "备用路由地址"],
        [101, "645-07", "DDSY666", "电", "C01", 1, 2400, "E", 1, "A-101", "C02@10.0.0.12:8900"],
        [102, "645-07", "DDSY666", "电", "C01", 1, 2400, "E", 1.0, None, "C02@10.0.0.12:8900"],
        [1, "modbus", "sdm630", "电", "C02", "10.0.0.50:4001", 9600, "N", 40, "B-1", None],
    ]))  # fmt: skip
    return path


def test_chinese_csv_imports_a_whole_site():
    result = import_topology("p1", CONCENTRATORS, METERS, AT)
    r = result.registry
    assert r.concentrator("C01").uplink == TcpEndpoint(host="10.0.0.11", port=8899)
    assert r.concentrator("C01").alternates == ("C02",)
    assert r.concentrator("C03").uplink == SerialEndpoint(device="/dev/ttyUSB0")
    assert [b.id for b in r.buses_of("C01")] == ["C01/1", "C01/2"]
    assert r.bus("C02/1").baud == 9600 and r.bus("C02/1").parity == "N"
    water = r.meter("78330011223344")
    assert (
        water.protocol == "cjt188"
        and water.medium == Medium.WATER
        and water.quantities == ("volume_m3", "valve")
    )
    assert r.meter("000000000201").multiplier == 30 and r.meter("000000000101").account_id == "A-101"
    assert len([e for e in result.events if isinstance(e, MeterRegistered)]) == 6
    # 备用通道: how the alternate concentrator reaches each bus (a blank cell agrees with the bus)
    assert r.bus("C01/1").alternate_routes == (
        AlternateRoute(concentrator_id="C02", transport=TcpEndpoint(host="10.0.0.12", port=8900)),
    )
    assert r.bus("C01/2").alternate_routes == (
        AlternateRoute(concentrator_id="C02", transport=SerialEndpoint(device="/dev/ttyS3")),
    )
    assert r.bus("C02/1").alternate_routes[0].transport == TcpEndpoint(host="10.0.0.11", port=8901)
    assert r.bus("C03/1").alternate_routes == ()


def test_excel_with_numeric_cells(meters_xlsx: Path):
    r = import_topology("p1", CONCENTRATORS, meters_xlsx, AT).registry
    assert [m.address for m in r.meters_of("C01/1")] == ["000000000101", "000000000102"]
    assert r.meter("000000000102").multiplier == 1 and r.meter("000000000102").account_id is None
    assert r.bus("C02/10.0.0.50:4001").transport == TcpEndpoint(host="10.0.0.50", port=4001)
    assert r.meter("1").model == "sdm630" and r.meter("1").multiplier == 40
    assert r.bus("C01/1").alternate_routes == (
        AlternateRoute(concentrator_id="C02", transport=TcpEndpoint(host="10.0.0.12", port=8900)),
    )
    assert r.bus("C02/10.0.0.50:4001").alternate_routes == ()


def test_several_alternate_routes_in_order(tmp_path: Path):
    conc = tmp_path / "c.csv"
    conc.write_text("id,uplink,alternates\nC01,10.0.0.1:1,C02;C03\nC02,10.0.0.2:1,\nC03,COM4,\n")
    meters = tmp_path / "m.csv"
    meters.write_text(
        "address,protocol,concentrator,port,alternate_route\n"
        "000000000001,dlt645-2007,C01,1, C03@COM7 ; C02@10.0.0.2:8901 \n"
    )
    r = import_topology("p1", conc, meters, AT).registry
    assert r.bus("C01/1").alternate_routes == (
        AlternateRoute(concentrator_id="C03", transport=SerialEndpoint(device="COM7")),
        AlternateRoute(concentrator_id="C02", transport=TcpEndpoint(host="10.0.0.2", port=8901)),
    )


def test_bad_alternate_routes_are_refused_by_row_and_column(tmp_path: Path):
    meters = tmp_path / "m.csv"
    meters.write_text(
        "表地址,规约,集中器,端口,备用通道\n"
        "000000000001,dlt645-2007,C01,1,C02@10.0.0.12:8900\n"  # 2: fine
        "000000000002,dlt645-2007,C01,1,C02@10.0.0.12:8901\n"  # 3: disagrees with row 2
        "000000000003,dlt645-2007,C01,2,C02\n"  # 4: no endpoint
        "000000000004,dlt645-2007,C01,3,C09@10.0.0.9:1\n"  # 5: no such concentrator
        "000000000005,cjt188,C03,1,C01@10.0.0.11:1\n"  # 6: C03 has no alternates
        "000000000006,dlt645-2007,C01,4,C01@10.0.0.11:1\n"  # 7: itself
        "000000000007,dlt645-2007,C01,5,C02@10.0.0.12:1;C02@/dev/ttyS1\n",  # 8: C02 twice
        encoding="utf-8",
    )
    base = import_topology("p1", CONCENTRATORS, METERS, AT).registry
    with pytest.raises(ImportRejected) as caught:
        import_topology("p1", CONCENTRATORS, meters, AT, base=base)
    assert caught.value.errors == [
        RowError(
            3, "备用通道", "bus 1 already has alternate routes C02@10.0.0.12:8900, not C02@10.0.0.12:8901"
        ),
        RowError(4, "备用通道", "expected <concentrator>@<endpoint>, got 'C02'"),
        RowError(5, "备用通道", "unknown concentrator C09"),
        RowError(6, "备用通道", "C01 is not an alternate concentrator of C03"),
        RowError(7, "备用通道", "C01 is not an alternate concentrator of C01"),
        RowError(8, "备用通道", "two routes through C02"),
    ]
    assert "row 5, 备用通道: unknown concentrator C09" in str(caught.value)


def test_every_bad_row_is_reported_and_nothing_imported():
    base = import_topology("p1", CONCENTRATORS, METERS, AT).registry
    with pytest.raises(ImportRejected) as caught:
        import_topology("p1", CONCENTRATORS, DATA / "meters_bad.csv", AT, base=base)
    assert [(e.row, e.column) for e in caught.value.errors] == [
        (3, "address"), (4, "address"), (5, "concentrator"), (6, "protocol"), (7, "baud"), (8, "model"),
    ]  # fmt: skip
    assert "row 5, concentrator: unknown concentrator C09" in str(caught.value)
    assert base == import_topology("p1", CONCENTRATORS, METERS, AT).registry


def test_unknown_alternate_and_missing_columns(tmp_path: Path):
    conc = tmp_path / "c.csv"
    conc.write_text("id,uplink,alternates\nC01,10.0.0.1:1,C07\n", encoding="utf-8")
    meters = tmp_path / "m.csv"
    meters.write_text("address,protocol,concentrator\n000000000001,dlt645-2007,C01\n", encoding="utf-8")
    with pytest.raises(ImportRejected) as caught:
        import_topology("p1", conc, meters, AT)
    assert caught.value.errors == [
        RowError(2, "alternates", "unknown alternate concentrator C07"),
        RowError(2, "bus", "required"),
    ]


def test_reimport_emits_only_the_difference(tmp_path: Path):
    first = import_topology("p1", CONCENTRATORS, METERS, AT)
    changed = tmp_path / "m.csv"
    lines = METERS.read_text(encoding="utf-8").splitlines()
    changed.write_text(
        "\n".join([lines[0], lines[1].replace(",1,A-101,", ",2,A-101,"), *lines[2:-1]]), encoding="utf-8"
    )
    second = import_topology("p1", CONCENTRATORS, changed, AT, base=first.registry)
    assert {(e.meter_id, tuple(e.changes.items())) for e in second.events if isinstance(e, MeterUpdated)} == {
        ("000000000101", (("multiplier", "2"),)),
        ("78330011223344", (("status", "removed"),)),
    }
    replayed = first.registry
    for e in second.events:
        replayed = replayed.apply(e)
    # buses and concentrators have no events yet: compare the meters and where they sit
    assert sorted(replayed.all_meters(), key=str) == sorted(second.registry.all_meters(), key=str)


_cell = st.one_of(
    st.sampled_from(["", "C01", "C09", "1", "2", "x", "9600", "2400", "dlt645-2007", "modbus"]),
    st.text(alphabet="0123456789ABC 表-", max_size=6),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(_cell, min_size=5, max_size=5), max_size=6))
def test_import_is_all_or_nothing(tmp_path_factory, rows):
    meters = tmp_path_factory.mktemp("imp") / "m.xlsx"
    meters.write_bytes(xlsx([["表地址", "规约", "集中器", "端口", "波特率"], *rows]))
    base = Registry()
    try:
        result = import_topology("p1", CONCENTRATORS, meters, AT, base=base)
    except ImportRejected as exc:
        errors = exc.errors
        assert errors and all(e.row >= 2 for e in errors)
        return
    imported = {m.meter.id for m in result.registry.all_meters()}
    assert len(imported) == len([r for r in rows if any(str(c).strip() for c in r)])
    assert {e.meter_id for e in result.events if isinstance(e, MeterRegistered)} == imported
