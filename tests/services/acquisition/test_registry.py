from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from libs.events.acquisition import MeterRegistered, MeterReplaced, MeterUpdated
from services.acquisition.registry import (
    Bus,
    Concentrator,
    Meter,
    Project,
    Registry,
    SerialEndpoint,
    TcpEndpoint,
    diff,
    parse_endpoint,
    to_events,
)

AT = datetime(2024, 3, 1, tzinfo=UTC)


def meter(n: int, **kw) -> Meter:
    return Meter(
        **{"id": f"m{n}", "address": f"{n:012d}", "protocol": "dlt645-2007", "model": "DDSY666", **kw}
    )


def registry(*meters: Meter, bus2: tuple[Meter, ...] = ()) -> Registry:
    b1 = Bus(id="b1", transport=SerialEndpoint(device="/dev/ttyS1"), protocol="dlt645-2007", meters=meters)
    b2 = Bus(id="b2", transport=TcpEndpoint(host="10.0.0.9", port=4001), protocol="dlt645-2007", meters=bus2)
    c1 = Concentrator(id="c1", uplink=parse_endpoint("10.0.0.1:8899"), alternates=("c2",), buses=(b1, b2))
    c2 = Concentrator(id="c2", uplink=parse_endpoint("COM3"), alternates=("c1",))
    return Registry(projects=(Project(id="p1", concentrators=(c1, c2)),))


def test_lookups():
    r = registry(meter(1), meter(2), bus2=(meter(3),))
    assert [m.id for m in r.meters_of("b1")] == ["m1", "m2"]
    assert [b.id for b in r.buses_of("c1")] == ["b1", "b2"]
    assert r.locate("m3").bus_id == "b2" and r.locate("m3").concentrator_id == "c1"
    assert r.meter_at("b1", "000000000002") == meter(2)
    assert r.meter_at("b1", "000000000003") is None
    assert parse_endpoint("/dev/ttyUSB0") == SerialEndpoint(device="/dev/ttyUSB0")


def test_secrets_stay_out_of_repr_and_events():
    m = meter(1, password="02123456", operator_code="00000001")
    assert "02123456" not in repr(m) and "02123456" not in str(m)
    events = to_events(registry(m), "p1", AT)
    assert all("02123456" not in e.model_dump_json() for e in events)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: registry(meter(1), meter(2, address="000000000001")), "duplicate meter address"),
        (lambda: meter(1, protocol="iec62056"), "unknown protocol"),
        (
            lambda: Bus(id="b", transport=SerialEndpoint(device="1"), protocol="cjt188", meters=(meter(1),)),
            "speaks dlt645-2007",
        ),
        (
            lambda: Bus(id="b", transport=SerialEndpoint(device="1"), protocol="dlt645-2007", baud=2500),
            "not a standard rate",
        ),
        (
            lambda: Project(
                id="p",
                concentrators=(Concentrator(id="c", uplink=SerialEndpoint(device="1"), alternates=("x",)),),
            ),
            "unknown alternate concentrator x",
        ),
        (lambda: meter(1, address="12345"), "12 decimal digits"),
        (lambda: Meter(id="m", address="300", protocol="modbus-rtu", model="sdm630"), "1-247"),
        (lambda: Meter(id="m", address="1", protocol="modbus-rtu", model="nope"), "unknown modbus model"),
        (lambda: meter(1, medium="water"), "measure electricity"),
        (lambda: meter(1, quantities=("watts",)), "unknown quantities watts"),
        (lambda: registry(meter(1), bus2=(meter(1, address="000000000009"),)), "duplicate meter id m1"),
    ],
)
def test_validation_errors_are_clear(build, message):
    with pytest.raises(ValidationError, match=message):
        build()


def test_events_rebuild_the_registry_and_keep_secrets():
    r = registry(
        meter(1, password="02123456", quantities=("active_import_kwh", "power_kw"), account_id="A-1"),
        meter(2),
    )
    events = to_events(r, "p1", AT)
    assert [type(e) for e in events] == [MeterRegistered, MeterUpdated] * 2
    assert events == to_events(r, "p1", AT)  # ids derive from content: a replay dedupes
    rebuilt = r.without_meters()
    for e in events:
        rebuilt = rebuilt.apply(e)
    assert rebuilt.meter("m1").password is None  # secrets never travel on the log
    kept = r
    for e in events:
        kept = kept.apply(e)
    assert kept == r


def test_diff_registers_updates_moves_and_removes():
    old = registry(meter(1), meter(2), bus2=(meter(3),))
    new = registry(meter(1, multiplier=30), meter(4), bus2=(meter(2, address="000000000022"),))
    events = diff(old, new, AT)
    removed = [e for e in events if isinstance(e, MeterUpdated) and e.changes == {"status": "removed"}]
    assert [e.meter_id for e in removed] == ["m3"]
    changes = {e.meter_id: e.changes for e in events if isinstance(e, MeterUpdated) and e not in removed}
    assert changes["m1"] == {"multiplier": "30"}
    assert changes["m2"] == {"address": "000000000022", "concentrator_id": "c1", "bus_id": "b2"}
    assert [e.meter_id for e in events if isinstance(e, MeterRegistered)] == ["m4"]
    for e in events:
        old = old.apply(e)
    assert old == new
    assert diff(new, new, AT) == []


def test_meter_replaced_changes_the_address():
    r = registry(meter(1))
    e = MeterReplaced(project_id="p1", subject_id="m1", meter_id="m1", old_address="000000000001", new_address="000000000077",
                      final_registers={}, initial_registers={}, replaced_at=AT)  # fmt: skip
    assert r.apply(e).meter("m1").address == "000000000077"


_meters = st.dictionaries(
    st.integers(1, 40),
    st.tuples(
        st.sampled_from(["b1", "b2"]),
        st.sampled_from(["1", "30", "2.5"]),
        st.sampled_from(["default", "fast"]),
    ),
    max_size=12,
)


def _build(spec: dict) -> Registry:
    on = {"b1": [], "b2": []}
    for n, (bus, mult, sched) in sorted(spec.items()):
        on[bus].append(meter(n, multiplier=mult, schedule=sched))
    return registry(*on["b1"], bus2=tuple(on["b2"]))


@settings(max_examples=60, deadline=None)
@given(_meters, _meters)
def test_applying_a_diff_gives_the_new_registry(a, b):
    old, new = _build(a), _build(b)
    for e in diff(old, new, AT):
        old = old.apply(e)
    assert {m.meter.id: m for m in old.all_meters()} == {m.meter.id: m for m in new.all_meters()}
