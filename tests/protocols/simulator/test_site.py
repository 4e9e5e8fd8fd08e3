"""Site config, load profile and meter state, without sockets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.profile import LoadProfile
from libs.protocols.simulator.site import (
    DEFAULT_BANDS,
    DEFAULT_SHAPE,
    MeterConfig,
    MeterModel,
    SiteConfig,
    default_site,
    load_site,
)
from libs.protocols.simulator.state import MeterState

PROFILE = LoadProfile(DEFAULT_SHAPE, DEFAULT_BANDS, 8)


def test_default_site_shape() -> None:
    site = default_site()
    buses = [bus for conc in site.concentrators for bus in conc.buses]
    assert len(site.concentrators) == 2
    assert len(buses) == 4
    assert all(len(bus.meters) == 8 for bus in buses)
    assert {bus.protocol for bus in buses} == {"dlt645-2007", "modbus-rtu", "cjt188"}
    assert {bus.link.label() for bus in buses} == {"2400 8E1", "9600 8N1"}
    assert any(site.model(m.model).reversed_di for bus in buses for m in bus.meters)


def test_load_site_json_and_toml(tmp_path) -> None:
    data = default_site().model_dump(mode="json")
    (tmp_path / "site.json").write_text(json.dumps(data))
    assert load_site(tmp_path / "site.json") == default_site()
    (tmp_path / "site.toml").write_text(
        'name = "mini"\n[models.slow]\nprotocol = "cjt188"\nkind = "gas"\nresponse_delay_ms = [200, 500]\n'
        '[[concentrators]]\nname = "dtu1"\n[[concentrators.buses]]\nname = "b1"\nprotocol = "cjt188"\n'
        '[[concentrators.buses.meters]]\naddress = "00000000000001"\nmodel = "slow"\n'
    )
    site = load_site(tmp_path / "site.toml")
    assert site.model("slow").kind == "gas"
    assert site.concentrators[0].buses[0].link.label() == "2400 8E1"


@pytest.mark.parametrize("change", ["unknown model", "wrong protocol", "duplicate address"])
def test_site_validation(change: str) -> None:
    data = default_site().model_dump(mode="json")
    meters = data["concentrators"][0]["buses"][0]["meters"]
    if change == "unknown model":
        meters[0]["model"] = "nope"
    elif change == "wrong protocol":
        meters[0]["model"] = "lxsy-water"
    else:
        meters[1]["address"] = meters[0]["address"]
    with pytest.raises(ValidationError):
        SiteConfig.model_validate(data)


def test_profile_pieces_integrate_the_daily_shape_per_band() -> None:
    start = datetime(2026, 1, 1, 16, 0, tzinfo=UTC)  # local midnight
    pieces = list(PROFILE.pieces(start, start + timedelta(days=1), peak=1.0))
    assert len(pieces) == 24
    daily = sum(p.amount for p in pieces)
    # trapezoids over the 24 hourly points of a closed daily curve = the mean of the points * 24
    assert daily == pytest.approx(sum(DEFAULT_SHAPE))
    assert {p.rate for p in pieces} == {"sharp", "peak", "flat", "valley"}
    assert pieces[19].rate == "sharp"
    assert pieces[3].rate == "valley"


def test_state_freezes_at_local_midnight_and_drifts() -> None:
    clock = ManualClock(datetime(2026, 1, 31, 8, 0, tzinfo=UTC))  # 16:00 local
    model = MeterModel(protocol="dlt645-2007", drift_ppm=50)
    meter = MeterState.from_config(MeterConfig(address="000000000001", model="x"), model, PROFILE, clock)
    clock.advance(hours=24)
    meter.advance()
    assert list(meter.frozen_daily) == [datetime(2026, 1, 31).date()]
    assert list(meter.frozen_monthly) == [(2026, 1)]  # February 1st settles January
    assert 0 < meter.frozen_daily[datetime(2026, 1, 31).date()].total < meter.total
    assert meter.meter_time() - PROFILE.local(clock.now()) == timedelta(seconds=4.32)


def test_manual_clock_only_moves_forward() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
